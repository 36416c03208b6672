"""Latency and OVS probes on a real OVS kernel datapath (guest side: check_latency in
guest_checks.py; every probe reads each phase separately).

Ground truth per phase, all controlled by the guest:
- cached: LAT_PINGS pings host (sys0) -> uplink namespace and LAT_PINGS pings uplink
  namespace -> fake VM, with every datapath flow in place (the datapath's `missed`
  counter stays put);
- flushed: one ping after each `ovs-appctl revalidator/purge`: two upcalls (request +
  reply), counted by the datapath's `missed`, each answered by a flow install.  (Not
  `ovs-dpctl del-flows`: measured, ovs-vswitchd then keeps answering upcalls without ever
  reinstalling the flows it believes are still there, so every packet upcalls);
- udp_normal / udp_slow: one UDP datagram after each purge, without / with a 2 % CPU cap
  on ovs-vswitchd; each datagram's one-way time from just before sendto() to the kernel
  receive timestamp (SO_TIMESTAMPNS) in the namespace, which encloses the probe's
  IP_SEND -> DEV_XMIT total.
"""

from __future__ import annotations

import pytest

from tests.lab.expect import step_ok

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOST, PEER, VM = "10.251.0.1", "10.251.0.2", "10.251.0.20"
# Time a datagram spends outside the probe's IP_SEND -> DEV_XMIT window (sendto() before
# ip_output, veth + the namespace's receive after): measured 0.6-1.2 ms, and 13 ms for a
# socket's first datagram under TCG.  A packet counts as clearly slow beyond this.
OUTSIDE_MARGIN_US = 20_000


def phase(lab: dict, name: str) -> dict:
    step_ok(lab, "latency")
    return lab["latency"][name]


def summary(ph: dict, probe: str) -> dict:
    (rec,) = ph["records"][probe]
    return rec


def pair_counts(rec: dict) -> dict[tuple[str, str], int]:
    return {(p["from"], p["to"]): p["count"] for p in rec["pairs"] if not p["total"]}


def total_pair(rec: dict) -> dict:
    (t,) = [p for p in rec["pairs"] if p["total"]]
    return t


def expected_pairs(stages: list[str], skip: set[str]) -> list[tuple[str, str]]:
    path = [s for s in stages if s not in skip]
    return list(zip(path, path[1:]))


@pytest.mark.parametrize("probe,direction", [("sys_tx", "tx"), ("sys_rx", "rx")])
def test_system_latency_counts_every_cached_ping_at_every_stage(lab, probe, direction):
    ph = phase(lab, "cached")
    n = ph["pings"]
    assert ph["replies"] == n and ph["missed"] == 0
    rec = summary(ph, probe)
    assert rec["type"] == "system_latency_summary" and rec["direction"] == direction
    assert rec["packets_started"] == rec["packets_completed"] == n, rec
    # A cached flow never upcalls: every other adjacent stage pair sees each packet once.
    assert pair_counts(rec) == {p: n for p in expected_pairs(rec["stages"], {"OVS_UPCALL"})}, rec
    total = total_pair(rec)
    assert total["count"] == n and total["p50"] > 0


@pytest.mark.parametrize("probe", ["sys_tx", "sys_rx"])
def test_system_latency_follows_pings_across_the_upcall(lab, probe):
    ph = phase(lab, "flushed")
    n = ph["pings"]
    assert ph["replies"] == n and ph["missed"] == 2 * n
    rec = summary(ph, probe)
    assert rec["packets_completed"] == n, rec
    counts = pair_counts(rec)
    assert counts[("OVS_PROCESS", "OVS_UPCALL")] == counts[("OVS_UPCALL", "OVS_VPORT_SEND")] == n, rec


def test_vm_latency_counts_pings_from_the_uplink_to_the_vm(lab):
    ph = phase(lab, "cached")
    n = ph["pings"]
    assert ph["vm_replies"] == n
    rec = summary(ph, "vm_rx")
    assert rec["type"] == "vm_latency_summary" and rec["direction"] == "rx"
    assert rec["stages"][-1] == "VNET_XMIT"
    assert rec["packets_started"] == rec["packets_completed"] == n, rec
    assert pair_counts(rec) == {p: n for p in expected_pairs(rec["stages"], {"OVS_UPCALL"})}, rec


def test_ovs_upcall_summary_counts_what_the_datapath_missed(lab):
    cached = summary(phase(lab, "cached"), "upcall")
    assert cached["upcalls"] == 0
    ph = phase(lab, "flushed")
    rec = summary(ph, "upcall")
    assert rec["type"] == "ovs_upcall_summary"
    assert rec["upcalls"] == rec["answered"] == ph["missed"] == 2 * ph["pings"], rec
    h = rec["histogram"]
    assert h["count"] == ph["missed"] and 0 < h["p50"] <= h["p99"] <= h["max"]
    assert rec["handlers"] and all(t["comm"].startswith("handler") for t in rec["handlers"]), rec["handlers"]
    assert sum(t["upcalls"] for t in rec["handlers"]) == rec["answered"]


def test_ovs_megaflow_follows_upcalls_to_installed_flows(lab):
    ph = phase(lab, "flushed")
    events = ph["records"]["megaflow"]
    upcalls = [e for e in events if e["type"] == "megaflow_upcall"]
    installs = [e for e in events if e["type"] == "megaflow_install"]
    assert not [e for e in events if e["type"] == "error"], events
    assert len(upcalls) == ph["missed"], upcalls
    assert {(e["flow"]["src_ip"], e["flow"]["dst_ip"]) for e in upcalls} == {(HOST, PEER), (PEER, HOST)}
    timed = [e for e in installs if e.get("install_latency_us", 0) > 0]
    assert len(timed) == ph["missed"], installs
    for e in timed:
        assert {e["key"]["ip_src"], e["key"]["ip_dst"]} == {HOST, PEER} and e["key"]["ip_proto"] == 1, e
        assert e["match"].get("eth_type") == 0x0800 and e["band"], e
        assert any(a.startswith("output:") for a in e["actions"]), e
    summaries = [e for e in events if e["type"] == "megaflow_summary"]
    assert sum(s["upcalls"] for s in summaries) <= len(upcalls)


def test_slowed_vswitchd_moves_the_upcall_tail(lab):
    normal = summary(phase(lab, "udp_normal"), "upcall")
    ph = phase(lab, "udp_slow")
    slow = summary(ph, "upcall")
    assert ph["nr_throttled"] > 0
    n = len(ph["sent"])
    assert normal["upcalls"] == normal["answered"] == n and slow["upcalls"] == slow["answered"] == n
    assert slow["histogram"]["p99"] > normal["histogram"]["p99"]
    assert slow["histogram"]["max"] > normal["histogram"]["max"]
    assert slow["avg_us"] > 2 * normal["avg_us"], (normal, slow)


def test_latency_threshold_catches_exactly_the_slow_packets(lab):
    threshold = lab["latency"]["threshold_us"]
    sent = phase(lab, "udp_normal")["sent"] + phase(lab, "udp_slow")["sent"]
    events = [e for name in ("cached", "flushed", "udp_normal", "udp_slow")
              for e in lab["latency"][name]["records"]["sys_details"]]
    assert not [e for e in events if e["type"] != "system_latency_event"], events

    def packet_of(event: dict) -> dict:
        start = event["stages"][0]["ktime_ns"]  # IP_SEND, just after the datagram's sendto()
        (pkt,) = [p for p in sent if 0 <= start - p["send_mono_ns"] < 50_000_000]
        return pkt

    caught = {packet_of(e)["seq"]: e for e in events}
    one_way = {p["seq"]: p["one_way_us"] for p in sent}
    for seq, e in caught.items():
        assert e["total_us"] >= threshold
        assert e["total_us"] <= one_way[seq], (e, one_way[seq])  # inside the send -> receive window
        assert e["stages"][0]["stage"] == "IP_SEND" and e["stages"][-1]["stage"] == "DEV_XMIT", e
    # Where the imposed delay lands: between the upcall and the handler thread sending the
    # packet on (OVS_PACKET_CMD_EXECUTE runs in the handler's own syscall).
    for p in phase(lab, "udp_slow")["sent"]:
        if p["seq"] in caught and p["one_way_us"] > threshold + OUTSIDE_MARGIN_US:
            e = caught[p["seq"]]
            assert e["slowest_stage"] == "OVS_VPORT_SEND", e
            assert e["slowest_comm"].startswith("handler"), e
            before = [s["stage"] for s in e["stages"]].index("OVS_VPORT_SEND") - 1
            assert e["stages"][before]["stage"] == "OVS_UPCALL", e
    # The one-way time encloses the probe's total, so a packet faster than the threshold
    # cannot be caught; one clearly slower (beyond OUTSIDE_MARGIN_US) must be.
    fast = {p["seq"] for p in sent if p["one_way_us"] < threshold}
    slow = {p["seq"] for p in sent if p["one_way_us"] > threshold + OUTSIDE_MARGIN_US}
    assert slow, f"no packet was slowed past the threshold: {sent}"
    assert not fast & set(caught), sent
    assert slow <= set(caught), sent
