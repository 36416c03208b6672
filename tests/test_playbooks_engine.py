"""The playbooks as data and the engine that walks them (no BPF, no UI).

Results come from a real recording (tests/data/recordings, made by
tests/autopilot_scenario.py on this kernel) or are built in the exact shape
the probes emit (checked against the probes' own code in test_playbooks_data).
"""

from __future__ import annotations

import pytest

from playbooks import Accumulator, Walk, WalkError, load_library
from probes.registry import PROBES
from playbooks.engine import NOT_IMPLEMENTED
from wizard.replay import Recording
from tests.autopilot_scenario import RECORDING

LIB = load_library(probes=PROBES)


def merged(probe: str, records: list[dict], duration: float = 30.0) -> dict:
    acc = Accumulator(probe, LIB.probes[probe].merge)
    acc.add(records)
    return acc.result(duration)


def flow(src="10.0.0.1", dst="10.0.0.2", proto="udp", sport=40000, dport=53):
    ports = proto in ("tcp", "udp")
    return {"protocol": proto, "src_ip": src, "dst_ip": dst, "src_port": sport if ports else None,
            "dst_port": dport if ports else None}


def entry(count, location, reason=None, device="eth0", netns=4026531840, fl=None, stack=None):
    return {"count": count, "device": device, "ifindex": 2, "netns": netns, "reason": reason,
            "reason_code": None, "location": location, "stack_id": 1,
            "stack": stack or ["kfree_skb+0x1", location], "flow": fl or flow()}


def drop_summary(*entries, uncounted=0):
    return {"type": "drop_summary", "time": "2026-11-25T10:00:00+00:00", "interval_s": 10.0,
            "total": sum(e["count"] for e in entries) + uncounted, "uncounted_table_full": uncounted,
            "attach": "tracepoint skb:kfree_skb", "group_by": "all", "entries": list(entries)}


def walk_to_summary(context=None, availability=None) -> Walk:
    w = Walk(LIB, context or {}, "packet-loss", availability=availability)
    w.answer(w.current.default_index)
    assert w.current.probe == "drop-summary"
    return w


@pytest.fixture(scope="module")
def recording():
    return Recording.load(RECORDING)


# --- the recorded real run ------------------------------------------------------------

def test_recorded_summary_names_netfilter_and_no_socket(recording):
    run = recording.runs[0]
    assert run.probe == "drop-summary"
    result = merged("drop-summary", [r for _, r in run.records], run.duration_s)
    w = walk_to_summary(recording.context)
    findings = w.complete("ok", result, run.duration_s)
    by_rule = {f.rule: f for f in findings}
    assert {"reason-netfilter", "reason-no-socket"} <= set(by_rule)
    nf = by_rule["reason-netfilter"]
    assert nf.level == "critical" and nf.explains
    assert nf.evidence["reason"] == "NETFILTER_DROP"
    assert nf.evidence["flow"]["dst_port"] == 9999
    assert nf.evidence["function"] in ("nf_hook_slow", "nft_do_chain")
    assert any(line.startswith("where: nf") for line in nf.evidence_lines)
    assert f"interface: {nf.evidence['device']}" in nf.evidence_lines
    ns = by_rule["reason-no-socket"]
    assert ns.evidence["flow"]["dst_port"] == 9997 and ns.evidence["function"] == "__udp4_lib_rcv"
    # The passing flow (9998) was never dropped.
    assert all(e["flow"]["dst_port"] != 9998 for e in result["entries"])


def test_recorded_summary_prefills_details_with_the_dominant_flow(recording):
    run = recording.runs[0]
    w = walk_to_summary(recording.context)
    w.complete("ok", merged("drop-summary", [r for _, r in run.records]), run.duration_s)
    top = w.suggestions()[0]
    dominant = merged("drop-summary", [r for _, r in run.records])["entries"][0]
    assert top.ref == "packet-loss/drop-details" and top.unavailable is None
    assert top.params == {"src-ip": dominant["flow"]["src_ip"], "dst-ip": dominant["flow"]["dst_ip"],
                          "l4-protocol": "udp", "dst-port": 9999, "interface": dominant["device"]}
    # Ephemeral source ports are never prefilled.
    assert "src-port" not in top.params


def test_recorded_details_confirm_and_end_the_walk(recording):
    summary, details = recording.runs[0], recording.runs[1]
    w = walk_to_summary(recording.context)
    w.complete("ok", merged("drop-summary", [r for _, r in summary.records]), summary.duration_s)
    w.choose(w.suggestions()[0])
    assert w.current.params == details.params
    result = merged("drop-details", [r for _, r in details.records], details.duration_s)
    assert result["total"] == len([r for _, r in details.records if r["type"] == "drop"]) > 0
    findings = w.complete("ok", result, details.duration_s)
    assert [f.rule for f in findings] == ["reason-netfilter"]
    assert findings[0].evidence["comm"] and findings[0].evidence["cpu_values"]
    # Same finding from Summary and Details: said once, with both steps.
    c = w.conclusion()
    nf = [f for f in c.causes if f.rule == "reason-netfilter"]
    assert len(nf) == 1 and nf[0].seen_in == ["packet-loss/drop-summary", "packet-loss/drop-details"]
    assert c.cause_found and c.summary.startswith("The firewall (netfilter) drops")
    assert any("nft list ruleset" in fix for fix in c.fixes)
    # The details for 9999 ran: the next suggestion is the other flow's details, not the same again.
    assert [s.params.get("dst-port") for s in w.suggestions()] == [9997]


# --- drop sites and reasons -----------------------------------------------------------

@pytest.mark.parametrize("location, reason, rule", [
    ("tun_get_user+0x4d2", None, "site-tun"),
    ("tun_net_xmit+0x1f0", "NOT_SPECIFIED", "site-tun"),
    ("__dev_queue_xmit+0x8a", None, "site-dev-queue-xmit"),
    ("tcp_v4_rcv+0x10c", None, "site-tcp-rcv"),
    ("ip_rcv_core+0x2a1", None, "site-ip-rcv"),
    ("nf_hook_slow+0x9e", None, "site-netfilter"),
    ("nft_do_chain+0x4c4", "NETFILTER_DROP", "reason-netfilter"),
    ("__udp4_lib_rcv+0x4bc", "NO_SOCKET", "reason-no-socket"),
    ("__dev_queue_xmit+0x8a", "QDISC_DROP", "reason-qdisc"),
    ("tcp_v4_rcv+0x10c", "TCP_CSUM", "reason-checksum"),
    ("ip_rcv_core+0x2a1", "OTHERHOST", "reason-otherhost"),
    ("ip_rcv_finish_core+0x30", "IP_RPFILTER", "reason-source-check"),
    ("tun_net_xmit+0x1f0", "FULL_RING", "reason-tun-ring"),
    ("tun_net_xmit+0x1f0", "DEV_READY", "reason-tap-no-reader"),
    ("eth_xmit+0x10", "DEV_READY", "reason-device-down"),
    ("do_execute_actions+0xde", "OVS_DROP_ACTION", "reason-ovs-flow"),     # netsleuth's, before 6.6
    ("ovs_dp_process_packet+0x1af", "OVS_DROP_LAST_ACTION", "reason-ovs-flow"),  # the kernel's, 6.6+
    ("do_execute_actions+0x3a0", "OVS_DROP_METER", "reason-ovs-other"),
    ("do_execute_actions+0x52", "NOT_SPECIFIED", "site-ovs-output"),     # output port without carrier
    ("do_execute_actions+0x52", None, "site-ovs-output"),
    ("tcp_validate_incoming+0x80", "TCP_OLD_DATA", "reason-tcp-state"),
    ("some_new_function+0x10", "NOT_SPECIFIED", "drop-elsewhere"),
])
def test_drop_site_and_reason_rules(location, reason, rule):
    w = walk_to_summary()
    findings = w.complete("ok", merged("drop-summary", [drop_summary(entry(100, location, reason))]))
    cause = [f for f in findings if f.group == "drop-cause"]
    assert [f.rule for f in cause] == [rule]
    assert cause[0].evidence["location"] == location
    assert "10.0.0.1:40000 -> 10.0.0.2:53 (UDP)" in "\n".join(cause[0].evidence_lines)


def test_reason_rules_name_reasons_this_kernel_knows():
    """Reasons are matched by name; the guide's core ones exist on the running kernel."""
    from probes.runtime.kernel import detect

    names = set(detect().drop_reasons.values())
    if not names:
        pytest.skip("this kernel has no drop reasons")
    assert {"NO_SOCKET", "NETFILTER_DROP", "QDISC_DROP", "TCP_CSUM", "OTHERHOST", "FULL_RING"} <= names


def test_small_entries_and_entries_past_top_do_not_fire():
    entries = [entry(1000, "nf_hook_slow+0x9e", "NETFILTER_DROP", fl=flow(dport=1)),
               entry(5, "__udp4_lib_rcv+0x4bc", "NO_SOCKET", fl=flow(dport=2))]  # 0.5 % of drops
    findings = walk_to_summary().complete("ok", merged("drop-summary", [drop_summary(*entries)]))
    assert [f.rule for f in findings if f.group == "drop-cause"] == ["reason-netfilter"]


def test_entries_summed_over_reads():
    e1 = entry(3, "nf_hook_slow+0x9e", "NETFILTER_DROP")
    e2 = entry(4, "nf_hook_slow+0x9e", "NETFILTER_DROP")
    other = entry(2, "nf_hook_slow+0x9e", "NETFILTER_DROP", device="eth1")
    result = merged("drop-summary", [drop_summary(e1), drop_summary(e2, other, uncounted=1)])
    assert result["total"] == 10 and result["uncounted_table_full"] == 1 and result["records"] == 2
    assert [(e["device"], e["count"]) for e in result["entries"]] == [("eth0", 7), ("eth1", 2)]
    assert result["entries"][0]["share"] == pytest.approx(7 / 9)
    rules = [f.rule for f in walk_to_summary().complete("ok", result)]
    assert "drop-table-full" in rules


def test_interface_filter_only_prefilled_in_our_namespace():
    e = entry(50, "nf_hook_slow+0x9e", "NETFILTER_DROP", device="veth7", netns=111)
    same = walk_to_summary({"netns": 111})
    same.complete("ok", merged("drop-summary", [drop_summary(e)]))
    assert same.suggestions()[0].params["interface"] == "veth7"
    other = walk_to_summary({"netns": 222, "device": "eth9"})
    other.complete("ok", merged("drop-summary", [drop_summary(e)]))
    assert "interface" not in other.suggestions()[0].params


# --- the guide's first lesson -----------------------------------------------------------

def guide_case_records():
    # The guide's 30-minute run: 31 real drops on two stacks, while monitoring counted 234.
    return [drop_summary(entry(19, "ip_rcv_core+0x2a1", None, device="br-int", fl=flow(proto="icmp")),
                         entry(12, "__dev_queue_xmit+0x8a", None, device="ens11", fl=flow(proto="icmp")))]


def test_latency_not_loss():
    w = walk_to_summary({"dst_ip": "10.0.0.2", "l4_protocol": "icmp", "reported_loss": 234},
                        availability=lambda p: None if p.startswith("drop") else NOT_IMPLEMENTED)
    findings = w.complete("ok", merged("drop-summary", guide_case_records(), 1800))
    lesson = next(f for f in findings if f.rule == "latency-not-loss")
    assert lesson.level == "critical" and not lesson.explains
    assert "234 lost packets" in lesson.say and "only 31 matching" in lesson.say and "other 203" in lesson.say
    assert w.ranked_findings()[0] is lesson
    # It steers to the latency branch first; unavailable steps say why, and rank after
    # available ones only within the same importance.
    sug = w.suggestions()
    assert sug[0].ref == "high-latency/system-latency-summary" and sug[0].unavailable == NOT_IMPLEMENTED
    assert sug[0].suggested_by == lesson.title
    assert "ovs-slow/ovs-upcall-summary" in [s.ref for s in sug]
    assert "vm-network/vm-latency-summary" not in [s.ref for s in sug]  # no VM interface given
    # the drop sites of the 31 real drops are still found
    assert {"site-ip-rcv", "site-dev-queue-xmit"} <= {f.rule for f in findings}


def test_reported_loss_matched_by_drops_is_real_loss():
    w = walk_to_summary({"reported_loss": 40})
    rules = [f.rule for f in w.complete("ok", merged("drop-summary", guide_case_records()))]
    assert "loss-is-real" in rules and "latency-not-loss" not in rules


def test_details_proposed_by_a_finding_do_not_judge_the_reported_loss(recording):
    """The Details step a finding proposes watches one narrower flow for a shorter time:
    its count says nothing about the loss the user reported (the Summary's does)."""
    summary, details = recording.runs[0], recording.runs[1]
    context = dict(recording.context, reported_loss=100)
    w = walk_to_summary(context)
    found = w.complete("ok", merged("drop-summary", [r for _, r in summary.records]), summary.duration_s)
    total = merged("drop-summary", [r for _, r in summary.records])["total"]
    assert total >= 50 and "loss-is-real" in [f.rule for f in found]
    w.choose(w.suggestions()[0])
    few = [r for _, r in details.records if r["type"] == "drop"][:3]
    rules = [f.rule for f in w.complete("ok", merged("drop-details", few, 2.0), 2.0)]
    assert rules == ["reason-netfilter"]
    assert "latency-not-loss" not in [f.rule for f in w.conclusion().findings]


def test_details_chosen_by_the_user_judge_the_reported_loss(recording):
    """Straight to Details ("I know the flow"): that step runs with the user's own filters."""
    details = recording.runs[1]
    w = Walk(LIB, dict(recording.context, reported_loss=100), "packet-loss")
    w.answer(1)
    assert w.current.probe == "drop-details"
    few = [r for _, r in details.records if r["type"] == "drop"][:3]
    rules = [f.rule for f in w.complete("ok", merged("drop-details", few, 2.0), 2.0)]
    assert "latency-not-loss" in rules


def test_no_drops_points_to_latency():
    w = walk_to_summary({"dst_ip": "10.0.0.2"})
    findings = w.complete("ok", merged("drop-summary", [drop_summary()], 30))
    assert [f.rule for f in findings] == ["no-drops"]
    assert "In 30 s the kernel" in findings[0].say
    assert w.suggestions()[0].ref == "high-latency/system-latency-summary"
    assert not w.conclusion().cause_found


# --- navigation -------------------------------------------------------------------------------

def test_choose_with_edited_params_back_and_replay():
    events = []
    w = Walk(LIB, {"dst_ip": "10.0.0.2"}, "packet-loss", on_event=events.append)
    w.answer(0)
    w.complete("ok", merged("drop-summary", [drop_summary(entry(9, "nf_hook_slow+0x9e", "NETFILTER_DROP"))]))
    sug = w.suggestions()[0]
    view = w.choose(sug, params={"dst-port": 5353, "interface": None})
    assert view.params["dst-port"] == 5353 and "interface" not in view.params
    assert view.suggested_by == sug.suggested_by and view.level == "critical"
    view = w.edit({"vlan-id": 7})
    assert view.params["vlan-id"] == 7 and view.params["dst-port"] == 5353
    w.complete("ok", merged("drop-details", []), 5)
    assert [f.rule for f in w.frames[-1].findings] == ["no-drops"]
    # Replaying the journal gives the same state.
    again = Walk.from_events(LIB, events)
    assert again.current == w.current and [f.to_dict() for f in again.findings] == [f.to_dict() for f in w.findings]
    # Back forgets what the popped step found.
    w.back()
    assert w.current.probe == "drop-summary" and "no-drops" not in [f.rule for f in w.findings]
    w.back()
    assert w.current_ref == "packet-loss/know-where"
    w.back()  # never past the start
    assert w.current_ref == "packet-loss/know-where"


def test_bad_moves_are_errors():
    w = Walk(LIB, {}, "packet-loss")
    with pytest.raises(WalkError, match="question, not a step"):
        w.complete("ok", {})
    with pytest.raises(WalkError, match="out of range"):
        w.answer(7)
    with pytest.raises(WalkError, match="no step"):
        w.choose("packet-loss/nope")
    with pytest.raises(WalkError, match="unknown symptom"):
        Walk(LIB, {}, "printer-on-fire")
    with pytest.raises(WalkError, match="unknown context field"):
        Walk(LIB, {"colour": "blue"}, "packet-loss")


def test_unavailable_steps_never_crash_the_walk():
    def broken(probe):
        raise RuntimeError("capability check exploded")

    w = walk_to_summary(availability=broken)
    assert w.current.unavailable == "cannot check availability: capability check exploded"
    w.complete("unavailable", error=w.current.unavailable)
    assert w.findings == [] and w.suggestions() == []
    assert not w.conclusion().cause_found


def test_every_symptom_and_quick_reference_row_starts_a_walk():
    for symptom in ("packet-loss", "high-latency", "ovs-slow", "vm-network"):
        w = Walk(LIB, {}, symptom)
        while not hasattr(w.current, "probe"):  # default answers down to a step
            w.answer(w.current.default_index)
        assert w.current.probe in LIB.probes
    assert [r.problem for r in LIB.quick_reference] == [
        "VM latency", "System network slow", "OVS slow", "Drops", "TUN drops", "vhost slow", "virtio slow",
        "KVM interrupts slow"]
    for row in LIB.quick_reference:
        w = Walk(LIB, {}, start=row.summary)
        assert w.current.ref == row.summary and w.current.tier == LIB.probes[w.current.probe].tier


# --- latency, OVS and root-cause rules over the probes' record shapes ---------------------------

def latency_summary(pairs, family="system"):
    return {"type": f"{family}_latency_summary", "direction": "rx", "stages": [], "packets_started": 100,
            "packets_completed": 100, "stage_without_start": 0, "in_flight": 0, "pairs": pairs}


def pair(frm, to, values, total=False):
    from vocab.hist import Log2Hist

    return {"from": frm, "to": to, "total": total, "unit": "us", **Log2Hist.from_values(values).summary()}


def test_ovs_stage_tail_prefills_details_threshold_and_upcall_step():
    fast = [10] * 990
    slow = fast + [150_000] * 10  # the guide: median ~10 µs, a tail in the 131-262 ms bucket
    recs = [latency_summary([pair("PHY_RX", "OVS_RX", fast), pair("OVS_RX", "OVS_PROCESS", slow),
                             pair("PHY_RX", "PROTO_RCV", slow, total=True)])]
    w = Walk(LIB, {"phy_interface": "ens11", "l4_protocol": "icmp"}, start="high-latency/system-latency-summary")
    findings = w.complete("ok", merged("system-latency-summary", recs))
    tail = [f for f in findings if f.group == "stage-tail"]
    assert [f.rule for f in tail] == ["ovs-stage-tail"]  # the TOTAL pair is not a stage
    assert "OVS_RX → OVS_PROCESS" in tail[0].title
    details = next(s for s in w.suggestions() if s.ref == "high-latency/system-latency-details")
    assert details.params["latency-threshold"] == 131072  # low edge of the P99.9 bucket
    assert details.params["phy-interface"] == "ens11" and details.params["protocol"] == "icmp"
    assert details.params["direction"] == "rx"
    assert "ovs-slow/ovs-upcall-summary" in [s.ref for s in w.suggestions()]


def test_upcall_tail_over_timeout_suggests_root_cause_with_handler_threads():
    from vocab.hist import Log2Hist

    h = Log2Hist.from_values([65] * 995 + [134_000] * 5).summary()
    rec = {"type": "ovs_upcall_summary", "upcalls": 1000, "answered": 1000, "unanswered": 0, "avg_us": 87,
           "max_us_since_start": 287_000.0, "histogram": h,
           "handlers": [{"tid": 4242, "comm": "handler23", "upcalls": 600, "avg_us": 90, "max_us_since_start": 287000},
                        {"tid": 4243, "comm": "handler24", "upcalls": 400, "avg_us": 80, "max_us_since_start": 900}]}
    w = Walk(LIB, {"timeout_ms": 200, "ovs_pid": 4200}, start="ovs-slow/ovs-upcall-summary")
    findings = w.complete("ok", merged("ovs-upcall-summary", [rec, rec]))
    assert findings[0].rule == "upcall-over-timeout"
    assert findings[0].evidence["count"] == 2000 and findings[0].evidence["handlers_tid_values"] == [4242, 4243]
    offcpu = next(s for s in w.suggestions() if s.probe == "offcpu")
    assert offcpu.params == {"pid": 4200, "tid": "4242, 4243", "min-block-us": 10000}


def test_executes_without_an_upcall_are_named_only_when_there_are_some():
    rec = upcall_record()
    w = Walk(LIB, {"timeout_ms": 200, "ovs_pid": 4200}, start="ovs-slow/ovs-upcall-summary")
    assert "executes-without-upcall" not in [f.rule for f in w.complete("ok", merged("ovs-upcall-summary", [rec]))]
    w = Walk(LIB, {"timeout_ms": 200, "ovs_pid": 4200}, start="ovs-slow/ovs-upcall-summary")
    findings = w.complete("ok", merged("ovs-upcall-summary", [dict(rec, executes_without_upcall=3)] * 2))
    (f,) = [f for f in findings if f.rule == "executes-without-upcall"]
    assert f.level == "info" and f.say.startswith("6 packets came back") and "(2,000 upcalls)" in f.say, f.say
    assert findings[0].rule == "upcall-over-timeout"  # the tail still leads


def test_no_upcalls_says_so_and_points_along_the_path_not_at_the_handlers():
    from vocab.hist import Log2Hist

    rec = {"type": "ovs_upcall_summary", "upcalls": 0, "answered": 0, "unanswered": 0, "executes_without_upcall": 0,
           "avg_us": None, "max_us": None, "max_us_since_start": None, "histogram": Log2Hist({}).summary(),
           "handlers": []}
    w = Walk(LIB, {"ovs_pid": 4200}, start="ovs-slow/ovs-upcall-summary")
    assert [f.rule for f in w.complete("ok", merged("ovs-upcall-summary", [rec]))] == ["no-upcalls"]
    assert [s.ref for s in w.suggestions()] == ["high-latency/system-latency-summary"]


def test_lock_holder_is_the_cause_with_the_guides_fixes():
    waits = [{"type": "lock_wait", "time": f"2026-11-25T10:00:0{i}+00:00", "pid": 4200, "lock": "0x55d0c0ffee",
              "kind": "rdlock", "waiter_tid": 4242 + i % 2, "waiter_comm": f"handler{23 + i % 2}",
              "wait_us": 150_000 + i * 10_000, "holder_tid": 4300, "holder_comm": "revalidator12",
              "holder_kind": "wrlock",  # the kinds pthread-lock emits: mutex, rdlock, wrlock
              "stack": ["fat_rwlock_rdlock+0x2a [ovs-vswitchd]", "classifier_lookup+0x51 [ovs-vswitchd]"]}
              for i in range(4)]
    w = Walk(LIB, {"ovs_pid": 4200}, start="ovs-slow/pthread-lock")
    findings = w.complete("ok", merged("pthread-lock", waits))
    assert [f.rule for f in findings] == ["revalidator-holds-lock"]
    assert findings[0].evidence["max_wait_us"] == 180_000
    assert findings[0].evidence["waiter_comm_values"] == ["handler23", "handler24"]
    c = w.conclusion()
    assert c.cause_found and any("n-revalidator-threads" in fix for fix in c.fixes)


def test_drops_from_many_source_ports_are_one_entry():
    # A client's ephemeral source ports must not split one cause into one finding per port.
    def entry(sport, count):
        return {"count": count, "device": "veth1", "ifindex": 5, "netns": 1, "reason": "NO_SOCKET",
                "location": "__udp4_lib_rcv+0x4bc", "stack_id": sport % 3, "stack": [],
                "flow": {"protocol": "udp", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2",
                         "src_port": sport, "dst_port": 9999}}
    acc = Accumulator("drop-summary", LIB.probes["drop-summary"].merge)
    acc.add([{"type": "drop_summary", "total": 60, "entries": [entry(40000 + i, 3) for i in range(20)]}])
    (merged,) = acc.result()["entries"]
    assert merged["count"] == 60
    assert merged["flow"]["src_port"] is None and merged["flow"]["dst_port"] == 9999
    assert len(merged["flow_src_port_values"]) == 20


# --- the guide's case study, step by step: what the conclusion says at each point -------------

CASE_CONTEXT = {"dst_ip": "10.0.0.2", "l4_protocol": "icmp", "reported_loss": 234, "timeout_ms": 200,
                "phy_interface": "ens11", "ovs_pid": 4200}


def upcall_record():
    from vocab.hist import Log2Hist

    h = Log2Hist.from_values([65] * 995 + [134_000] * 5).summary()
    return {"type": "ovs_upcall_summary", "upcalls": 1000, "answered": 1000, "unanswered": 0, "avg_us": 87,
            "max_us_since_start": 287_000.0, "histogram": h,
            "handlers": [{"tid": 4242, "comm": "handler23", "upcalls": 1000, "avg_us": 87,
                          "max_us_since_start": 287_000}]}


def lock_waits():
    return [{"type": "lock_wait", "time": f"2026-11-25T10:00:0{i}+00:00", "pid": 4200, "lock": "0x55d0c0ffee",
             "kind": "rdlock", "waiter_tid": 4242 + i % 2, "waiter_comm": f"handler{23 + i % 2}",
             "wait_us": 150_000 + i * 10_000, "holder_tid": 4300, "holder_comm": "revalidator12",
             "holder_kind": "wrlock",  # the kinds pthread-lock emits: mutex, rdlock, wrlock
             "stack": ["fat_rwlock_rdlock+0x2a [ovs-vswitchd]", "classifier_lookup+0x51 [ovs-vswitchd]"]}
             for i in range(4)]


def run_suggested(w: Walk, ref: str, probe_result: dict) -> None:
    w.choose(next(s for s in w.suggestions() if s.ref == ref))
    w.complete("ok", probe_result, 30)


def test_case_study_drops_explain_only_their_part_of_the_loss():
    w = walk_to_summary(CASE_CONTEXT)
    w.complete("ok", merged("drop-summary", guide_case_records(), 1800), 1800)
    c = w.conclusion()
    # 31 real drops do not explain 234 reported: no cause yet, and the drop sites are not "the cause"
    assert not c.cause_found and c.state == "open"
    assert c.summary.startswith("31 of the 234 packets reported lost are real drops (IP input drops")
    assert "the other 203 are latency: not measured yet. Next step: Which stage of the host path is slow? " \
           "(system-latency-summary)." in c.summary
    # the lesson's advice leads; the drop sites' fixes (route, txqueuelen) come after
    assert c.fixes[0].startswith("Measure latency per stage next")
    assert any("txqueuelen" in f for f in c.fixes[1:])
    # the findings of that step, ranked: the lesson first, said as "X of N" (no contradiction)
    ranked = w.ranked_findings()
    assert ranked[0].rule == "latency-not-loss"
    assert ranked[0].title == ("Only 31 of 234 packets reported lost were dropped: the other 203 are latency")


def test_case_study_walk_to_the_lock_holder_tells_the_whole_chain():
    w = walk_to_summary(CASE_CONTEXT)
    w.complete("ok", merged("drop-summary", guide_case_records(), 1800), 1800)
    fast = [10] * 990
    run_suggested(w, "high-latency/system-latency-summary", merged("system-latency-summary", [latency_summary(
        [pair("PHY_RX", "OVS_RX", fast), pair("OVS_RX", "OVS_PROCESS", fast + [150_000] * 10)])]))
    c = w.conclusion()
    assert not c.cause_found
    assert ("the other 203 are latency: not pinned down yet (Some packets spend longer than your monitoring "
            "timeout in OVS_RX → OVS_PROCESS)") in c.summary
    assert "Next step: How long does ovs-vswitchd take to answer upcalls? (ovs-upcall-summary)" in c.summary
    # two adjacent links found so far: packets late in OVS → "loss" that is latency
    late_in_ovs = ("packets take up to 262.1 ms from OVS_RX to OVS_PROCESS, more than your 200 ms timeout "
                   "(median 15 µs)")
    assert c.chain == [late_in_ovs, "203 of the 234 packets reported lost were late, not lost"]

    run_suggested(w, "ovs-slow/ovs-upcall-summary", merged("ovs-upcall-summary", [upcall_record()]))
    w.choose("ovs-slow/pthread-lock")
    w.complete("ok", merged("pthread-lock", lock_waits()), 10)
    c = w.conclusion()
    assert c.cause_found and c.state == "cause"
    # the root cause leads, above the tier-1 drop sites
    assert c.causes[0].rule == "revalidator-holds-lock"
    assert [f.rule for f in c.causes[1:]] == ["site-ip-rcv", "site-dev-queue-xmit"]
    assert c.summary.startswith("31 of the 234 packets reported lost are real drops (")
    assert "; the other 203 are latency: A revalidator thread holds the flow-table lock" in c.summary
    assert c.fixes[0].startswith("Use fewer revalidator threads")
    assert c.chain_title == "How the late packets come about"
    assert c.chain == [
        "revalidator12 (4300) holds lock 0x55d0c0ffee while it sweeps the flow table",
        "handler23, handler24 wait up to 180.0 ms for it",
        "upcalls wait up to 287.0 ms for ovs-vswitchd (median 127 µs)",
        late_in_ovs,
        "203 of the 234 packets reported lost were late, not lost",
    ]


def test_chain_names_the_link_not_measured_between_two_found():
    w = walk_to_summary(CASE_CONTEXT)
    w.complete("ok", merged("drop-summary", guide_case_records(), 1800), 1800)
    w.choose("ovs-slow/pthread-lock")
    w.complete("ok", merged("pthread-lock", lock_waits()), 10)
    c = w.conclusion()
    assert c.chain[2:4] == ["(not measured: upcall latency (ovs-upcall-summary))",
                            "(not measured: time packets spend in OVS (latency Summary / Details))"]
    # a lock found with no latency measured says nothing about packets in its own words
    lock = next(f for f in c.causes if f.rule == "revalidator-holds-lock")
    assert "packets" not in lock.say


def test_no_drops_with_a_reported_loss_keeps_the_advice_to_check_the_filters():
    w = walk_to_summary({"dst_ip": "10.0.0.3", "reported_loss": 50})
    findings = w.complete("ok", merged("drop-summary", [drop_summary()], 30), 30)
    assert {f.rule for f in findings} == {"latency-not-loss", "no-drops"}
    c = w.conclusion()
    assert c.summary.startswith("0 of the 50 packets reported lost are real drops; the other 50 are latency")
    assert any(f.startswith("Check the filters") for f in c.fixes)


def test_conclusion_when_nothing_could_run_says_what_and_why():
    w = walk_to_summary({"dst_ip": "10.0.0.2"})
    w.complete("unavailable", error="drop-summary needs root (CAP_BPF)")
    c = w.conclusion()
    assert c.state == "nothing-ran" and not c.cause_found
    assert c.summary == "Nothing could run: drop-summary: drop-summary needs root (CAP_BPF)."
    assert "No cause" not in c.summary


# --- steps whose probe is not implemented offer their fallback ---------------------------------

def test_tun_drops_row_falls_back_to_drop_details_on_the_tap():
    w = Walk(LIB, {"vm_interface": "vnet3"}, start="vm-network/tun-ring-monitor",
             availability=lambda p: NOT_IMPLEMENTED if p == "tun-ring-monitor" else None)
    assert w.current.unavailable == NOT_IMPLEMENTED and w.current.fallback == "vm-network/tun-drop-details"
    instead = w.fallback()
    assert instead.ref == "vm-network/tun-drop-details" and instead.probe == "drop-details"
    assert instead.params == {"interface": "vnet3"} and instead.unavailable is None
    w.choose(instead)
    assert w.current.ref == "vm-network/tun-drop-details" and w.fallback() is None


def test_a_suggested_step_that_cannot_run_brings_its_fallback():
    records = [drop_summary(entry(80, "tun_net_xmit+0x1f0", "FULL_RING", device="vnet3"))]
    for implemented, expect in ((False, True), (True, False)):
        w = walk_to_summary(availability=lambda p: None if implemented or p != "tun-ring-monitor" else NOT_IMPLEMENTED)
        w.complete("ok", merged("drop-summary", records))
        refs = [s.ref for s in w.suggestions()]
        assert "vm-network/tun-ring-monitor" in refs
        assert ("vm-network/tun-drop-details" in refs) is expect
        if expect:
            sug = next(s for s in w.suggestions() if s.ref == "vm-network/tun-drop-details")
            assert sug.params["interface"] == "vnet3"
