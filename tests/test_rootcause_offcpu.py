"""offcpu on a real thread that sleeps known amounts (30, 60, 120 ms).

Tolerances: a block runs from the switch-out (just after the sleep's timer is
armed) to the switch-in (after it fired and the thread got a CPU back), so it
lies inside the interval the program measures around nanosleep itself: the
probe's duration is at most the program's measurement (+0.1 ms for the two
clock reads' rounding), and at least the requested time minus 1 ms (the
syscall entry before the switch-out takes microseconds).
"""

from __future__ import annotations

import time

import pytest

from probes.offcpu import OffCpu
from tests.netenv import ProbeProcess
from tests.rootcause_support import (Target, assert_documented, bpf_watch, requires_root, run_for,  # noqa: F401
                                     target_binary, target_binary_without_frame_pointers)

pytestmark = [pytest.mark.bpf, requires_root]

SLEEP_FRAMES = ("do_nanosleep", "hrtimer_nanosleep")


def _sleeper_blocks(records, tid):
    """The known sleeps: blocks in nap_ms (the 2-5 ms polls around them can exceed the
    10 ms threshold when the shared CPUs are busy, so the stack tells them apart)."""
    blocks = [r for r in records if r["tid"] == tid and any("nap_ms" in f for f in r["user_stack"])]
    return sorted(blocks, key=lambda r: r.get("ktime_ns", 0))


def _check_blocks(blocks, truth):
    assert [b["state"] for b in blocks] == ["S", "S", "S"]
    for block, requested_ms, slept_us in zip(blocks, truth["requested_ms"], truth["slept_us"]):
        assert requested_ms * 1000 - 1000 <= block["duration_us"] <= slept_us + 100, (block, truth)


@pytest.mark.parametrize("attach", ["raw-tracepoint", "tracepoint"])
def test_blocks_match_known_sleeps(target_binary, bpf_watch, attach):
    with Target(target_binary, "sleep") as t:
        tid = t.tids["sleeper"]
        with OffCpu(tid=str(tid), min_block_us="10000", attach=attach) as probe:
            bpf_watch.snapshot()
            t.start()
            truth = t.truth()
            run_for(probe, 0.3)
            records = probe.read()
    blocks = _sleeper_blocks(records, tid)
    assert len(blocks) == 3, records
    _check_blocks(blocks, truth)
    for b in blocks:
        assert_documented(b)
        assert b["type"] == "offcpu_block" and b["comm"] == "sleeper" and b["pid"] == t.pid
        assert b["blocked_in"] == "do_nanosleep", b["kernel_stack"]
        functions = " ".join(b["kernel_stack"])
        assert all(f in functions for f in SLEEP_FRAMES), b["kernel_stack"]
        assert "schedule" in b["kernel_stack"][0], "probe frames must be cut from the kernel stack"
        # Our frames (built with frame pointers) are there, up to the thread's start.
        user = b["user_stack"]
        assert "clock_nanosleep" in user[0] and "sleeper_main" in user[2] and "start_thread" in user[-1], user
        # ... but libc's clock_nanosleep keeps no frame pointer, so its caller (libc's
        # nanosleep) is skipped: the probe must say so instead of hiding it.
        assert not any(f.startswith(("nanosleep", "__nanosleep", "__GI___nanosleep")) for f in user), user
        assert b["user_stack_truncated"] is True
        assert "clock_nanosleep" in b["user_stack_note"] and "frame pointer" in b["user_stack_note"]
        assert b["stack"] == b["kernel_stack"] + b["user_stack"]
    # Only the thread asked for.
    assert {r["tid"] for r in records} == {tid}


def test_says_when_user_stack_stops_short(target_binary_without_frame_pointers, bpf_watch):
    """No frame pointers anywhere (as in Debian's libc and most packaged programs):
    the walk stops after a frame or two; the probe must say so, and must not
    print the junk the walk read as frames."""
    with Target(target_binary_without_frame_pointers, "sleep") as t:
        tid = t.tids["sleeper"]
        with OffCpu(tid=str(tid), min_block_us="25000") as probe:
            bpf_watch.snapshot()
            t.start()
            truth = t.truth()
            run_for(probe, 0.3)
            records = probe.read()
    blocks = sorted((r for r in records if r["tid"] == tid), key=lambda r: r["ktime_ns"])
    assert len(blocks) == 3, records
    _check_blocks(blocks, truth)
    for b in blocks:
        assert b["user_stack_truncated"] is True
        assert "clock_nanosleep" in b["user_stack"][0] and len(b["user_stack"]) <= 2, b["user_stack"]
        assert "sleeper_main" not in " ".join(b["user_stack"])
        assert all("[" in f for f in b["user_stack"]), "every frame kept is in a known module"
        assert b["user_stack_note"].startswith("user stack incomplete: ")
        assert "frame pointer" in b["user_stack_note"]


def test_aggregate_totals_by_stack(target_binary, bpf_watch):
    with Target(target_binary, "sleep") as t:
        tid = t.tids["sleeper"]
        with OffCpu(pid=str(t.pid), min_block_us="10000", aggregate=True) as probe:
            bpf_watch.snapshot()
            t.start()
            truth = t.truth()
            run_for(probe, 0.3)
            records = probe.read()
    assert all(r["type"] == "offcpu_stack" for r in records)
    for r in records:
        assert_documented(r)
    # The three sleeps share one stack.
    (naps,) = _sleeper_blocks(records, tid)
    assert naps["count"] == 3, records
    assert naps["state"] == "S" and naps["blocked_in"] == "do_nanosleep"
    assert sum(truth["requested_ms"]) * 1000 - 3000 <= naps["total_us"] <= sum(truth["slept_us"]) + 300
    assert 119_000 <= naps["max_us"] <= truth["slept_us"][2] + 100
    assert all(f in " ".join(naps["stack"]) for f in SLEEP_FRAMES) and naps["comm"] == "sleeper"
    assert records == sorted(records, key=lambda r: -r["total_us"])


def test_cli_json_one_object_per_block(target_binary, bpf_watch):
    with Target(target_binary, "sleep") as t:
        tid = t.tids["sleeper"]
        cli = ProbeProcess("offcpu", "-p", str(t.pid), "--tid", str(tid), "--min-block-us", "10000", "--json")
        try:
            bpf_watch.snapshot(cli.proc.pid)
            t.start()
            truth = t.truth()
            time.sleep(0.5)  # the last block reaches the CLI's stream
        finally:
            records = cli.stop()
    assert cli.returncode == 0, cli.stderr
    blocks = _sleeper_blocks(records, tid)
    assert len(blocks) == 3, records
    _check_blocks(blocks, truth)
    for b in blocks:
        assert_documented(b)
        assert {"tid", "comm", "duration_us", "stack", "time", "user_stack_truncated"} <= set(b)
        assert b["comm"] == "sleeper" and isinstance(b["stack"], list) and b["stack"]


@pytest.mark.parametrize("attach", ["raw-tracepoint", "tracepoint"])
def test_threads_that_exit_leave_no_entry_behind(target_binary, bpf_watch, attach):
    """A thread's last switch-out (it is dead) is never followed by a switch-in: if the probe
    stamped it, every exited thread would keep a slot until the table is full and blocks go
    uncounted.  300 threads start and end one after the other."""
    with Target(target_binary, "churn", "300") as t:
        with OffCpu(pid=str(t.pid), attach=attach) as probe:
            bpf_watch.snapshot()
            t.start()
            assert t.truth()["spawned"] == 300
            run_for(probe, 0.2)
            probe.read()
            # What is left: at most the live threads blocked right now (main, spawner, none of the 300).
            stamped = {k.value for k in probe.bpf[b"start"].keys()}
            assert len(stamped) <= 2 and stamped <= {t.pid, t.tids["spawner"]}, stamped


class OffCpuTinyTable(OffCpu):
    """The probe with room for one blocked thread only: the second one cannot be timed."""

    MAX_THREADS = 1


def test_blocks_not_timed_are_counted_and_said(target_binary, bpf_watch):
    # In "blocks" mode two threads wait at the same time (holder sleeps holding the mutex,
    # blocker waits for it): one of the two has no slot.
    with Target(target_binary, "blocks", "lock:100") as t:
        with OffCpuTinyTable(pid=str(t.pid), min_block_us="50000") as probe:
            bpf_watch.snapshot()
            t.start()
            t.truth()
            run_for(probe, 0.2)
            records = probe.read()
    uncounted = [r for r in records if r["type"] == "uncounted"]
    assert len(uncounted) == 1 and uncounted[0]["count"] >= 1, records
    assert_documented(uncounted[0])
    assert "table was full" in probe.format_text(uncounted[0])
