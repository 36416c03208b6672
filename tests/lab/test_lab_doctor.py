"""`netsleuth doctor` inside the lab guest: a kprobe kernel with its exact headers and OVS."""

from __future__ import annotations

import pytest

from tests.lab.expect import step_ok

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


def test_doctor_reports_kprobes_matching_headers_and_ovs(lab):
    step_ok(lab, "doctor")
    doctor = lab["doctor"]
    report = doctor["report"]
    assert doctor["returncode"] == 0, doctor["stderr"]
    checks = {c["name"]: c for c in report["checks"]}
    release = lab["host"]["kernel"]
    assert report["kernel"] == release
    for name in ("kprobes", "kernel headers", "btf", "openvswitch module", "ovs-vswitchd", "tun"):
        assert checks[name]["ok"], checks[name]
    assert checks["kernel headers"]["detail"] == f"matching: /lib/modules/{release}/build"
    assert report["tier1_ready"] is True


def test_drop_probes_hook_ovs_drop_actions_unless_told_not_to(lab):
    """6.1 has no OVS drop reasons (its BTF has no SKB_DROP_REASON_SUBSYS_OPENVSWITCH): by
    default the drop probes add the consume_skb hook and the ovs_dp_upcall hook that tells
    userspace actions from drops; --no-ovs-actions leaves both out (the first costs a
    kprobe hit per freed packet)."""
    step_ok(lab, "doctor")
    hooks = lab["drop_hooks"]
    assert hooks["default"].startswith("raw tracepoint kfree_skb (with drop reasons)")
    assert hooks["default"].endswith("+ kprobe consume_skb from do_execute_actions (OVS drop actions)"
                                     " + kprobe ovs_dp_upcall (userspace actions are not drops)")
    assert hooks["no_ovs_actions"] == "raw tracepoint kfree_skb (with drop reasons)"
