"""virtnet-poll-monitor and virtio-rx-path-monitor on the lab guest's own virtio-net NIC
(tests/lab/virtio_checks.py, run in vm_checks.py's boot): packets and interrupts equal the NIC's
own counts, the budget runs out under a burst and never under a trickle; every UDP datagram a
socket received passed every RX stage in order, the filtered-out port none."""

from __future__ import annotations

import pytest

from tests.lab.expect import step_ok
from tests.lab.virtio_checks import CHECKS
from tests.test_guest_import import DATA

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


@pytest.fixture
def virtio(vmlab) -> dict:
    step_ok(vmlab, "virtio_setup")
    step_ok(vmlab, "virtio")
    return vmlab["virtio"]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_virtnet_poll_monitor_against_the_nic(virtio, check):
    check(virtio)


def test_the_shipped_records_are_that_check_s_shape(virtio):
    """tests/data/virtnet_records.json (the rules' tests) came from this check: same fields."""
    shipped = {frozenset(r) for name in ("trickle", "burst") for r in DATA[name]}
    assert {frozenset(r) for name in ("trickle", "burst") for r in virtio[name]["records"]} == shipped
