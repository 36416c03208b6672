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
