"""The VM path against a real nested VM with vhost-net (tests/lab/vm_checks.py): each
probe's figures against the tap's and the VM's own counters."""

from __future__ import annotations

import warnings

import pytest

from tests.lab.expect import step_ok
from tests.lab.test_lab_vm_vhost import SLACK_MS
from tests.lab.vm_checks import AUTOPILOT_PING_S
from tests.lab.vm_checks_vhost import HOG_CPU, HOG_MS

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]  # the VM boot of the lab takes minutes


def ring_records(vmlab: dict, phase: str, twin: bool = False) -> list[dict]:
    p = vmlab["tun_ring"][phase]
    probe, prefix = ("tun-ring-monitor --attach kprobe", "twin_") if twin else ("tun-ring-monitor", "")
    records = vmlab["probes"][probe]["records"]
    return [r for r in records[p[prefix + "records_from"]:p[prefix + "records_to"]] if r["type"] == "tun_ring"]


def test_the_nested_vm_runs_with_vhost(vmlab):
    vm = vmlab["vm"]
    for failure in vm.get("failed_boots", []):  # tried again and booted: say so in the summary
        warnings.warn(f"the nested VM booted at a later attempt; an earlier one: {failure[-1500:]}")
    assert vm["vhost_tids"], "no vhost worker: the VM's net device is not served by vhost-net"
    assert vm["vcpu_tids"], vm


def test_ring_overflow_drops_equal_the_taps_counter(vmlab):
    o = vmlab["tun_ring"]["overflow"]
    records = ring_records(vmlab, "overflow")
    assert o["tx_dropped"] > 0, o
    assert o["tx_dropped"] + o["vm_received"] == o["count"], o  # every datagram dropped or received
    assert sum(r["drops"] for r in records) == o["tx_dropped"], (o, records)
    assert sum(r["full_ring_drops"] for r in records) == o["tx_dropped"]
    assert sum(r["found_full"] for r in records) == o["tx_dropped"]  # each found the ring full, and only those
    assert {r["ring_hook"] for r in records} == {"fentry"}  # the tun module's BTF: a trampoline on tun_net_xmit
    full = [r for r in records if r["drops"]]
    assert all(r["device"] == vmlab["vm"]["tap"] and r["queue"] == 0 for r in full)
    assert max(r["fill_pct"] for r in full) == 100 and full[0]["size"] == vmlab["tun_ring"]["ring"]
    readers = full[0]["readers"]
    assert [r["pid"] for r in readers] == [vmlab["vm"]["pid"]] and readers[0]["vhost_tids"] == vmlab["vm"]["vhost_tids"]


def test_no_drop_when_the_vm_keeps_up(vmlab):
    c = vmlab["tun_ring"]["control"]
    records = ring_records(vmlab, "control")
    # The VM's rx counter takes any frame: a stray one came once (201 of 200, 2026-12-03).
    assert c["tx_dropped"] == 0 and c["count"] <= c["vm_received"] <= c["count"] + 2, c
    assert sum(r["drops"] for r in records) == 0
    assert c["count"] <= sum(r["xmits"] or 0 for r in records) <= c["count"] + 2
    assert max(r["fill_pct"] for r in records) < 100


@pytest.mark.parametrize("phase", ["overflow", "control"])
def test_the_kprobe_twin_counts_the_same_ring(vmlab, phase):
    """tun-ring-monitor again with --attach kprobe (the drop hook and tun_net_xmit by kprobes),
    over the same windows: the same drops and full-ring drops, the test's transmits (issue 18)."""
    ways = {r["ring_hook"] for r in ring_records(vmlab, phase, twin=True)}
    assert ways == {"kprobe"}, ways
    sums = lambda records: [sum(r[f] or 0 for r in records) for f in ("drops", "full_ring_drops", "found_full", "xmits")]
    by_trampoline, by_kprobe = sums(ring_records(vmlab, phase)), sums(ring_records(vmlab, phase, twin=True))
    # Drops happen only while the VM is stopped, well inside both windows: exact.  A window
    # ends at each probe's own one-second print, so a stray frame near an edge (the host's
    # ARP or IPv6 to the VM) can fall in one and not the other (CI: 200 against 201).
    assert by_trampoline[:3] == by_kprobe[:3], (by_trampoline, by_kprobe)
    assert (by_trampoline[0] > 0) == (phase == "overflow"), by_trampoline
    count = vmlab["tun_ring"][phase]["count"]
    for xmits in (by_trampoline[3], by_kprobe[3]):
        assert count <= xmits <= count + 2, (by_trampoline, by_kprobe, count)


def test_vm_probes_detach(vmlab):
    assert vmlab["kprobes_left"] == []
    for name, p in vmlab["probes"].items():
        assert p["returncode"] == 0, (name, p["stderr"])
        assert "Traceback" not in p["stderr"], (name, p["stderr"])


def test_the_autopilot_names_the_full_tap_ring_from_the_vm_symptom(vmlab):
    a = vmlab["autopilot_ring"]
    assert a["returncode"] == 0, a["stderr"]
    assert a["causes"][0] == "tun-ring-overflow", a
    assert "Traceback" not in a["stderr"]



VHOST_STEPS = ["vm-network/tun-ring-monitor", "vm-network/vhost-eventfd-count",
               "vm-network/vhost-queue-correlation-details"]


def check_autopilot_hog(v: dict) -> None:
    """The vhost worker pinned where a SCHED_FIFO task spins HOG_MS every 2 s, pings to the
    VM: told only the tap, the autopilot walks tap -> vhost Summary -> Details to the cause."""
    a = v["hog"]
    assert "Traceback" not in a["stderr"]
    assert a["returncode"] == 0, a["stderr"]
    assert a["steps"] == [[s, "ok"] for s in VHOST_STEPS], a["steps"]
    assert a["causes"][0] == "vhost-not-scheduled", a["rules"]
    (f,) = [f for f in a["findings"] if f["rule"] == "vhost-not-scheduled"]
    ev = f["evidence"]
    assert ev["device"] == v["tap"] and HOG_CPU in ev["cpu_values"], ev
    longest_ms = max(t1 - t0 for t0, t1 in a["hog_windows_ns"]) / 1e6
    # the first ping inside a spin comes within AUTOPILOT_PING_S; TCG delays the worker a little
    assert HOG_MS - 1000 * AUTOPILOT_PING_S - SLACK_MS <= ev["max_latency_us"] / 1000 <= longest_ms + 2 * SLACK_MS, ev
    assert ev["max_busy_pct"] < 50 and any("taskset" in advice for advice in f["advice"]), f


def check_autopilot_control(v: dict) -> None:
    """The same pings and pinning without the spin: the Details run, the cause is not claimed."""
    c = v["control"]
    assert "Traceback" not in c["stderr"]
    assert c["hog_windows_ns"] == []
    assert c["steps"] == [[s, "ok"] for s in VHOST_STEPS], (c["steps"], c["stderr"])
    assert "vhost-not-scheduled" not in c["rules"], c["rules"]


@pytest.mark.parametrize("check", (check_autopilot_hog, check_autopilot_control), ids=lambda c: c.__name__)
def test_the_autopilot_on_a_vhost_thread_kept_off_its_cpu(vmlab, check):
    if "autopilot_vhost" not in vmlab and "autopilot_vhost" not in vmlab.get("errors", {}):
        pytest.skip("dev loop only (vm_checks --autopilot-vhost, then python3 -m tests.lab.test_lab_vm FILE): "
                    "its control still names the cause when the host takes the lab's CPU ~200 ms (docs/lab.md)")
    step_ok(vmlab, "autopilot_vhost")
    check(vmlab["autopilot_vhost"])


if __name__ == "__main__":  # a dev-loop result: python3 -m tests.lab.test_lab_vm FILE (docs/lab.md)
    import json
    import sys
    from pathlib import Path

    saved = json.loads(Path(sys.argv[1]).read_text())
    for check in (check_autopilot_hog, check_autopilot_control):
        check(saved)
        print("ok  ", check.__name__)
