"""drop-summary and drop-details on their kprobe path (`--attach kprobe`, a kprobe
on kfree_skb_reason) against drops on a real OVS datapath and a real tap.

Ground truth for each fault comes from the kernel, not from the probes: the
tap's own tx_dropped counter, the packets the fake VM read, the packets sent.
"""

from __future__ import annotations

import pytest

from tests.lab.expect import detail_events, step_ok, summary_entries

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


@pytest.fixture
def scenarios(lab) -> dict:
    step_ok(lab, "probes_attach")
    step_ok(lab, "drops")
    step_ok(lab, "probes_stop")
    return lab["scenarios"]


def _assert_summary(entries: list[dict], count: int, device: str, reason: str, location: str) -> None:
    assert entries, "drop-summary reported nothing for the flow"
    assert sum(e["count"] for e in entries) == count
    for e in entries:
        assert (e["device"], e["reason"]) == (device, reason), e
        assert e["location"].startswith(location + "+0x"), e
        assert any(f.startswith(location + "+") for f in e["stack"]), e["stack"]


def _assert_details(events: list[dict], count: int, device: str, reason: str, location: str,
                    payload_len: int) -> None:
    assert len(events) == count
    for e in events:
        assert (e["device"], e["reason"]) == (device, reason), e
        assert e["location"].startswith(location + "+0x"), e
        assert e["eth"]["type_name"] == "IPv4" and e["payload_len"] == payload_len, e


def test_probes_ran_on_the_kprobe_path_and_detached(lab, scenarios):
    for name in ("drop-summary", "drop-details"):
        probe = lab["probes"][name]
        assert probe["returncode"] == 0 and "Traceback" not in probe["stderr"], probe["stderr"]
    attach = {r["attach"] for r in lab["probes"]["drop-summary"]["records"]}
    assert attach == {"kprobe kfree_skb_reason (with drop reasons)"
                      " + kprobe consume_skb from do_execute_actions (OVS drop actions)"
                      " + kprobe ovs_dp_upcall (userspace actions are not drops)"}
    assert not [r for r in lab["probes"]["drop-details"]["records"] if r["type"] == "lost_events"]
    assert lab["kprobes_left"] == []  # /sys/kernel/debug/kprobes/list after the probes exited


def test_tap_ring_full(lab, scenarios):
    """The VM stops reading: 1000 packets fill the tap's ring, tun_net_xmit drops the rest."""
    s = scenarios["ring_full"]
    assert s["tx_dropped"] > 0 and s["tx_dropped"] + s["read_by_vm"] == s["sent"]
    _assert_summary(summary_entries(lab, s), s["tx_dropped"], "vnet0", "FULL_RING", "tun_net_xmit")
    events = detail_events(lab, s)
    _assert_details(events, s["tx_dropped"], "vnet0", "FULL_RING", "tun_net_xmit", scenarios["payload_len"])
    # It came through the OVS datapath, sent by our sender process.
    assert all("do_execute_actions" in " ".join(e["stack"]) for e in events)
    assert {e["comm"] for e in events} == {"python3"}


def test_tap_without_reader(lab, scenarios):
    """The tap is up but its queue has no reader attached: every packet is dropped."""
    s = scenarios["no_reader"]
    assert s["tx_dropped"] == s["sent"]
    _assert_summary(summary_entries(lab, s), s["sent"], "vnet0", "DEV_READY", "tun_net_xmit")
    _assert_details(detail_events(lab, s), s["sent"], "vnet0", "DEV_READY", "tun_net_xmit",
                    scenarios["payload_len"])


def test_vm_gone_tap_left_behind(lab, scenarios):
    """The VM process exited, its persistent tap stays without carrier: OVS itself
    frees the packets on output (do_output, inlined in do_execute_actions).  At that
    point skb->dev is still the ingress port, so that is the device reported."""
    s = scenarios["vm_gone"]
    _assert_summary(summary_entries(lab, s), s["sent"], s["ingress"], "NOT_SPECIFIED", "do_execute_actions")
    _assert_details(detail_events(lab, s), s["sent"], s["ingress"], "NOT_SPECIFIED", "do_execute_actions",
                    scenarios["payload_len"])


def test_uplink_qdisc_overflow(lab, scenarios):
    """A tbf qdisc on the uplink overflows: the kprobe fires inside kfree_skb_list_reason,
    and the reported location skips that free helper.  What the qdisc let through
    reaches the namespace, where no socket listens: dropped there too."""
    s = scenarios["qdisc_full"]
    assert 0 < s["qdisc_drops"] < s["sent"]
    entries, details = summary_entries(lab, s), detail_events(lab, s)
    at_qdisc = [e for e in entries if e["device"] == s["device"]]
    _assert_summary(at_qdisc, s["qdisc_drops"], s["device"], "QDISC_DROP", "__dev_queue_xmit")
    _assert_details([e for e in details if e["device"] == s["device"]], s["qdisc_drops"], s["device"],
                    "QDISC_DROP", "__dev_queue_xmit", scenarios["payload_len"])
    delivered = [e for e in entries if e["device"] != s["device"]]
    _assert_summary(delivered, sum(e["count"] for e in delivered), "eth0", "NO_SOCKET", "__udp4_lib_rcv")
    # Every packet sent was dropped at one of the two places, and each probe saw each once.
    assert s["qdisc_drops"] + sum(e["count"] for e in delivered) == s["sent"]
    assert len(details) == s["sent"]


def test_openflow_drop_rule_took_the_flow(lab, scenarios):
    """Ground truth for the next test: the rule really dropped the flow in the datapath."""
    s = scenarios["openflow_drop"]
    (dp_flow,) = s["datapath_flows"]
    assert f"packets:{s['sent'] - 1}," in dp_flow  # the first packet upcalled and installed it
    assert str(s["dport"]) not in scenarios["vm_counters"]["udp_ports"]


def test_openflow_drop_rule(lab, scenarios):
    """Kernel 6.1's datapath frees an actions=drop flow's packets with consume_skb from
    do_execute_actions (no kfree_skb): the probes' consume_skb hook reports them as
    OVS_DROP_ACTION.  The first packet missed the flow: its skb was consumed after the
    upcall and ovs-vswitchd may or may not send it back to execute the (empty) actions,
    so the probes count sent-1 or sent."""
    s = scenarios["openflow_drop"]
    entries = summary_entries(lab, s)
    total = sum(e["count"] for e in entries)
    assert s["sent"] - 1 <= total <= s["sent"], entries
    _assert_summary(entries, total, s["device"], "OVS_DROP_ACTION", "do_execute_actions")
    events = detail_events(lab, s)
    assert len(events) == total
    _assert_details(events, total, s["device"], "OVS_DROP_ACTION", "do_execute_actions", scenarios["payload_len"])


def _flow_of(f: dict) -> dict:
    return {"protocol": "udp", "src_ip": f["src_ip"], "dst_ip": f["dst_ip"], "src_port": f["sport"],
            "dst_port": f["dport"]}


def _drops_of(lab: dict, flow: dict) -> tuple[list[dict], list[dict]]:
    entries = [e for r in lab["probes"]["drop-summary"]["records"] for e in r["entries"] if e["flow"] == flow]
    events = [r for r in lab["probes"]["drop-details"]["records"] if r.get("type") == "drop" and r["flow"] == flow]
    return entries, events


def test_a_controller_flow_is_not_a_drop(lab, scenarios):
    """A flow whose datapath action is `userspace` (an OpenFlow controller rule: every packet
    goes to ovs-vswitchd) ends do_execute_actions with consume_skb too on 6.1, exactly like a
    drop action.  The probes tell them apart by the skb just handed to ovs_dp_upcall: none
    of the flow's packets is a drop."""
    step_ok(lab, "latency")
    prime, ph = lab["latency"]["ovs_prime"], lab["latency"]["interleaved"]
    (dp_flow,) = prime["datapath_flows"]  # ground truth: the flow sends its packets up
    assert "userspace(" in dp_flow, dp_flow
    (after,) = ph["datapath_flows"]
    assert int(after.split("packets:")[1].split(",")[0]) >= len(ph["sent_a"]), after  # they hit it
    entries, events = _drops_of(lab, _flow_of(ph["flow_a"]))
    assert entries == [] and events == [], (entries, events)


def test_a_drop_decision_counts_every_packet_it_dropped(lab, scenarios):
    """An OpenFlow drop rule decided in the same run: every packet that hit the datapath's
    drop flow, plus the first one if ovs-vswitchd sent it back to execute its (empty)
    actions (the upcall probe's answered count says), exactly."""
    step_ok(lab, "latency")
    ph = lab["latency"]["drop_decision"]
    (dp_flow,) = ph["datapath_flows"]
    hits = int(dp_flow.split("packets:")[1].split(",")[0])
    assert hits == len(ph["sent"]) - 1, dp_flow  # the first one upcalled and installed it
    (upcall,) = ph["records"]["upcall"]
    assert upcall["upcalls"] == ph["missed"] == 1, upcall
    executed = upcall["answered"]
    entries, events = _drops_of(lab, _flow_of(ph["flow"]))
    assert sum(e["count"] for e in entries) == len(events) == hits + executed, (entries, hits, executed)
    _assert_summary(entries, hits + executed, "sys0", "OVS_DROP_ACTION", "do_execute_actions")


def test_vm_sending_through_a_downed_tap(lab, scenarios):
    """VM -> host: the VM writes while its tap is down; tun_get_user frees each frame
    (the tap's rx_dropped counts them, the VM's writes fail)."""
    s = scenarios["vm_tap_down"]
    assert s["rx_dropped"] == s["sent"] == scenarios["vm_counters"]["refused_frames"], s
    _assert_summary(summary_entries(lab, s), s["sent"], s["device"], "DEV_READY", "tun_get_user")
    _assert_details(detail_events(lab, s), s["sent"], s["device"], "DEV_READY", "tun_get_user",
                    scenarios["payload_len"])


@pytest.mark.parametrize("name, rule", [
    ("openflow_drop", "reason-ovs-flow"),   # an OpenFlow actions=drop rule
    ("vm_gone", "site-ovs-output"),         # the output tap has no carrier any more
    ("ring_full", "reason-tun-ring"),
    ("no_reader", "reason-tap-no-reader"),  # the tap's queue detached: nobody reads it
    ("qdisc_full", "reason-qdisc"),
])
def test_each_real_drop_gets_the_finding_that_names_its_cause(lab, scenarios, name, rule):
    """The packet-loss playbook over what drop-summary really reported for each fault."""
    from playbooks import Accumulator, Walk, load_library
    from probes.registry import PROBES

    lib = load_library(probes=PROBES)
    s = scenarios[name]
    entries = summary_entries(lab, s)
    record = {"type": "drop_summary", "time": None, "interval_s": 10.0, "total": sum(e["count"] for e in entries),
              "uncounted_table_full": 0, "attach": "kprobe", "group_by": "all", "entries": entries}
    acc = Accumulator("drop-summary", lib.probes["drop-summary"].merge)
    acc.add([record])
    w = Walk(lib, {}, "packet-loss")
    w.answer(w.current.default_index)
    findings = w.complete("ok", acc.result(10.0))
    assert rule in [f.rule for f in findings], [(f.rule, f.title) for f in findings]
