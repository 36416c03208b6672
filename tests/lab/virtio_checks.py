"""virtnet-poll-monitor and virtio-rx-path-monitor inside the lab guest (runs INSIDE the guest): the outer QEMU gives
it two virtio-net NICs joined by a hub and nothing else (runner.VIRTIO_HUB_NICS); raw
frames sent on one arrive on the other, whose NAPI weight is tiny so a burst outlasts it.
Ground truth: the receiving NIC's rx_packets and its queue's /proc/interrupts line, and for
the RX path the datagrams a UDP socket on the receiving NIC got; the checks below assert the
probes against it and the run exits 1 when one fails.

    python3 -m tests.lab.runner --virtio-nics 'python3 -m tests.lab.virtio_checks /lab/virtio.json'

In CI it runs in vm_checks.py's boot; tests/lab/test_lab_virtio.py asserts CHECKS on it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from tests.lab import topology as T
from tests.lab.expect import run_checks
from tests.lab.probe_worker import ProbeWorker
from tests.lab.runner import VIRTIO_HUB_NICS

NAPI_WEIGHT = 4  # virtio_net's napi_weight: the poll budget (default 64)
ETHERTYPE = 0x88B5  # IEEE local experimental: no protocol takes it, the frames end at the NIC
BURST, TRICKLE, TRICKLE_GAP_S = 400, 20, 0.05
# The RX path phase: UDP from a made-up peer to an address on the receiving NIC (rp_filter off).
RX_IP, PEER_IP, PORT, OTHER_PORT, DATAGRAMS, OTHERS = "10.231.7.2", "10.231.7.1", 40123, 40124, 50, 10
STAGES = ("IRQ", "GRO", "NETIF_RECEIVE", "IP", "L4")
(TX, TX_MAC), (RX, RX_MAC) = VIRTIO_HUB_NICS


def _by_mac(mac: str) -> str | None:
    for dev in os.listdir("/sys/class/net"):
        if Path(f"/sys/class/net/{dev}/address").read_text().strip() == mac:
            return dev
    return None


def setup() -> None:
    """Load virtio_net with the tiny weight, name the two NICs, bring them up (no addresses)."""
    T.sh("modprobe", "virtio_net", f"napi_weight={NAPI_WEIGHT}")
    for name, mac in VIRTIO_HUB_NICS:
        T.wait_for(lambda: _by_mac(mac) is not None, True, timeout=10)
        dev = _by_mac(mac)
        if not dev:
            raise RuntimeError(f"no virtio-net NIC with MAC {mac}")
        if dev != name:
            T.sh("ip", "link", "set", dev, "name", name)
        T.sh("sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1")
        T.sh("ip", "link", "set", name, "up")


def start_worker() -> tuple[ProbeWorker, ProbeWorker]:
    """Both guest probes, compiling while the caller goes on."""
    return (ProbeWorker("virtnet-poll-monitor", device=RX),
            ProbeWorker("virtio-rx-path-monitor", device=RX, dst_port=str(PORT), l4_protocol="udp",
                        latency_threshold="0", interval="0.1"))


def rx_packets() -> int:
    return int(Path(f"/sys/class/net/{RX}/statistics/rx_packets").read_text())


def rx_interrupts() -> int:
    """The receiving queue's MSI-X vector, summed over CPUs (/proc/interrupts)."""
    vdev = os.path.basename(os.readlink(f"/sys/class/net/{RX}/device"))
    for line in Path("/proc/interrupts").read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] == f"{vdev}-input.0":
            return sum(int(x) for x in parts[1:] if x.isdigit())
    raise RuntimeError(f"no {vdev}-input.0 line in /proc/interrupts")


def send_frames(count: int, gap_s: float) -> None:
    dst = bytes.fromhex(RX_MAC.replace(":", ""))
    src = bytes.fromhex(TX_MAC.replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((TX, 0))
        for i in range(count):
            s.send(dst + src + ETHERTYPE.to_bytes(2, "big") + i.to_bytes(4, "big") + bytes(46))
            if gap_s:
                time.sleep(gap_s)


def _csum(b: bytes) -> int:
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    s = (s & 0xFFFF) + (s >> 16)
    return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF


def udp_frame(dport: int, seq: int) -> bytes:
    """Ethernet + IPv4 + UDP (checksum 0: none) from PEER_IP to RX_IP, built by hand."""
    payload = seq.to_bytes(4, "big") + bytes(28)
    udp = (50000).to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    ip = bytearray(b"\x45\x00" + (20 + len(udp) + len(payload)).to_bytes(2, "big") + seq.to_bytes(2, "big")
                   + b"\x00\x00\x40\x11\x00\x00" + socket.inet_aton(PEER_IP) + socket.inet_aton(RX_IP))
    ip[10:12] = _csum(bytes(ip)).to_bytes(2, "big")
    eth = bytes.fromhex(RX_MAC.replace(":", "")) + bytes.fromhex(TX_MAC.replace(":", "")) + b"\x08\x00"
    return eth + bytes(ip) + udp + payload


def received(sock: socket.socket, want: int, timeout: float = 10) -> int:
    got, end = 0, time.monotonic() + timeout
    sock.settimeout(0.2)
    while got < want and time.monotonic() < end:
        try:
            sock.recv(2048)
            got += 1
        except socket.timeout:
            pass
    return got


def rx_path_phase(worker: ProbeWorker) -> dict:
    """DATAGRAMS to PORT (watched) and OTHERS to OTHER_PORT (filtered out), each to a bound socket."""
    T.sh("ip", "addr", "replace", f"{RX_IP}/24", "dev", RX)
    T.sh("sysctl", "-q", "-w", f"net.ipv4.conf.{RX}.rp_filter=0", "net.ipv4.conf.all.rp_filter=0")
    T.sh("ip", "neigh", "replace", PEER_IP, "lladdr", TX_MAC, "dev", RX)  # no ARP on the wire
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as watched, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as tx:
        watched.bind((RX_IP, PORT))
        other.bind((RX_IP, OTHER_PORT))
        tx.bind((TX, 0))
        worker.read()  # nothing before this phase counts
        for i in range(DATAGRAMS):
            tx.send(udp_frame(PORT, i))
            if i % 5 == 0:
                tx.send(udp_frame(OTHER_PORT, i))
        truth = {"sent": DATAGRAMS, "received": received(watched, DATAGRAMS),
                 "others_received": received(other, OTHERS, timeout=2)}
    time.sleep(0.5)
    records = worker.read() + worker.read()
    return {"truth": truth, "records": records}


def phase(worker: ProbeWorker, count: int, gap_s: float) -> dict:
    worker.read()  # nothing before this phase counts
    packets, interrupts = rx_packets(), rx_interrupts()
    send_frames(count, gap_s)
    T.wait_for(lambda: rx_packets() - packets, count, timeout=30)
    time.sleep(0.5)  # the last poll returns and its interrupt is counted
    truth = {"sent": count, "rx_packets": rx_packets() - packets, "interrupts": rx_interrupts() - interrupts}
    return {"truth": truth, "records": worker.read()}


def check_virtnet(workers: tuple[ProbeWorker, ProbeWorker]) -> dict:
    worker, rx_worker = workers
    try:
        worker.ready()
        out = {"attached": worker.attached, "attach_s": worker.attach_s, "device": RX, "weight": NAPI_WEIGHT,
               "trickle": phase(worker, TRICKLE, TRICKLE_GAP_S), "burst": phase(worker, BURST, 0)}
        worker.close()
        rx_worker.ready()
        out["rx_path"] = dict(rx_path_phase(rx_worker), attached=rx_worker.attached, attach_s=rx_worker.attach_s)
    finally:
        worker.close()
        rx_worker.close()
    return out


def totals(phase: dict, field: str) -> int:
    return sum(r[field] for r in phase["records"])


def check_counts(v: dict) -> None:
    """Packets == rx_packets delta and interrupts == /proc/interrupts delta, in both phases."""
    for name in ("trickle", "burst"):
        phase = v[name]
        truth = phase["truth"]
        assert truth["rx_packets"] == truth["sent"], (name, truth)
        assert {(r["device"], r["queue"]) for r in phase["records"]} == {(v["device"], 0)}, name
        assert totals(phase, "packets") == truth["rx_packets"], (name, truth, phase["records"])
        assert totals(phase, "interrupts") == truth["interrupts"] > 0, (name, truth, phase["records"])


def check_budget(v: dict) -> None:
    """The budget is the napi weight; a burst runs it out, a trickle never does."""
    for name in ("trickle", "burst"):
        for r in v[name]["records"]:
            assert r["budget"] == v["weight"] and r["max_work"] <= v["weight"], (name, r)
    assert totals(v["trickle"], "budget_exhausted") == 0, v["trickle"]["records"]
    burst = v["burst"]
    assert totals(burst, "budget_exhausted") > 0, burst["records"]
    assert max(r["max_work"] for r in burst["records"]) == v["weight"]
    # a poll that used its budget leaves the rest for the next poll: more polls than interrupts
    assert totals(burst, "polls") > totals(burst, "interrupts")


def check_shape(v: dict) -> None:
    records = v["trickle"]["records"] + v["burst"]["records"]
    for r in records:
        assert r["rx_queues"] == 1 and r["share_pct"] == 100.0 and r["cpus"]
        assert r["ring_size"] and 0 <= r["rx_free_max"] <= r["ring_size"], r
        assert r["hostname"] and r["kernel"].startswith("6.1.")
    assert "napi:napi_poll" in v["attached"]


def check_rx_path(v: dict) -> None:
    """Every watched datagram reached every stage, in order; none of the filtered-out port did."""
    rx = v["rx_path"]
    truth = rx["truth"]
    assert truth["received"] == truth["sent"] == DATAGRAMS and truth["others_received"] == OTHERS, truth
    # the lab guest's 6.1 takes trampolines on the IP and L4 functions (vmlinux's BTF)
    assert "fentry ip_local_deliver, " in rx["attached"] and "kprobe" not in rx["attached"], rx["attached"]
    events = [r for r in rx["records"] if r["type"] == "virtio_rx_path_event"]
    assert len(events) == DATAGRAMS and {(e["dst_port"], e["protocol"], e["device"]) for e in events} == \
        {(PORT, "udp", RX)}, [e["dst_port"] for e in events]
    for e in events:
        assert [s["stage"] for s in e["stages"]] == list(STAGES), e
        times = [s["ktime_ns"] for s in e["stages"]]
        assert times == sorted(times) and e["total_us"] >= 0, e
    summaries = [r for r in rx["records"] if r["type"] == "virtio_rx_path_summary"]
    per_stage = {s: sum(st["packets"] for r in summaries for st in r["stages"] if st["stage"] == s) for s in STAGES}
    assert per_stage == dict.fromkeys(STAGES, DATAGRAMS), per_stage
    assert sum(r["completed"] for r in summaries) == DATAGRAMS
    assert sum(r["total"]["count"] for r in summaries) == DATAGRAMS


CHECKS = (check_counts, check_budget, check_shape, check_rx_path)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "/lab/virtio.json")
    setup()
    result = check_virtnet(start_worker())
    path.write_text(json.dumps(result, indent=1))
    return 1 if run_checks(CHECKS, result) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
