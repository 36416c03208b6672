"""The latency and OVS probe checks of a lab run (runs INSIDE the guest, from guest_checks).

Every phase sends packets whose fate the guest knows (pings, UDP datagrams with
their send and receive times, the datapath's miss counter, the datapath flows
and what they did), and every probe is read once at its end, so each phase's
records cover exactly its packets.  The host-side tests (test_lab_latency.py,
test_lab_playbooks.py, test_lab_drops.py) compare the two.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from tests import netenv
from tests.lab import topology as T
from tests.lab.probe_worker import ProbeWorker

LAT_PINGS = 10
LAT_FLUSHES = 5
LAT_UDP_PORT = 7790
LAT_THRESHOLD_US = 20_000  # between an upcall at full speed and one of the pauses below
# udp_slow: ovs-vswitchd is stopped while each datagram upcalls, for these times: the wait
# the test imposes, known to the nanosecond (a CPU cap slows it by an unknown amount).
PAUSES_MS = (40, 80, 160, 320, 640)
BURST = 8  # datagrams of one unconnected socket in flight at once across an upcall
# The interleaved megaflow phase: flow A hits an OpenFlow controller rule (its datapath flow
# sends every packet to ovs-vswitchd, which installs nothing more); flow B is a new flow.
CONTROLLER_IP, CONTROLLER_MAC = f"{T.SUBNET}.99", "52:54:00:00:00:99"
FLOW_A = dict(sport=40010, dport=7795)
A_REPEATS = 4
PACKET_OUT_SPORT = 40012  # the packet-out phase's datagram
# The drop-decision phase: an OpenFlow drop rule; the first packet upcalls, the rest hit its flow.
DROP_DECISION = dict(sport=40011, dport=7796, count=6)

# Receives datagrams one at a time, with the kernel's receive timestamp (SO_TIMESTAMPNS,
# CLOCK_REALTIME), the time recvmsg() returned, and the IP id (from a raw socket's copy).
UDP_SINK = """
import json, socket, struct, time
SO_TIMESTAMPNS = 35
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.bind(("", {port}))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)  # sees each datagram first
raw.setblocking(False)
ids = {{}}
print("ready", flush=True)
while True:
    data, anc, _, _ = s.recvmsg(256, 256)
    user_ns = time.time_ns()
    while True:
        try:
            pkt = raw.recv(2048)
        except BlockingIOError:
            break
        ihl = (pkt[0] & 15) * 4
        ids[pkt[ihl + 8:]] = struct.unpack("!H", pkt[4:6])[0]
    ts = [struct.unpack("qq", d[:16]) for lvl, typ, d in anc if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS]
    print(json.dumps({{"payload": data.decode(), "rx_real_ns": ts[0][0] * 10**9 + ts[0][1] if ts else None,
                      "user_real_ns": user_ns, "ip_id": ids.pop(data, None)}}), flush=True)
"""

# Sends "seq=N" datagrams from one unconnected socket with Don't Fragment always set
# (IP_PMTUDISC_DO, as QUIC stacks do): Linux gives such datagrams IP id 0.  (With the default,
# IP_PMTUDISC_WANT, the datagrams may be fragmented and get a counter: measured in the lab.)
# A line "FIRST N" sends N back to back and answers with each one's send times; sendto()
# returns once the kernel has passed the datagram on: through OVS up to its upcall, if any.
UDP_SENDER = """
import json, socket, sys, time
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.bind(("", {sport}))
print("ready", flush=True)
for line in sys.stdin:
    first, n = map(int, line.split())
    out = []
    for seq in range(first, first + n):
        p = {{"seq": seq, "send_mono_ns": time.monotonic_ns(), "send_real_ns": time.time_ns()}}
        s.sendto(("seq=%d" % seq).encode(), ({dst!r}, {port}))
        p["returned_mono_ns"] = time.monotonic_ns()
        out.append(p)
    print(json.dumps(out), flush=True)
"""


def wait_until(read, timeout: float = 10, step: float = 0.1):
    """Poll ``read()`` until it returns something true or time runs out; the last value."""
    deadline = time.monotonic() + timeout
    while not (value := read()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


class _Helper:
    """A small Python process (in a namespace when given) talking JSON lines."""

    def __init__(self, code: str, ns: str | None):
        prefix = ["ip", "netns", "exec", ns] if ns else []
        self.proc = subprocess.Popen(prefix + [sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("helper process did not start")

    def line(self, timeout: float = 60):
        """The next JSON line; a packet that never arrives is an error, not a hang."""
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box:
            raise RuntimeError(f"no answer within {timeout} s (a datagram lost?)")
        return json.loads(box[0])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class UdpSink(_Helper):
    def __init__(self, port: int, ns: str | None = None):
        super().__init__(UDP_SINK.format(port=port), ns)


class UdpSender(_Helper):
    def __init__(self, dst: str, port: int, ns: str | None = None, sport: int = 0):
        super().__init__(UDP_SENDER.format(dst=dst, port=port, sport=sport), ns)

    def send(self, first: int, n: int = 1) -> list[dict]:
        self.proc.stdin.write(f"{first} {n}\n")
        self.proc.stdin.flush()
        return self.line()


class Udp:
    """Datagrams host -> uplink namespace (tx) and back (rx), each with its one-way time."""

    def __init__(self, sysnet: T.SystemPath):
        self.ends = {}
        try:
            self.ends["tx"] = (UdpSender(sysnet.peer_ip, LAT_UDP_PORT), UdpSink(LAT_UDP_PORT, ns=sysnet.ns))
            self.ends["rx"] = (UdpSender(sysnet.ip, LAT_UDP_PORT, ns=sysnet.ns), UdpSink(LAT_UDP_PORT))
        except Exception:
            self.close()
            raise

    def send(self, direction: str, first: int, n: int = 1) -> list[dict]:
        """n datagrams back to back, each received: send times, receive times and IP id."""
        return self.receive(direction, self.start(direction, first, n))

    def start(self, direction: str, first: int, n: int = 1) -> list[dict]:
        """Send n datagrams back to back; their send times (the receipts are left to receive())."""
        return self.ends[direction][0].send(first, n)

    def receive(self, direction: str, sent: list[dict]) -> list[dict]:
        """The datagrams of ``sent``, received: their receive times, one-way times and IP ids."""
        sink = self.ends[direction][1]
        got = {r["payload"]: r for r in (sink.line() for _ in range(len(sent)))}
        for p in sent:
            r = got[f"seq={p['seq']}"]
            p["ip_id"] = r["ip_id"]
            # tx: the namespace's receive timestamp (set as the packet enters it: after OVS).
            # rx: when recvmsg() returned: the timestamp would be the one taken as the packet
            # entered phy0, before OVS, for a packet that hit its datapath flow.
            p["one_way_us"] = round(((r["rx_real_ns"] if direction == "tx" else r["user_real_ns"])
                                     - p["send_real_ns"]) / 1000, 1)
            p["sendto_us"] = round((p["returned_mono_ns"] - p["send_mono_ns"]) / 1000, 1)
        return sent

    def close(self) -> None:
        for sender, sink in self.ends.values():
            sender.close()
            sink.close()


def start_latency_probes(sysnet: T.SystemPath, vm: T.VmPath) -> dict[str, ProbeWorker]:
    """The latency and OVS probes, each compiling in its own process (attached by the time they are used)."""
    host, peer, phy = sysnet.ip, sysnet.peer_ip, sysnet.uplink
    slow = dict(protocol="udp", latency_threshold=str(LAT_THRESHOLD_US))
    return {
        # Not filtered by protocol: the pings and the UDP phases both count.
        "sys_tx": ProbeWorker("system-latency-summary", direction="tx", src_ip=host, dst_ip=peer, phy_interface=phy),
        "sys_rx": ProbeWorker("system-latency-summary", direction="rx", src_ip=peer, dst_ip=host, phy_interface=phy),
        # The same two by kprobes (the ones above take trampolines where the lab kernel has them):
        # both see the same packets, so their counts must be equal phase by phase.
        "sys_tx_kprobe": ProbeWorker("system-latency-summary", direction="tx", src_ip=host, dst_ip=peer,
                                     phy_interface=phy, attach="kprobe"),
        "sys_rx_kprobe": ProbeWorker("system-latency-summary", direction="rx", src_ip=peer, dst_ip=host,
                                     phy_interface=phy, attach="kprobe"),
        "sys_details": ProbeWorker("system-latency-details", phy_interface=phy, direction="tx", src_ip=host,
                                   dst_ip=peer, **slow),
        "sys_details_rx": ProbeWorker("system-latency-details", phy_interface=phy, direction="rx", src_ip=peer,
                                      dst_ip=host, **slow),
        "vm_rx": ProbeWorker("vm-latency-summary", vm_interface=vm.tap, phy_interface=phy, direction="rx",
                             protocol="icmp", dst_ip=vm.ip),
        "vm_tx": ProbeWorker("vm-latency-summary", vm_interface=vm.tap, phy_interface=phy, direction="tx",
                             protocol="icmp", src_ip=vm.ip),
        # Every packet (threshold 0), with the Summary's record every 2 s.
        "vm_details_rx": ProbeWorker("vm-latency-details", vm_interface=vm.tap, phy_interface=phy, direction="rx",
                                     protocol="icmp", dst_ip=vm.ip, latency_threshold="0", interval="2"),
        "upcall": ProbeWorker("ovs-upcall-summary"),
        "upcall_kprobe": ProbeWorker("ovs-upcall-summary", attach="kprobe"),
        # The in-kernel filters: only the host's datagrams to the namespace.
        "upcall_udp_tx": ProbeWorker("ovs-upcall-summary", proto="udp", src_ip=host, dst_ip=peer),
        "megaflow": ProbeWorker("ovs-megaflow", interval="1"),
        "megaflow_kprobe": ProbeWorker("ovs-megaflow", interval="1", attach="kprobe"),
        "megaflow_mac": ProbeWorker("ovs-megaflow", eth_dst=T.mac_of(sysnet.peer_if, ns=sysnet.ns), ip_proto="udp",
                                    interval="1"),
    }


def check_latency(br: T.Bridge, sysnet: T.SystemPath, vm: T.VmPath, probes: dict[str, ProbeWorker]) -> dict:
    """Phases with known packets, each read from every probe."""
    out: dict = {"attach_s": {k: w.ready().attach_s for k, w in probes.items()},
                 "attached": {k: w.attached for k, w in probes.items()}, "threshold_us": LAT_THRESHOLD_US,
                 "burst": BURST, "phases": []}

    def phase(name: str, run) -> None:
        m0, t0 = br.upcall_stats()["missed"], time.monotonic_ns()
        out[name] = run() or {}
        time.sleep(0.5)  # softirq work and the last answers from ovs-vswitchd
        out[name].update(missed=br.upcall_stats()["missed"] - m0, window_ns=[t0, time.monotonic_ns()],
                         records={k: w.read() for k, w in probes.items()})
        out["phases"].append(name)

    br.purge_flows()  # earlier flushes left ovs-vswitchd believing in flows that are gone
    T.ping(sysnet.peer_ip, 2)  # datapath flows for every path in place
    T.ping(vm.ip, 2, ns=sysnet.ns)
    time.sleep(0.5)
    for w in probes.values():
        w.read()  # everything before this step

    phase("cached", lambda: {"pings": LAT_PINGS, "replies": T.ping(sysnet.peer_ip, LAT_PINGS, interval=0.05),
                             "vm_replies": T.ping(vm.ip, LAT_PINGS, ns=sysnet.ns, interval=0.05)})

    def flushed_pings() -> dict:
        replies = 0
        for _ in range(LAT_FLUSHES):
            br.purge_flows()
            replies += T.ping(sysnet.peer_ip, 1)
        return {"pings": LAT_FLUSHES, "replies": replies}
    phase("flushed", flushed_pings)

    udp = Udp(sysnet)
    try:
        def flushed_udp(first: int) -> dict:
            """One datagram per purge (each upcalls), one at a time, each way."""
            sent: dict[str, list] = {"tx": [], "rx": []}
            for i in range(LAT_FLUSHES):
                for direction in ("tx", "rx"):
                    br.purge_flows()
                    sent[direction] += udp.send(direction, first + i)
            return {"sent": sent["tx"], "sent_rx": sent["rx"]}
        phase("udp_normal", lambda: flushed_udp(0))

        def paused_udp(first: int) -> dict:
            """One datagram per purge each way, upcalled while ovs-vswitchd is stopped for a
            known time: none can be answered before the resume."""
            sent: dict[str, list] = {"tx": [], "rx": []}
            for i, pause_ms in enumerate(PAUSES_MS):
                for direction in ("tx", "rx"):
                    br.purge_flows()
                    with T.PausedVswitchd() as pause:
                        pkts = udp.start(direction, first + i)
                        time.sleep(pause_ms / 1000)
                        resumed = pause.resume()
                    for p in pkts:
                        p.update(pause_ms=pause_ms, resumed_mono_ns=resumed)
                    sent[direction] += udp.receive(direction, pkts)
            return {"sent": sent["tx"], "sent_rx": sent["rx"], "pauses_ms": list(PAUSES_MS)}
        phase("udp_slow", lambda: paused_udp(100))

        def bursts() -> dict:
            """BURST datagrams back to back from one unconnected socket, right after a purge:
            all share addresses, ports and IP id 0, and all upcall (ovs-vswitchd is stopped
            while they are sent: at full speed its first install can come after the first
            datagram, measured), so all wait for the upcall handlers at once."""
            res = {}
            for direction, first in (("tx", 200), ("rx", 300)):
                br.purge_flows()
                m0 = br.upcall_stats()["missed"]
                with T.PausedVswitchd() as pause:
                    pkts = udp.start(direction, first, BURST)
                    time.sleep(0.1)
                    pause.resume()
                res[direction] = {"sent": udp.receive(direction, pkts)}
                time.sleep(0.3)
                res[direction]["missed"] = br.upcall_stats()["missed"] - m0
            return res
        phase("udp_burst", bursts)

        ovs_action_phases(br, sysnet, udp, phase)

        def packet_out() -> dict:
            """A datagram host -> namespace that ovs-vswitchd has executed with no upcall (an
            OpenFlow packet-out), received by the namespace's sink."""
            ip = netenv.ipv4_udp(sysnet.ip, sysnet.peer_ip, PACKET_OUT_SPORT, LAT_UDP_PORT, b"seq=packet-out")
            macs = (T.mac_of(sysnet.peer_if, ns=sysnet.ns) + T.mac_of(sysnet.port)).replace(":", "")
            br.packet_out(bytes.fromhex(macs) + b"\x08\x00" + ip, sysnet.uplink)
            return {"received": udp.ends["tx"][1].line(timeout=10)["payload"]}
        phase("packet_out", packet_out)
    finally:
        udp.close()
    out["final"] = {k: w.stop() for k, w in probes.items()}
    return out


def ovs_action_phases(br: T.Bridge, sysnet: T.SystemPath, udp: Udp, phase) -> None:
    """A controller flow (every packet goes up to ovs-vswitchd, no install follows) beside a
    new flow that gets installed; then a drop decision."""
    br.add_flow(f"priority=300,dl_dst={CONTROLLER_MAC},actions=controller")
    T.static_neighbour(CONTROLLER_IP, CONTROLLER_MAC, sysnet.port)
    a = UdpSender(CONTROLLER_IP, FLOW_A["dport"], sport=FLOW_A["sport"])
    try:
        def prime() -> dict:
            br.purge_flows()
            sent = a.send(0)
            flows = wait_until(lambda: [f for f in br.datapath_flows() if CONTROLLER_MAC in f and "userspace" in f])
            return {"sent": sent, "datapath_flows": flows}
        phase("ovs_prime", prime)

        def interleaved() -> dict:
            sent_a = a.send(1)
            time.sleep(0.1)
            sent_b = udp.send("tx", 400)  # a new flow: missed since the purge
            for i in range(2, 2 + A_REPEATS - 1):
                time.sleep(0.1)
                sent_a += a.send(i)
            time.sleep(0.3)
            flows = [f for f in br.datapath_flows() if CONTROLLER_MAC in f]
            return {"sent_a": sent_a, "sent_b": sent_b, "flow_a": {"dst_ip": CONTROLLER_IP, "src_ip": sysnet.ip,
                                                                  **FLOW_A}, "datapath_flows": flows}
        phase("interleaved", interleaved)
    finally:
        a.close()

    d = DROP_DECISION
    br.add_drop_flow(f"udp,nw_dst={sysnet.peer_ip},tp_dst={d['dport']}", priority=300)
    drop_sender = UdpSender(sysnet.peer_ip, d["dport"], sport=d["sport"])
    try:
        def drop_decision() -> dict:
            br.purge_flows()
            sent = drop_sender.send(0)  # upcalls; ovs-vswitchd installs a drop flow
            wait_until(lambda: any("actions:drop" in f and f"dst={d['dport']}" in f for f in br.datapath_flows()))
            for i in range(1, d["count"]):
                time.sleep(0.05)
                sent += drop_sender.send(i)
            time.sleep(0.3)
            flows = [f for f in br.datapath_flows() if "actions:drop" in f and f"dst={d['dport']}" in f]
            return {"sent": sent, "datapath_flows": flows, "flow": {"src_ip": sysnet.ip, "dst_ip": sysnet.peer_ip,
                                                                   "sport": d["sport"], "dport": d["dport"]}}
        phase("drop_decision", drop_decision)
    finally:
        drop_sender.close()
    br.del_flows(f"priority=300,udp,nw_dst={sysnet.peer_ip},tp_dst={d['dport']}")
    br.del_flows(f"priority=300,dl_dst={CONTROLLER_MAC}")
