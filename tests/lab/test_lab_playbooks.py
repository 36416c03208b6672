"""The latency and OVS branches of the playbooks over what the real probes reported in
the lab (no UI, no BPF here: the engine is pure Python).  The findings must follow
from the ground truth of each phase (see test_lab_latency.py), and the next steps
must carry the threads and thresholds seen in the records."""

from __future__ import annotations

import pytest

from playbooks import Accumulator, Walk, load_library
from probes.registry import PROBES
from tests.lab.expect import step_ok

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

LIB = load_library(probes=PROBES)


def walk(lab: dict, phase: str, worker: str, probe: str, start: str, context: dict | None = None):
    step_ok(lab, "latency")
    acc = Accumulator(probe, LIB.probes[probe].merge)
    acc.add(lab["latency"][phase]["records"][worker])
    w = Walk(LIB, context or {}, start=start)
    findings = w.complete("ok", acc.result(30.0))
    return w, findings


def suggestion(w: Walk, ref: str):
    return next(s for s in w.suggestions() if s.ref == ref)


def tids(text) -> set[int]:
    return {int(t) for t in str(text).replace(" ", "").split(",") if t}


def test_slowed_handlers_give_an_upcall_tail_finding_with_their_threads_prefilled(lab):
    (rec,) = lab["latency"]["udp_slow"]["records"]["upcall"]
    w, findings = walk(lab, "udp_slow", "upcall", "ovs-upcall-summary", "ovs-slow/ovs-upcall-summary",
                       {"ovs_pid": 1234})
    assert findings[0].rule == "upcall-long-tail", [f.rule for f in findings]
    offcpu = suggestion(w, "ovs-slow/offcpu")
    assert tids(offcpu.params["tid"]) == {h["tid"] for h in rec["handlers"]}
    assert offcpu.params["pid"] == 1234
    assert "ovs-slow/cpu-burst" in [s.ref for s in w.suggestions()]


def test_a_packet_out_is_named_as_an_execute_without_upcall_and_an_upcall_phase_is_not(lab):
    _, findings = walk(lab, "packet_out", "upcall", "ovs-upcall-summary", "ovs-slow/ovs-upcall-summary")
    assert [f.rule for f in findings] == ["no-upcalls", "executes-without-upcall"], findings
    assert findings[1].say.split()[0] == "1" and "(0 upcalls)" in findings[1].say, findings[1].say
    _, findings = walk(lab, "udp_normal", "upcall", "ovs-upcall-summary", "ovs-slow/ovs-upcall-summary")
    assert "executes-without-upcall" not in [f.rule for f in findings]


def test_slow_packets_are_pinned_on_the_handler_threads_that_answered(lab):
    events = [r for r in lab["latency"]["udp_slow"]["records"]["sys_details"] if r["type"] == "system_latency_event"]
    w, findings = walk(lab, "udp_slow", "sys_details", "system-latency-details",
                       "high-latency/system-latency-details", {"phy_interface": "phy0", "ovs_pid": 1234})
    assert findings[0].rule == "slow-in-ovs-handler" and findings[0].level == "critical", findings[0]
    assert "handler" in findings[0].title
    offcpu = suggestion(w, "ovs-slow/offcpu")
    assert tids(offcpu.params["tid"]) == {e["slowest_tid"] for e in events}


def band_rule(us: float) -> str | None:
    return ("install-over-100ms" if us >= 100_000 else "install-10-100ms" if us >= 10_000
            else "install-1-10ms" if us >= 1000 else None)


def test_megaflow_install_band_follows_the_measured_install_latency(lab):
    """Installs while ovs-vswitchd was stopped take 40 ms and more: the worst install's band
    must be found, and every band found is the band of some measured install, with the
    latency the probe measured."""
    events = lab["latency"]["udp_slow"]["records"]["megaflow"]
    latencies = [e["install_latency_us"] for e in events
                 if e["type"] == "megaflow_install" and e.get("install_latency_us")]
    worst = band_rule(max(latencies))
    assert worst, f"no install slower than 1 ms after a pause: {latencies}"
    _, findings = walk(lab, "udp_slow", "megaflow", "ovs-megaflow", "ovs-slow/ovs-megaflow")
    bands = [f for f in findings if f.rule.startswith("install-")]
    assert worst in {f.rule for f in bands}, (latencies, bands)
    assert {f.rule for f in bands} <= {band_rule(us) for us in latencies}, (latencies, bands)
    for f in bands:  # each megaflow's finding, from its slowest install
        assert f.rule == band_rule(f.evidence["max_install_latency_us"]) and f.evidence["max_install_latency_us"] in latencies
    assert max(latencies) in [f.evidence["max_install_latency_us"] for f in bands], bands
