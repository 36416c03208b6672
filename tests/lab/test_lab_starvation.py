"""Issue 13's CPU scenarios on the real ovs-vswitchd (tests/lab/starvation_checks.py): the
autopilot, from the packet-loss symptom with the flow's filters and the loss a 200 ms
monitor counted, names a CPU quota, a task on ovs-vswitchd's CPU, or nothing (the
control), against the kernel's cpu.stat, the hog's pid and the pinger's round trips.
Results under ``lab["starvation"]``; each check also runs on a saved dev-loop result:
``python3 -m tests.lab.test_lab_starvation /tmp/starve/starvation.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.lab.expect import run_checks, step_ok
from tests.lab.starvation_checks import HOG_COMM, HOG_SPIN_S, MONITOR_LATE, QUOTA_PCT
from wizard.autopilot import EXIT_CAUSE, EXIT_NO_CAUSE

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]
LOCK_ROOTS = {"lock-held-long", "revalidator-holds-lock"}
CPU_RULES = {"cpu-quota-throttled", "cpu-contention", "handlers-runnable-not-running", "threads-runnable-not-running",
             "cpu-starved"}


def causes(run: dict) -> list[dict]:
    return [f for f in run["findings"] if f["explains"]]


def rules(run: dict) -> list[str]:
    return [f["rule"] for f in run["findings"]]


def handler_wait_us(run: dict) -> int:
    """The longest wait for a CPU the probe measured in a handler thread (tids from /proc)."""
    return max((us for tid, us in run["waited_us"].items() if int(tid) in run["handler_tids"]), default=0)


def check_chain_through_handlers(run: dict) -> None:
    """Root → the handlers runnable, not running (the threads upcalls wait for) → late upcalls."""
    chain = run["conclusion"]["chain"]
    name, tid = chain[1].split(" waits up to")[0].split()
    assert name.startswith("handler") and int(tid.strip("()")) in run["handler_tids"], chain
    assert chain[2].startswith("upcalls wait up to"), chain


def check_fault_showed(run: dict) -> None:
    """The scenario's precondition: the monitor counted late replies before the walk."""
    assert run["reported_loss"] >= MONITOR_LATE, (
        f"the scenario made {run['reported_loss']} pings late in {run['monitor_s']} s", run["pings"])


def check_late_not_lost(run: dict) -> None:
    """The monitor counted late replies as lost; the kernel dropped none of them, and the
    conclusion says so before it names the cause."""
    p = run["pings"]
    assert run["reported_loss"] > 0 and p["late"] > 0, p
    # the fault lifted before the last replies are waited for; "lost": upcalls the kernel lost
    assert p["answered"] >= p["sent"] - 3, (p, run.get("upcalls"))
    assert run["conclusion"]["summary"].startswith(
        f"0 of the {run['reported_loss']} packets reported lost are real drops"), run["conclusion"]
    assert "latency-not-loss" in rules(run)
    assert run["conclusion"]["chain"][-1].endswith("were late, not lost"), run["conclusion"]["chain"]


def no_step_repeated(run: dict) -> bool:
    ran = [(s["probe"], json.dumps(s["params"], sort_keys=True)) for s in run["steps"] if s["status"] == "ok"]
    return len(ran) == len(set(ran))


def check_quota(lab: dict) -> None:
    run = lab["starvation"]["quota"]
    check_fault_showed(run)
    assert run["returncode"] == EXIT_CAUSE and "Traceback" not in run["stderr"], run["stderr"]
    truth = run["truth"]  # cpu.stat of the cgroup, read around the whole walk
    assert truth["nr_periods"] >= 10 and truth["nr_throttled"] / truth["nr_periods"] > 0.8, truth
    assert causes(run)[0]["rule"] == "cpu-quota-throttled", rules(run)
    assert not {f["rule"] for f in causes(run)} & LOCK_ROOTS, rules(run)
    ev = causes(run)[0]["evidence"]
    assert (ev["quota_us"], ev["period_us"], ev["quota_cgroup"]) == (
        QUOTA_PCT * 1000, 100000, run["cgroup"]), ev
    assert [str(ev["quota_us"]), str(ev["period_us"])] == run["cpu_max"]
    assert 0 < ev["nr_throttled"] <= truth["nr_throttled"] and 10 <= ev["nr_periods"] <= truth["nr_periods"], ev
    assert ev["nr_throttled"] / ev["nr_periods"] > 0.8, ev
    # The handlers, runnable but throttled: at least one waited half a period for a CPU.
    assert handler_wait_us(run) >= 50000, run["waited_us"]
    summary = run["conclusion"]["summary"]
    assert f"{ev['nr_throttled']} of {ev['nr_periods']} periods throttled" in summary, summary
    assert run["conclusion"]["chain"][0].startswith(f"the CPU quota of {run['cgroup']}"), run["conclusion"]["chain"]
    check_chain_through_handlers(run)
    assert any(f"/sys/fs/cgroup{run['cgroup']}/cpu.max" in fix for fix in run["conclusion"]["fixes"])
    check_late_not_lost(run)


def check_contention(lab: dict) -> None:
    run, hog = lab["starvation"]["contention"], lab["starvation"]["contention"]["hog"]
    check_fault_showed(run)
    assert run["returncode"] == EXIT_CAUSE and "Traceback" not in run["stderr"], run["stderr"]
    assert causes(run)[0]["rule"] == "cpu-contention", rules(run)
    assert not {f["rule"] for f in causes(run)} & (LOCK_ROOTS | {"cpu-quota-throttled"}), rules(run)
    ev = causes(run)[0]["evidence"]
    assert ev["quota_us"] is None
    top = ev["ran_instead"][0]
    assert (top["pid"], top["comm"], top["idle"]) == (hog["pid"], HOG_COMM, False), ev["ran_instead"]
    assert f"{HOG_COMM} (pid {hog['pid']}) ran" in causes(run)[0]["title"]
    assert any(f"taskset -a -p -c OTHER_CPUS {hog['pid']}" in a for a in causes(run)[0]["advice"])
    # A handler waited for the hog's spin, which bounds the wait (plus TCG's slack).
    assert 20000 <= handler_wait_us(run) <= HOG_SPIN_S * 2e6, run["waited_us"]
    assert run["conclusion"]["chain"][0].startswith(f"{HOG_COMM} (pid {hog['pid']}) runs on the CPU"), run["conclusion"]
    check_chain_through_handlers(run)
    check_late_not_lost(run)


def check_control(lab: dict) -> None:
    run = lab["starvation"]["control"]
    assert run["returncode"] == EXIT_NO_CAUSE and "Traceback" not in run["stderr"], run["stderr"]
    assert run["reported_loss"] == 0 and run["pings"]["answered"] == run["pings"]["sent"], run["pings"]
    assert run["flushes"] > 10
    assert causes(run) == [] and not run["conclusion"]["cause_found"], rules(run)
    assert not set(rules(run)) & CPU_RULES, rules(run)
    assert run["steps"][0]["probe"] == "drop-summary" and "no-drops" in rules(run)
    assert no_step_repeated(run), run["steps"]


def check_walks(lab: dict) -> None:
    for name in ("quota", "contention", "control"):
        assert no_step_repeated(lab["starvation"][name]), (name, lab["starvation"][name]["steps"])


CHECKS = (check_quota, check_contention, check_control, check_walks)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_starvation(lab, check):
    step_ok(lab, "starvation")
    check(lab)


if __name__ == "__main__":
    results = json.loads(Path(sys.argv[1]).read_text())
    rounds = sorted(k for k in results if k.startswith("starvation"))  # the dev loop's rounds
    sys.exit(1 if sum(run_checks(CHECKS, {**results, "starvation": results[k]}, k) for k in rounds) else 0)
