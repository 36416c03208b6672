"""No dead ends on a host whose kernel lacks what a step needs (here: no kprobes).  Each
symptom's autopilot takes what the playbook offers instead (its steps' `fallback:`), says so,
and ends on a conclusion that says what it could not measure, why, and what that would add."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probes.runtime.kernel import detect
from tests.netenv import NETSLEUTH, ROOT, our_bpf_programs

pytestmark = [pytest.mark.bpf,
              pytest.mark.skipif(os.geteuid() != 0, reason="runs the probes (needs root)"),
              pytest.mark.skipif(os.geteuid() == 0 and detect().kprobes, reason="this host has kprobes")]

NOWHERE = "10.253.250.250"  # no device of this host has it: no drops of other tests' traffic count


def autopilot(tmp_path, symptom: str, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([*NETSLEUTH, "diagnose", "--symptom", symptom, "--autopilot", "--duration", "2",
                           "--dst-ip", NOWHERE, "--report", str(tmp_path / "r"), "--sessions", str(tmp_path / "s"),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads((tmp_path / "r" / "report.json").read_text())


@pytest.mark.parametrize("symptom, first, instead", [
    ("high-latency", "system-latency-summary", "drop-summary"),
    ("ovs-slow", "ovs-upcall-summary", "drop-summary"),
])
def test_each_symptom_takes_what_can_run_and_says_what_it_could_not_measure(tmp_path, symptom, first, instead):
    proc, rep = autopilot(tmp_path, symptom)
    # Not "the first probe cannot run" (3): the alternative ran and found no cause (4).
    assert proc.returncode == 4, proc.stderr
    assert f"cannot run {first} here: needs kprobes" in proc.stderr
    assert f"instead, what can run here: " in proc.stderr and f"[{instead}]" in proc.stderr
    steps = [t for t in rep["timeline"] if t["kind"] == "step"]
    assert [(t["probe"], t["status"]) for t in steps[:2]] == [(first, "unavailable"), (instead, "ok")]
    assert steps[1]["params"].get("dst-ip") == NOWHERE
    c = rep["conclusion"]
    assert c["state"] == "open"
    (said,) = [x for x in c["not_measured"] if f"({first})" in x]
    assert "could not run here: needs kprobes" in said and "It would have added: " in said
    md = (tmp_path / "r" / "report.md").read_text()
    assert "### Not measured on this host" in md and said in md
    assert f"not measured: {said}" in proc.stderr
    assert our_bpf_programs() == []


def test_ovs_slow_takes_the_root_cause_probes_on_the_daemon_when_its_pid_is_known(tmp_path):
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.001)"])
    try:
        proc, rep = autopilot(tmp_path, "ovs-slow", "--ovs-pid", str(busy.pid))
    finally:
        busy.kill()
        busy.wait()
    assert proc.returncode in (0, 4), proc.stderr
    steps = [t for t in rep["timeline"] if t["kind"] == "step"]
    assert (steps[0]["probe"], steps[0]["status"]) == ("ovs-upcall-summary", "unavailable")
    assert (steps[1]["probe"], steps[1]["status"], steps[1]["params"]["pid"]) == ("cpu-burst", "ok", busy.pid)
    assert "instead, what can run here: Does ovs-vswitchd burst its CPU use? [cpu-burst]" in proc.stderr
    assert any("(ovs-upcall-summary) could not run here: needs kprobes" in x
               for x in rep["conclusion"]["not_measured"])


def test_the_vm_symptom_goes_from_a_clean_tap_to_what_can_run_instead_of_its_latency(tmp_path):
    """The tap first (no kprobe needed for its drops); when it drops nothing, the VM's latency
    Summary would be next: it cannot run here, the drops on the VM's path stand in for it."""
    from tests.netenv import TAP, open_tun

    with open_tun(TAP) as (tap, _fd):
        proc, rep = autopilot(tmp_path, "vm-network", "--vm-interface", tap)
    assert proc.returncode == 4, proc.stderr
    steps = [t for t in rep["timeline"] if t["kind"] == "step"]
    assert [(t["probe"], t["status"]) for t in steps[:2]] == [("tun-ring-monitor", "ok"), ("drop-summary", "ok")]
    assert steps[1]["params"]["device"] == tap  # the drops on the VM's path, not the host's


def test_the_vm_symptom_without_a_known_tap_runs_what_it_can(tmp_path):
    """No tap carries the address: the tap step is skipped, and the drops of the flow stand in."""
    proc, rep = autopilot(tmp_path, "vm-network")
    assert proc.returncode == 4, proc.stderr
    steps = [(t["probe"], t["status"]) for t in rep["timeline"] if t["kind"] == "step"]
    assert steps[0] == ("tun-ring-monitor", "skipped") and steps[1] == ("drop-details", "ok")
    assert "instead, what can run here" in proc.stderr
