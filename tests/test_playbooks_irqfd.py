"""The irqfd rules (rules-virt.yaml) judging records kvm-irqfd-stats-summary printed in the
lab against a real nested VM (tests/data/kvm_irqfd_lab.json, from tests/lab/vm_checks_kvm.py):
its QEMU stopped for 200 ms, a control run, and a run with no VM.  The faults the lab cannot
make (a stale MSI route, an INTx line) are those records with one counter changed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from playbooks import Accumulator, Walk, load_library
from probes.registry import PROBES

LIB = load_library(probes=PROBES)
LAB = json.loads((Path(__file__).resolve().parent / "data" / "kvm_irqfd_lab.json").read_text())
PROBE = "kvm-irqfd-stats-summary"


def findings(records: list[dict]):
    acc = Accumulator(PROBE, LIB.probes[PROBE].merge)
    acc.add(records)
    w = Walk(LIB, {"vm_pid": LAB["qemu_pid"]}, start=f"vm-network/{PROBE}")
    return w.complete("ok", acc.result(30.0))


def test_a_stopped_vcpu_is_named_with_its_wait():
    found = findings(LAB["stopped"]["records"])
    stalled = [f for f in found if f.rule == "irqfd-stalled-vcpu"]
    # Both queues had an interrupt pending across the stop (198 ms and 59 ms measured).
    lines = sorted((e for e in LAB["stopped"]["records"][0]["entries"] if e["max_us"] >= 50_000),
                   key=lambda e: -e["max_us"])
    assert lines and {f.evidence["name"] for f in stalled} == {e["name"] for e in lines}
    assert max(f.evidence["max_max_us_since_start"] for f in stalled) == lines[0]["max_us"] >= 0.9e3 * 200
    assert stalled[0].explains and found[0].rule == "irqfd-stalled-vcpu", [f.rule for f in found]
    assert f"top -H -p {LAB['qemu_pid']}" in " ".join(stalled[0].advice)


def test_without_the_stop_no_stall_but_tcgs_slow_tail_shows():
    rules = [f.rule for f in findings(LAB["control"]["records"])]
    assert "irqfd-stalled-vcpu" not in rules
    # TCG-nested: a few ms per injection, P99.9 above 1 ms on both lines
    assert rules.count("irqfd-slow") == len(LAB["control"]["records"][0]["entries"]), rules
    assert not {"irqfd-no-interrupt", "irqfd-slow-path", "irqfd-coalesced", "irqfd-no-signals"} & set(rules)


def test_intervals_add_up_per_line():
    acc = Accumulator(PROBE, LIB.probes[PROBE].merge)
    acc.add(LAB["control"]["records"] + LAB["stopped"]["records"])
    result = acc.result(30.0)
    entries = {e["name"]: e for e in result["entries"]}
    for name, e in entries.items():
        parts = [x for r in LAB["control"]["records"] + LAB["stopped"]["records"] for x in r["entries"]
                 if x["name"] == name]
        for field in ("signals", "fast_path", "injected", "coalesced"):
            assert e[field] == sum(p[field] for p in parts), field
        assert e["count"] == sum(p["count"] for p in parts)
        assert e["max_max_us_since_start"] == max(p["max_us_since_start"] for p in parts)
    assert result["signals"] == sum(r["signals"] for r in LAB["control"]["records"] + LAB["stopped"]["records"])


@pytest.mark.parametrize("field,rule,level", [
    ("no_target", "irqfd-no-interrupt", "warning"),
    ("slow_path", "irqfd-slow-path", "notice"),
    ("coalesced", "irqfd-coalesced", "notice"),
])
def test_path_counters_each_make_their_finding(field, rule, level):
    records = copy.deepcopy(LAB["control"]["records"])
    entry = records[0]["entries"][0]
    entry[field] = 3
    (f,) = [f for f in findings(records) if f.rule == rule]
    assert f.level == level and f.evidence["name"] == entry["name"] and f.evidence[field] == 3
    assert f.title.startswith("3 ")


def test_a_run_without_irqfd_signals_says_so():
    assert [f.rule for f in findings(LAB["idle"]["records"])] == ["irqfd-no-signals"]
    assert "irqfd-no-signals" not in [f.rule for f in findings(LAB["control"]["records"])]
