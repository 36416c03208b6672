"""virtio-rx-path-monitor on this host: bad input is one clear line, the program compiles,
verifies, attaches and detaches on this kernel (virtio-net built in, no kprobes: the stages
end at NETIF_RECEIVE), its records are the documented ones.  Its per-packet stages are checked
against a UDP socket's count on a real virtio-net NIC in the lab guest: tests/lab/virtio_checks.py."""

from __future__ import annotations

import os

import pytest

from probes.flows import NsFlow
from probes.virtio_rx_path import STAGES, Packet, VirtioRxPathMonitor
from probes.virtnet_poll import virtio_devices
from tests.netenv import ROOT, ProbeProcess, probe_refusal
from tests.test_ovs_output_doc import documented

DOC = ROOT / "docs" / "output-virt.md"
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@root
@pytest.mark.parametrize("flags, expected", [
    (["--device", "lo"], "--device: 'lo' is not valid; expected a virtio-net interface (this one's driver is none)"),
    (["--device", "nosuch0"], "--device: 'nosuch0' is not valid; expected an existing interface"),
    (["--dst-port", "99999"], "--dst-port: '99999' is not valid"),
    (["--src-ip", "10.1.2"], "--src-ip: '10.1.2' is not valid"),
    (["--l4-protocol", "sctp"], "--l4-protocol: 'sctp' is not valid; expected one of tcp, udp, icmp, all"),
    (["--latency-threshold", "-1"], "--latency-threshold: '-1' is not valid"),
])
def test_bad_input_is_one_clear_line(flags, expected):
    assert expected in probe_refusal("virtio-rx-path-monitor", *flags)


@root
@pytest.mark.bpf
@pytest.mark.skipif(not virtio_devices(), reason="no virtio-net interface on this host")
def test_the_program_loads_and_detaches_on_this_kernel():
    """Compiled against this kernel's BTF, verified, attached, detached; nothing is sent (any
    records are the interface's own traffic to an unused port: none expected)."""
    device = virtio_devices()[0]
    p = ProbeProcess("virtio-rx-path-monitor", "--device", device, "--dst-port", "9", "--l4-protocol", "udp",
                     "--latency-threshold", "0", "-i", "0.5", "-d", "1.5", "--json")
    records = p.wait(timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr  # attached: ProbeProcess waited for its "Tracing" line
    assert all(r["type"] != "virtio_rx_path_event" or r["dst_port"] == 9 for r in records)


def test_the_records_are_documented():
    """The fields the driver writes (its summary and event builders, read from the source's
    record literals) are the documented tables' (docs/output-virt.md)."""
    import inspect
    import re
    src = inspect.getsource(VirtioRxPathMonitor)
    kind = "virtio_rx_path_summary"
    start = src.index(f'"type": "{kind}"')
    assert set(re.findall(r'"(\w+)":', src[start:src.index("})", start)])) == documented(f'"{kind}"', DOC)
    # An event as the driver builds it from the program's struct (two stages reached).
    probe = VirtioRxPathMonitor.__new__(VirtioRxPathMonitor)
    probe.stages = STAGES
    packet = Packet(seen=0b11, flow=NsFlow(saddr=0x0100000A, daddr=0x0200000A, sport=0x3412, dport=0x3512, proto=17))
    packet.stage_ns[0], packet.stage_ns[1] = 1_000, 3_000
    event = probe.event_record(packet)
    assert set(event) == documented('"virtio_rx_path_event"', DOC)
    assert (event["protocol"], event["src_ip"], event["dst_port"], event["total_us"]) == ("udp", "10.0.0.1", 0x1235, 2.0)
    assert STAGES == ("IRQ", "GRO", "NETIF_RECEIVE", "IP", "L4")


def test_a_guest_file_of_summaries_and_events_is_imported(tmp_path):
    """The guest's --json output (both record types) comes back as one run of this probe and
    merges per (device, queue, stage); a file taken on this host is refused in one line."""
    import json

    from tests.test_playbooks_engine import LIB, merged
    from wizard.guestimport import GuestFileError, load_guest_file
    guest = {"hostname": "guest7", "kernel": "6.1.0-lab"}
    hist = {"count": 3, "buckets": [{"low": 4, "high": 7, "count": 3}], "p50": 7, "p90": 7, "p99": 7,
            "p99_9": 7, "max": 7}
    summary = dict(guest, type="virtio_rx_path_summary", device="eth0", queue=0, interval_s=5.0,
                   stages_available=list(STAGES), stages_unavailable_reason=None, packets=3, completed=3,
                   stages=[dict(hist, stage=s, to=s, packets=3, **{"from": STAGES[max(i - 1, 0)]})
                           for i, s in enumerate(STAGES)], total=hist)
    event = dict(guest, type="virtio_rx_path_event", device="eth0", queue=0, cpu=1, src_ip="10.0.0.1",
                 dst_ip="10.0.0.2", protocol="udp", src_port=5, dst_port=6, ip_len=60, total_us=1500.0,
                 slowest_stage="IP", stages=[])
    path = tmp_path / "rxpath.json"
    path.write_text("\n".join(json.dumps(r) for r in (event, summary, summary)) + "\n")
    run = load_guest_file(path, LIB)
    assert run.probe == "virtio-rx-path-monitor" and len(run.records) == 3
    assert "in guest guest7 (kernel 6.1.0-lab)" in run.command
    result = merged("virtio-rx-path-monitor", [r for _, r in run.records])
    ip = [e for e in result["entries"] if e["stage"] == "IP"]
    assert len(ip) == 1 and ip[0]["count"] == 6
    path.write_text(json.dumps(dict(summary, hostname=os.uname().nodename, kernel=os.uname().release)) + "\n")
    with pytest.raises(GuestFileError, match="taken on this host"):
        load_guest_file(path, LIB)
