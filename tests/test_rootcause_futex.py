"""futex on real threads with a known number of futex calls.

Two threads make N FUTEX_WAIT calls each at the same time (on the two CPUs), a
third makes M FUTEX_WAKE calls: the counts must be exact (BCC's increment()
loses counts under exactly this kind of concurrency).  Each wait times out
after 1 ms, so a thread's total wait lies between N x 1 ms and what the program
itself spent in the loop (which contains the waits).
"""

from __future__ import annotations

import signal
import time

import pytest

from probes.futex import Futex
from tests.netenv import ProbeProcess
from tests.rootcause_support import (Target, assert_documented, bpf_watch, requires_root, run_for,  # noqa: F401
                                     target_binary)

pytestmark = [pytest.mark.bpf, requires_root]

WAITS, WAKES = 300, 137


def _per_thread(records):
    """Sum the per-interval rows by thread id."""
    out: dict[int, dict] = {}
    for r in records:
        assert r["type"] == "futex"
        assert_documented(r)
        for t in r["threads"]:
            acc = out.setdefault(t["tid"], {"comm": t["comm"], "wait_count": 0, "wait_total_us": 0,
                                            "wait_timeouts": 0, "wake_count": 0, "woken": 0})
            for k in ("wait_count", "wait_total_us", "wait_timeouts", "wake_count", "woken"):
                acc[k] += t[k]
    return out


def test_exact_counts_per_thread(target_binary, bpf_watch):
    with Target(target_binary, "futex", str(WAITS), str(WAKES)) as t:
        with Futex(pid=str(t.pid), interval="0.5") as probe:
            bpf_watch.snapshot()
            t.start()
            started = time.monotonic()
            truth = t.truth()
            loop_s = time.monotonic() - started
            run_for(probe, 0.2)
            records = probe.read()
    threads = _per_thread(records)
    for name in ("waiter1", "waiter2"):
        w = threads[t.tids[name]]
        assert w["comm"] == name
        assert w["wait_count"] == WAITS and w["wake_count"] == 0
        # Every wait timed out (the program counted ETIMEDOUT itself).
        assert w["wait_timeouts"] == truth["timeouts"][int(name[-1]) - 1]
        assert WAITS * 1000 <= w["wait_total_us"] <= loop_s * 1e6
    waker = threads[t.tids["waker"]]
    assert waker["wake_count"] == WAKES and waker["wait_count"] == 0 and waker["woken"] == 0
    # Nothing from other processes.
    assert all(r["pid"] == t.pid for r in records)


def test_per_interval_rows_and_average(target_binary, bpf_watch):
    with Target(target_binary, "futex", str(WAITS), "0") as t:
        with Futex(tid=str(t.tids["waiter1"]), interval="0.2") as probe:
            bpf_watch.snapshot()
            t.start()
            t.truth()
            records = []
            for _ in range(4):  # the reads split the run into intervals
                run_for(probe, 0.1)
                records += probe.read()
    rows = [row for r in records for row in r["threads"]]
    # --tid: only that thread.
    assert {row["tid"] for row in rows} == {t.tids["waiter1"]}
    assert sum(row["wait_count"] for row in rows) == sum(row["waits_ended"] for row in rows) == WAITS
    for row in rows:
        assert row["wait_avg_us"] >= 1000  # each wait times out after 1 ms
        assert 0 < row["wait_ms_per_s"] <= 1000


def test_a_long_wait_counts_in_each_interval_it_spans(target_binary, bpf_watch):
    """One 1.5 s FUTEX_WAIT per waiter, read every 0.3 s: each read while it lasts shows the
    part of the wait in that interval (so at most 1000 ms/s) and how long it has lasted; the
    parts add up to the whole wait, which lies between the 1.5 s timeout and what the program
    spent in the call (measured around it, with the start handshake: +0.3 s)."""
    with Target(target_binary, "futex", "1", "0", "1500") as t:
        with Futex(tid=str(t.tids["waiter1"])) as probe:
            bpf_watch.snapshot()
            t.start()
            started = time.monotonic()
            records = []
            while not t.has_output(0):
                run_for(probe, 0.3)
                records += probe.read()
            elapsed_us = (time.monotonic() - started) * 1e6
            t.truth()
            run_for(probe, 0.1)
            records += probe.read()
    rows = [(r["interval_s"], row) for r in records for row in r["threads"]]
    assert len(rows) >= 4, records  # 1.5 s in 0.3 s reads
    for interval_s, row in rows:
        assert row["wait_total_us"] <= interval_s * 1e6 + 1000, row  # never more than the interval (+1 ms)
        assert row["wait_ms_per_s"] <= 1001
    ongoing = [row for _, row in rows if row["waiting_us"] is not None]
    assert len(ongoing) >= 3
    assert [row["waiting_us"] for row in ongoing] == sorted(row["waiting_us"] for row in ongoing)
    # A whole interval inside the wait shows about a full second per second.
    assert any(row["wait_ms_per_s"] >= 900 for _, row in rows[1:-1])
    assert sum(row["wait_count"] for _, row in rows) == sum(row["waits_ended"] for _, row in rows) == 1
    (ended,) = [row for _, row in rows if row["waits_ended"]]
    assert ended["wait_avg_us"] >= 1_500_000 and ended["wait_timeouts"] == 1
    assert 1_500_000 <= sum(row["wait_total_us"] for _, row in rows) <= min(ended["wait_avg_us"] + 1000, elapsed_us)
    for r in records:
        assert_documented(r)


def test_cli_json(target_binary, bpf_watch):
    with Target(target_binary, "futex", "50", "20") as t:
        cli = ProbeProcess("futex", "-p", str(t.pid), "-i", "0.3", "--json")
        try:
            bpf_watch.snapshot(cli.proc.pid)
            t.start()
            t.truth()
            time.sleep(0.4)
        finally:
            records = cli.stop(signal.SIGINT)
    assert cli.returncode == 0, cli.stderr
    threads = _per_thread(records)
    assert threads[t.tids["waiter1"]]["wait_count"] == 50
    assert threads[t.tids["waker"]]["wake_count"] == 20
    for r in records:
        assert_documented(r)
