"""Which upcall an OVS megaflow install answers (probes/ovs_flow_match.py, pure Python), and the
records ovs-megaflow builds from it.  The netlink messages are built the way ovs-vswitchd
builds them (tests/test_ovs_netlink.py); real ones are followed in the lab."""

from __future__ import annotations

import socket
import struct

import pytest

from probes.ovs_flow_match import MegaflowTracker, flow_key, same_flow
from probes.ovs_megaflow import EV_EXECUTE, EV_FLOW_DEL, EV_FLOW_NEW, EV_UPCALL, OvsMegaflow
from probes.runtime.kernel import KernelCaps
from tests.test_ovs_netlink import nla

MS = 1_000_000
MAC_H, MAC_P = "52:54:00:00:00:01", "52:54:00:00:00:02"


def pkt(src: str, dst: str, proto: int = 17, sport: int | None = 4000, dport: int | None = 53, **extra) -> dict:
    """The fields of an upcalled IPv4 packet (as upcall_fields() gives them), or a decoded key."""
    fields = {"eth_src": MAC_H, "eth_dst": MAC_P, "eth_type": 0x0800, "ip_src": src, "ip_dst": dst,
              "ip_proto": proto, "l4_src_port": sport, "l4_dst_port": dport}
    fields.update(extra)
    return {k: v for k, v in fields.items() if v is not None}


A = pkt("10.0.0.1", "10.0.0.99", dport=7791)
B = pkt("10.0.0.1", "10.0.0.2", dport=7792)


def test_an_l2_megaflow_answers_only_its_own_packets_upcall():
    """The audit's case: flow A upcalls at T and is never installed; flow B upcalls at
    T+100 ms and its megaflow (mask: MACs only, as with NORMAL) is installed 200 µs later.
    B's install answers B's upcall, 200 µs; A stays waiting, then counts as unanswered."""
    t = MegaflowTracker(wait_s=5)
    T = 1_000 * MS
    assert t.upcall(T, A) is False
    t.upcall(T + 100 * MS, B)
    us, answered = t.install(T + 100 * MS + 200_000, B, "ufid-b")
    assert us == 200.0 and answered == B
    assert t.waiting == 1  # A
    t.expire(T + 5_001 * MS)
    iv = t.take_interval()
    assert iv.unanswered == {flow_key(A): 1} and iv.latencies_us == [200.0] and t.waiting == 0


def test_interleaved_flows_each_get_their_own_latency():
    t = MegaflowTracker()
    t.upcall(0, A)
    t.upcall(1 * MS, B)
    assert t.install(2 * MS, B, None)[0] == 1000.0
    assert t.install(3 * MS, A, None)[0] == 3000.0
    # One upcall, one answer: a second install of A finds nothing waiting.
    assert t.install(4 * MS, A, None) == (None, None)


def test_the_oldest_upcall_of_the_flow_is_answered_first():
    t = MegaflowTracker()
    t.upcall(0, B)
    t.upcall(5 * MS, B)  # the packet after it, while the install is on its way
    assert t.install(6 * MS, B, None)[0] == 6000.0
    assert t.install(7 * MS, B, None)[0] == 2000.0


def test_an_execute_alone_answers_an_upcall_so_the_next_install_is_not_measured_from_it():
    """Seen in the lab: a burst of one flow after a purge.  The first packet's upcall gets
    an install and an execute; the others an execute only (ovs-vswitchd has the flow by
    then).  Seconds later the flow is purged and its next packet upcalls: its install is
    measured from that packet's upcall, not from the burst's leftovers."""
    t = MegaflowTracker()
    for i in range(3):
        t.upcall(i * 100_000, B)
    assert t.install(1 * MS, B, None)[0] == 1000.0
    assert [t.executed(1 * MS + i * 10_000, B) for i in range(3)] == [True, True, False]  # B1's own execute: nothing left
    t.upcall(3_000 * MS, B)
    assert t.install(3_000 * MS + 500_000, B, None)[0] == 500.0
    assert t.take_interval().executed_only == 2 and t.waiting == 0


def test_an_install_never_answers_a_later_upcall():
    t = MegaflowTracker()
    t.upcall(10 * MS, B)
    assert t.install(9 * MS, B, None) == (None, None)


def test_no_common_field_or_a_different_one_is_no_match():
    assert not same_flow(flow_key({"eth_src": MAC_H}), flow_key({"ip_src": "10.0.0.1"}))
    assert not same_flow(flow_key({}), flow_key({}))
    arp = {"eth_src": MAC_H, "eth_dst": MAC_P, "eth_type": 0x0806}
    t = MegaflowTracker()
    t.upcall(0, B)
    assert t.install(1 * MS, arp, None) == (None, None)  # same MACs, another EtherType


def test_a_key_with_fields_the_packet_lacks_matches_on_the_common_ones():
    """An IPv6 packet: the upcall knows its MACs and EtherType only (the parser reads IPv4),
    its install key also names its ports."""
    up = {"eth_src": MAC_H, "eth_dst": MAC_P, "eth_type": 0x86DD}
    key = {**up, "l4_src_port": 5000, "l4_dst_port": 443}
    t = MegaflowTracker()
    t.upcall(0, up)
    assert t.install(1 * MS, key, None)[0] == 1000.0


def test_upcalls_after_the_install_are_repeats_until_the_flow_is_deleted():
    t = MegaflowTracker()
    t.upcall(0, A)
    t.install(1 * MS, A, "ufid-a")
    assert t.upcall(2 * MS, A) is True and t.upcall(3 * MS, A) is True
    t.expire(10_000 * MS)
    iv = t.take_interval()
    assert iv.repeated == {flow_key(A): 2}
    assert iv.unanswered == {}  # repeats are not "unanswered" as well
    assert t.delete({}, "ufid-a") is True  # deletes name the UFID only
    assert t.upcall(11_000 * MS, A) is False
    assert t.delete({}, "ufid-unknown") is False


def test_memory_is_bounded():
    t = MegaflowTracker(max_waiting=3, max_installed=2)
    flows = [pkt("10.0.0.1", "10.0.0.2", sport=1000 + i) for i in range(5)]
    for i, f in enumerate(flows):
        t.upcall(i * MS, f)
    assert t.waiting == 3
    assert sum(t.take_interval().unanswered.values()) == 2  # the two oldest, pushed out
    for i, f in enumerate(flows[2:]):
        t.install((10 + i) * MS, f, f"u{i}")
    assert t.upcall(20 * MS, flows[2]) is False  # forgotten: only the last two installs are kept
    assert t.upcall(21 * MS, flows[4]) is True


# The probe's records --------------------------------------------------------------

def key_attrs(f: dict) -> bytes:
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    return (nla(3, struct.pack("<I", 2)) + nla(4, mac(f["eth_src"]) + mac(f["eth_dst"]))
            + nla(6, struct.pack("!H", 0x0800))
            + nla(7, socket.inet_aton(f["ip_src"]) + socket.inet_aton(f["ip_dst"]) + bytes([f["ip_proto"], 0, 64, 0]))
            + nla(10, struct.pack("!HH", f["l4_src_port"], f["l4_dst_port"])))


def flow_msg(key: bytes | None, ufid: bytes, l2_only_mask: bool = True) -> bytes:
    """FLOW_CMD_NEW/DEL: UFID first, then key and mask (dpif_netlink_flow_to_ofpbuf's order)."""
    body = nla(9, ufid)
    if key is not None:
        mask = (nla(3, struct.pack("<I", 0xFFFFFFFF)) + nla(4, b"\xff" * 12) + nla(6, b"\xff\xff")
                + nla(7, bytes(12)) + nla(10, bytes(4))) if l2_only_mask else b""
        body += nla(1, key, True) + nla(7, mask, True) + nla(2, nla(1, struct.pack("<I", 3)), True)
    genl = struct.pack("<BBH", 1, 1, 0) + struct.pack("<i", 7)
    return struct.pack("<IHHII", 16 + len(genl) + len(body), 0x20, 5, 1, 0) + genl + body


CAPS = KernelCaps(release="t", btf=True, matching_headers=None, tracefs=None, kprobes=True,
                  raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)


def unloaded(**flags) -> OvsMegaflow:
    """An ovs-megaflow fed events by hand: the user-space state a loaded probe has, without
    BPF (no kprobes here: the kernel side is exercised in the lab)."""
    p = OvsMegaflow(caps=CAPS, **flags)
    p._pending, p.events_lost, p._lost_reported, p.decode_errors, p._backlog = [], 0, 0, [], 0
    p.start_tracking()
    return p


@pytest.fixture
def probe():
    return unloaded(interval="1", storm_threshold="2")


def feed(p: OvsMegaflow, *events) -> None:
    """Events as _on_event copies them out of the perf buffer: (ktime, kind, payload)."""
    for ts, kind, payload in events:
        if kind in (EV_UPCALL, EV_EXECUTE):
            flow = {"protocol": "udp", "src_ip": payload["ip_src"], "dst_ip": payload["ip_dst"],
                    "src_port": payload["l4_src_port"], "dst_port": payload["l4_dst_port"]}
            p._batch.append((ts, kind, 4242, "python3", payload, flow))
        else:
            p._batch.append((ts, kind, 777, "handler1", payload, None))


def test_records_of_the_audit_case_and_the_patterns_found(probe):
    T = 1_000 * MS
    # Arrival order is per CPU: B's install before the upcalls; matched in time order anyway.
    feed(probe, (T + 100 * MS + 200_000, EV_FLOW_NEW, flow_msg(key_attrs(B), b"B" * 16)),
         (T, EV_UPCALL, A), (T + 100 * MS, EV_UPCALL, B), (T + 100 * MS + 300_000, EV_EXECUTE, B))
    probe._process_batch()
    feed(probe, (T + 200 * MS, EV_UPCALL, B), (T + 300 * MS, EV_UPCALL, B),
         (T + 400 * MS, EV_FLOW_DEL, flow_msg(None, b"B" * 16)))
    probe._process_batch()
    recs = probe.take_events()
    installs = [r for r in recs if r["type"] == "megaflow_install"]
    assert len(installs) == 1 and installs[0]["install_latency_us"] == 200.0
    assert installs[0]["band"].startswith("normal") and installs[0]["upcall_flow"]["ip_dst"] == B["ip_dst"]
    assert installs[0]["match"].get("ip_src") is None  # the mask wildcards the addresses
    assert [r["after_install"] for r in recs if r["type"] == "megaflow_upcall"] == [False, False, True, True]
    assert [r["type"] for r in recs][-1] == "megaflow_delete"
    probe.tracker.expire(T + 10_000 * MS)
    out = probe._summary(elapsed=1.0)
    summary = out[0]
    assert summary["type"] == "megaflow_summary" and summary["upcalls"] == 4 and summary["installs"] == 1
    assert summary["unanswered_upcalls"] == 1 and summary["install_latency_us"]["max"] == 200.0
    by_type = {r["type"]: r for r in out[1:]}
    assert by_type["megaflow_upcall_storm"]["upcalls_per_s"] == 4.0  # threshold 2/s
    assert by_type["megaflow_repeated_upcalls"]["count"] == 2
    assert by_type["megaflow_repeated_upcalls"]["flow"]["ip_dst"] == B["ip_dst"]
    assert by_type["megaflow_unanswered_upcalls"]["count"] == 1
    assert by_type["megaflow_unanswered_upcalls"]["flows"][0]["flow"]["ip_dst"] == A["ip_dst"]
    for r in out:
        assert probe.format_text(r)


def test_a_filtered_run_skips_deletes_of_flows_it_never_saw_installed(probe):
    filtered = unloaded(ip_proto="udp")
    feed(filtered, (1, EV_FLOW_DEL, flow_msg(None, b"X" * 16)))
    filtered._process_batch()
    assert filtered._pending == []
    feed(probe, (1, EV_FLOW_DEL, flow_msg(None, b"X" * 16)))  # unfiltered: every delete is shown
    probe._process_batch()
    assert [r["type"] for r in probe._pending] == ["megaflow_delete"]


def test_the_playbook_rules_read_the_pattern_records(probe):
    """The storm threshold is the probe's: its pattern records are what the rules count."""
    from playbooks import Accumulator, Walk, load_library
    from probes.registry import PROBES

    T = 1_000 * MS
    feed(probe, (T, EV_UPCALL, A), (T + 1 * MS, EV_UPCALL, B),
         (T + 2 * MS, EV_FLOW_NEW, flow_msg(key_attrs(B), b"B" * 16)),
         (T + 3 * MS, EV_UPCALL, B), (T + 4 * MS, EV_UPCALL, B))
    probe._process_batch()
    probe.tracker.expire(T + 10_000 * MS)
    records = probe.take_events() + probe._summary(elapsed=1.0)
    lib = load_library(probes=PROBES)
    acc = Accumulator("ovs-megaflow", lib.probes["ovs-megaflow"].merge)
    acc.add(records)
    findings = Walk(lib, {}, start="ovs-slow/ovs-megaflow").complete("ok", acc.result(1.0))
    assert {"upcall-storm", "repeated-upcalls", "unanswered-upcalls"} <= {f.rule for f in findings}
    # Below the probe's threshold (its default, 1000/s) the same upcalls are no storm.
    calm = unloaded()
    assert calm.options.storm_threshold == 1000
    feed(calm, (T, EV_UPCALL, A))
    calm._process_batch()
    acc = Accumulator("ovs-megaflow", lib.probes["ovs-megaflow"].merge)
    acc.add(calm.take_events() + calm._summary(elapsed=1.0))
    findings = Walk(lib, {}, start="ovs-slow/ovs-megaflow").complete("ok", acc.result(1.0))
    assert "upcall-storm" not in {f.rule for f in findings}
