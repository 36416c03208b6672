"""The kprobe probes attached and detached hundreds of times under upcall traffic, and
killed at random moments: the guest's kernel stays healthy (the fixture fails on any
oops, BUG, hung task or RCU stall on its console) and nothing stays attached."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]  # the soak boot takes minutes


def test_every_cycle_ran_under_traffic(soaklab):
    assert soaklab["cycle_s"] is not None
    assert soaklab["upcalls_during_cycles"] > 10 * soaklab["cycles"], soaklab  # the hooks fired meanwhile
    assert set(soaklab["hooks"]["drop-summary"]) >= {"kfree_skb_reason", "consume_skb", "ovs_dp_upcall"}


def test_nothing_stays_attached(soaklab):
    assert soaklab["kprobes_after_cycles"] == []
    assert soaklab["kprobes_left"] == []


def test_killed_probes_leave_nothing(soaklab):
    assert len(soaklab["kill_runs"]) == soaklab["kills"]
    for run in soaklab["kill_runs"]:
        assert run["attached"], run
        assert run["kprobes_left"] == [], run
