"""Cumulative counters -> per-read growth (probes/runtime/counters.py).  The drivers that can
attach here are tested on real traffic in their own files (drop, qdisc, tun, futex, offcpu)."""

from __future__ import annotations

import ctypes as ct
import os
from types import SimpleNamespace

import pytest

from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.attach import FunctionHooks
from probes.runtime.counters import Deltas, per_cpu_total
from probes.runtime.kernel import KernelCaps
from probes.runtime.loader import load, unload
from probes.stage_latency import FIELDS
from probes.system_latency import SystemLatencySummary

CAPS = KernelCaps(release="t", btf=True, matching_headers=None, tracefs="/sys/kernel/tracing", kprobes=True,
                  raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)


def test_first_read_is_all_of_it_then_the_growth():
    d = Deltas()
    assert d.of("k", 5) == 5
    assert d.of("k", 5) == 0
    assert d.of("k", 12) == 7
    assert d.last("k") == 12 and d.last("other") is None


def test_several_counters_grow_field_by_field():
    d = Deltas()
    assert d.of(1, (10, 3)) == (10, 3)
    assert d.of(1, (15, 3)) == (5, 0)


def test_a_value_read_lower_does_not_rise():
    d = Deltas()
    assert d.rise("w", 10) == 10
    assert d.rise("w", 7) == 0  # read lower: kept at 10
    assert d.rise("w", 12) == 2


def test_a_forgotten_key_starts_afresh():
    d = Deltas()
    d.of(b"key", 40)
    d.forget(b"key")
    assert d.of(b"key", 2) == 2  # a reused key's new entry, not 2 - 40


def test_per_cpu_total_of_plain_counters_and_of_structs():
    assert per_cpu_total([1, 2, 3]) == 6
    assert per_cpu_total([SimpleNamespace(count=4), SimpleNamespace(count=1)]) == 5


# The kprobe-only probes' summaries, on their real maps (loaded, not attached: no kprobes here),
# counts written from user space as their programs would leave them: ground truth for the deltas.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _put(table, index: int, *per_cpu: int) -> None:
    """Per-CPU values of a per-CPU array slot (the CPUs not given: 0)."""
    values = list(per_cpu) + [0] * (table.total_cpu - len(per_cpu))
    table[ct.c_int(index)] = table.Leaf(*values[: table.total_cpu])


@pytest.mark.bpf
@needs_root
def test_upcall_summary_counts_what_the_maps_grew_by():
    probe = OvsUpcallSummary(caps=CAPS, proto="icmp")
    probe.bpf = load("ovs_upcall.bpf.c", probe.c_defines(), FIELDS)
    probe.hooks = FunctionHooks(probe.bpf, "auto")  # nothing attached: the maps are written by hand
    try:
        probe.start_reading()
        handlers = probe.bpf[b"handlers"]
        _put(probe.bpf[b"totals"], 0, 3, 2)  # 5 upcalls over two CPUs
        _put(probe.bpf[b"totals"], 1, 4)  # 4 answered
        _put(probe.bpf[b"slots"], 6, 4)  # 64-127 us
        handlers[handlers.Key(77)] = handlers.Leaf(4, 400_000, 120_000, b"handler1")
        first = probe.read()[0]
        assert (first["upcalls"], first["answered"], first["histogram"]["count"]) == (5, 4, 4)
        assert first["handlers"] == [{"tid": 77, "comm": "handler1", "upcalls": 4, "avg_us": 100.0,
                                      "max_us_since_start": 120.0}]
        _put(probe.bpf[b"totals"], 0, 3, 9)  # 7 more
        handlers[handlers.Key(77)] = handlers.Leaf(6, 1_000_000, 120_000, b"handler1")
        second = probe.read()[0]
        assert (second["upcalls"], second["answered"], second["histogram"]["count"]) == (7, 0, 0)
        assert [(h["upcalls"], h["avg_us"]) for h in second["handlers"]] == [(2, 300.0)]
    finally:
        unload(probe.bpf)


@pytest.mark.bpf
@needs_root
def test_stage_latency_summary_counts_what_the_maps_grew_by():
    probe = SystemLatencySummary(caps=CAPS, phy_interface="lo", protocol="icmp", direction="tx")
    stages, devices = probe.path()
    probe.stages = stages
    probe.bpf = load("stage_latency.bpf.c", probe.c_defines(stages, devices), FIELDS)
    try:
        probe.hooks = FunctionHooks(probe.bpf, "auto")  # nothing attached: the maps are written by hand
        probe.start_reading()
        hists = probe.bpf[b"hists"]
        key = hists.Key(0, 1, 4, 0)  # stage 0 -> 1, 16-31 us
        hists[key] = hists.Leaf(*([2] + [0] * (hists.total_cpu - 1)))
        _put(probe.bpf[b"counters"], 0, 3)  # started
        _put(probe.bpf[b"counters"], 1, 2)  # completed
        first = probe.read()[0]
        assert (first["packets_started"], first["packets_completed"]) == (3, 2)
        assert [(p["from"], p["to"], p["count"]) for p in first["pairs"]] == [(stages[0].label, stages[1].label, 2)]
        assert first["evicted_unfinished"] == 1  # 3 started, 2 completed, none in flight
        assert (first["attach"], first["hooks"], first["fentry_refused"]) == ("auto", {}, {})
        hists[key] = hists.Leaf(*([5] + [0] * (hists.total_cpu - 1)))
        second = probe.read()[0]
        assert (second["packets_started"], second["packets_completed"], second["evicted_unfinished"]) == (0, 0, 0)
        assert [p["count"] for p in second["pairs"]] == [3]
    finally:
        unload(probe.bpf)
