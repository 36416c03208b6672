"""A kprobe on ovs_dp_upcall counts exactly the upcalls that datapath flushes cause.

Ground truth: the datapath's own miss counter (`ovs-dpctl show`, "missed"),
and the ping itself: one echo request and one reply cross br-int per ping, so
each flush followed by one ping makes two upcalls."""

from __future__ import annotations

import pytest

from tests.lab.expect import step_ok

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


def test_no_upcalls_while_the_flow_is_cached(lab):
    step_ok(lab, "upcalls")
    up = lab["upcalls"]
    assert up["cached_replies"] == 5
    assert up["cached_kprobe"] == up["cached_missed"] == 0


def test_each_flush_costs_two_upcalls_per_ping(lab):
    step_ok(lab, "upcalls")
    up = lab["upcalls"]
    assert up["flushed_replies"] == up["flushes"]
    assert up["flushed_kprobe"] == up["flushed_missed"] == 2 * up["flushes"]
