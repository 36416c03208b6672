"""Root, not symptom, on the real kernel: the root-cause steps of the ovs-slow playbook, run by
the autopilot against tests/rootcause_target.c standing in for ovs-vswitchd (its pid given as
--ovs-pid), tell CPU starvation by a quota, CPU contention with another task and lock
contention by a running holder apart, and name each with the kernel's and the target's own
numbers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from playbooks import load_library
from probes.registry import PROBES
from probes.cpu_starvation import CpuStarvation
from tests.rootcause_support import (QuotaCgroup, Target, assert_documented, bpf_watch, busy_loop,  # noqa: F401
                                     requires_root, run_for, target_binary)
from wizard.autopilot import EXIT_CAUSE, run_autopilot
from wizard.backends import LiveBackend

pytestmark = [pytest.mark.bpf, requires_root]


def autopilot(tmp: Path, pid: int, start: str, duration: float, max_steps: int = 6) -> tuple[int, dict, list[str]]:
    lines: list[str] = []
    result = run_autopilot(load_library(probes=PROBES), LiveBackend(), "ovs-slow", {"ovs_pid": pid}, str(tmp / "report"),
                           duration=duration, sessions=str(tmp / "s"), max_steps=max_steps, log=lines.append,
                           start=start)
    return result.exit_code, json.loads((tmp / "report" / "report.json").read_text()), lines


def results_of(report: dict, probe: str) -> list[dict]:
    return [t for t in report["timeline"] if t["kind"] == "step" and t["probe"] == probe]


def finding(report: dict, rule: str) -> dict:
    return next(f for f in report["findings"] if f["rule"] == rule)


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.kill()
        p.wait()


@contextlib.contextmanager
def handlers_under_quota(tmp: Path, binary: Path, quota_us: int):
    """The target's handlers and a busy loop in one cgroup with ``quota_us`` per 100 ms, started;
    yields (cgroup, target); both processes are killed at the end (the handlers would run on)."""
    with QuotaCgroup(quota_us, 100000) as cg, Target(binary, "handlers", "90") as t:
        hog = busy_loop("nslquotahog", tmp)
        try:
            cg.add(hog.pid)
            cg.add(t.pid)
            t.start()
            yield cg, t
        finally:
            stop(hog, t.proc)


def test_a_cpu_quota_is_named_not_the_lock_waits_it_causes(tmp_path, target_binary):  # noqa: F811
    """Handlers sharing a mutex in a cgroup at 10 % of a CPU with a busy loop: the quota is
    the root (throttled N of M periods, as its cpu.stat counts), the lock waits its symptom."""
    with handlers_under_quota(tmp_path, target_binary, 10000) as (cg, t):
        before = cg.stat()
        code, report, lines = autopilot(tmp_path, t.pid, "ovs-slow/offcpu", 3)
        after = cg.stat()
    assert code == EXIT_CAUSE, "\n".join(lines)
    causes = [f for f in report["findings"] if f["explains"]]
    assert causes[0]["rule"] == "cpu-quota-throttled", [f["rule"] for f in report["findings"]]
    # Lock contention is never the root here.
    assert not {f["rule"] for f in causes} & {"lock-held-long", "revalidator-holds-lock"}
    quota = finding(report, "cpu-quota-throttled")["evidence"]
    assert (quota["quota_us"], quota["period_us"], quota["quota_cgroup"]) == (10000, 100000, cg.path)
    assert quota["cgroup_version"] == cg.version
    # The kernel's own counters, read around the whole walk, bracket what the probe counted.
    periods, throttled = after["nr_periods"] - before["nr_periods"], after["nr_throttled"] - before["nr_throttled"]
    assert 10 <= quota["nr_periods"] <= periods and quota["nr_throttled"] <= throttled
    assert throttled / periods > 0.8 and quota["nr_throttled"] / quota["nr_periods"] > 0.8
    assert f"{quota['nr_throttled']} of {quota['nr_periods']} periods throttled" in report["conclusion"]["summary"]
    # Runnable, not running: a handler waited for a CPU most of a period at least once.
    assert quota["max_wait_us"] >= 20000
    assert report["conclusion"]["chain"][0].startswith(f"the CPU quota of {cg.path}")
    # The chain goes through the handlers (the threads upcalls wait for), not the longest waiter.
    assert report["conclusion"]["chain"][1].startswith("handler") and "waits up to" in report["conclusion"]["chain"][1]


def test_b_cpu_contention_names_the_task_on_the_cpu(tmp_path, target_binary):  # noqa: F811
    """No quota; a hog at nice -19 pinned to the CPU the handlers are pinned to: contention,
    and the task named is the hog (its pid and name, as the test started it)."""
    cpu = max(os.sched_getaffinity(0))
    with Target(target_binary, "handlers", "90") as t:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(t.pid)], check=True, capture_output=True)
        hog = busy_loop("nslcpuhog", tmp_path, cpu=cpu, nice=-19)
        try:
            t.start()
            code, report, lines = autopilot(tmp_path, t.pid, "ovs-slow/cpu-starvation", 4, max_steps=1)
        finally:
            stop(hog, t.proc)
    assert code == EXIT_CAUSE, "\n".join(lines)
    cause = next(f for f in report["findings"] if f["explains"])
    assert cause["rule"] == "cpu-contention", [f["rule"] for f in report["findings"]]
    top = cause["evidence"]["ran_instead"][0]
    assert (top["pid"], top["comm"], top["idle"]) == (hog.pid, "nslcpuhog", False)
    assert f"nslcpuhog (pid {hog.pid}) ran" in cause["title"]
    assert any("taskset" in a for a in cause["advice"])
    assert cause["evidence"]["quota_us"] is None


def test_c_a_lock_held_by_a_running_thread_is_lock_contention(tmp_path, target_binary):  # noqa: F811
    """The holder computes 300 ms with the lock held, 12 times: lock contention, the holder
    named, and shown to have run (not waited for a CPU) while holding."""
    # Its own session at autogroup nice -10: on a loaded host the holder still gets its CPU.
    with Target(target_binary, "spinhold", "300", "12", autogroup_nice=-10) as t:
        starter = threading.Timer(0.5, t.start)  # the rounds go on while the probe attaches and runs
        starter.start()
        try:
            code, report, lines = autopilot(tmp_path, t.pid, "ovs-slow/pthread-lock", 6, max_steps=1)
        finally:
            starter.join()
        truth = t.truth(timeout=60)
    assert code == EXIT_CAUSE, "\n".join(lines)
    cause = next(f for f in report["findings"] if f["explains"])
    assert cause["rule"] == "lock-held-long", [f["rule"] for f in report["findings"]]
    ev = cause["evidence"]
    assert (ev["holder_tid"], ev["holder_comm"], ev["lock"]) == (t.tids["holder"], "holder", truth["lock"])
    assert ev["waiter_tid_values"] == [t.tids["waiter"]]
    holds = [h for h in truth["hold_us"] if h > 0]
    assert min(holds) * 0.9 <= ev["max_holder_hold_us"] <= max(holds) * 1.1 + 5000
    # It ran while holding: more of its holds on a CPU than waiting for one.
    assert ev["total_holder_on_cpu_us"] > ev["total_holder_runq_us"]
    assert ev["total_holder_on_cpu_us"] + ev["total_holder_runq_us"] <= ev["total_holder_hold_us"] * 1.05
    assert 100000 <= ev["max_wait_us"] <= max(truth["wait_us"]) * 1.1 + 5000
    assert "holder (" in cause["title"] or "held by holder" in cause["title"]


def test_records_are_documented_and_count_each_interval(tmp_path, target_binary, bpf_watch):  # noqa: F811
    """The probe on its own: every record as docs/output-root-cause.md lists it; the intervals'
    throttled periods add up to the run's, within what cpu.stat counted around it."""
    with handlers_under_quota(tmp_path, target_binary, 20000) as (cg, t):
        before = cg.stat()
        with CpuStarvation(pid=str(t.pid), interval="0.5") as probe:
            bpf_watch.snapshot()
            records = []
            for _ in range(4):
                run_for(probe, 0.5)
                records += probe.read()
        after = cg.stat()
    for r in records:
        assert_documented(r)
    last = records[-1]
    assert (last["quota_us"], last["period_us"], last["quota_cpus"]) == (20000, 100000, 0.2)
    assert sum(r["interval_nr_periods"] for r in records) == last["nr_periods"]
    assert sum(r["interval_nr_throttled"] for r in records) == last["nr_throttled"]
    assert 0 < last["nr_throttled"] <= last["nr_periods"] <= after["nr_periods"] - before["nr_periods"]
    handlers = {th["comm"]: th for th in last["threads"] if th["comm"].startswith("handler")}
    assert {th["tid"] for th in handlers.values()} <= set(t.tids.values()) and handlers
    for th in handlers.values():
        assert sum(b["count"] for b in th["buckets"]) == th["count"] and th["max_us"] <= th["total_us"]
