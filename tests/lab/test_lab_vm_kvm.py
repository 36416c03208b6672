"""kvm-irqfd-stats-summary on a real nested VM (tests/lab/vm_checks_kvm.py, in vm_checks.py's boot).

Counts: the probe's irqfd signals equal the MSIs KVM resolved (an ftrace hist trigger on
kvm:kvm_msi_set_irq), all on the fast path, and its timed injections equal the virtio
interrupts the L2 guest counted itself.  Latency: with the L2's QEMU stopped for ~200 ms
while pinged every 10 ms, the slowest injection is the stop (within a ping interval and
the time SIGCONT takes); without the stop it stays far below."""

from __future__ import annotations

import pytest

from tests.lab.expect import step_ok
from tests.lab.vm_checks_kvm import CONTROL_PINGS
from tests.test_kvm_irqfd import assert_documented

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

# The stop's bound: resuming a stopped QEMU under TCG, then its vCPU's next entry.
STOP_SLACK_MS = 100


@pytest.fixture
def kvm(vmlab) -> dict:
    step_ok(vmlab, "kvm_irqfd")
    return vmlab["kvm_irqfd"]


def lines(phase: dict, pid: int) -> list[dict]:
    return [e for r in phase["records"] for e in r["entries"] if e["pid"] == pid]


def total(phase: dict, pid: int, field: str) -> int:
    return sum(e[field] for e in lines(phase, pid))


def test_a_process_without_dev_kvm_is_refused_in_one_line(kvm):
    r = kvm["not_kvm_pid"]
    assert r["returncode"] == 2, r
    assert len(r["stderr"].strip().splitlines()) == 1 and "holds /dev/kvm" in r["stderr"], r


@pytest.mark.parametrize("phase", ["control", "stopped"])
def test_signals_are_the_msis_kvm_resolved_all_on_the_fast_path(kvm, phase):
    p, pid = kvm[phase], kvm["qemu_pid"]
    assert lines(p, pid), p
    msis = sum(p["msi_per_vector"].values())
    signals = total(p, pid, "signals")
    # The ftrace counter's window opens and closes a moment apart from the probe's reads
    # (CI 2026-12-03: 43 signals, 41 MSIs).
    assert abs(signals - msis) <= 2 and signals >= CONTROL_PINGS, (p["msi_per_vector"], lines(p, pid))
    assert total(p, pid, "fast_path") == signals
    assert total(p, pid, "slow_path") == total(p, pid, "no_target") == total(p, pid, "untracked") == 0


@pytest.mark.parametrize("phase", ["control", "stopped"])
def test_each_timed_injection_is_one_kvm_made(kvm, phase):
    p, pid = kvm[phase], kvm["qemu_pid"]
    injected = total(p, pid, "injected")
    kvm_made = sum(p["kvm_injected_per_vector"].values())  # first tries; re-injections not timed
    assert abs(injected - kvm_made) <= 2 and injected >= CONTROL_PINGS, (p["kvm_injected_per_vector"], lines(p, pid))
    # vhost signals no more while the guest has not seen the last interrupt (virtio's event
    # index), so nothing merges in KVM even while the vCPU is stopped (measured: 0).
    assert total(p, pid, "coalesced") == 0
    # every interrupt made pending was injected (none left pending, none posted: no AVIC under TCG)
    assert total(p, pid, "accepted") == injected
    assert sum(e["count"] for e in lines(p, pid)) == injected


@pytest.mark.parametrize("phase", ["control", "stopped"])
def test_the_guest_handled_every_injection(kvm, phase):
    p, pid = kvm[phase], kvm["qemu_pid"]
    guest = sum(p["guest_interrupts"].values())
    # Under TCG's nested SVM the VM's own count strays both ways (docs/lab.md: 376 against 150,
    # and across the stop one short per queue): a floor, one lost per queue allowed there.
    lost = len(p["kvm_injected_per_vector"]) if phase == "stopped" else 0  # one per queue
    assert guest >= total(p, pid, "injected") - lost, (
        p["guest_interrupts"], p["kvm_injected_per_vector"], p["kvm_reinjected_per_vector"], lines(p, pid))


def max_by_gsi(phase: dict, pid: int, field: str) -> dict[int, float]:
    """Per GSI, the largest ``field`` of the phase's records."""
    out: dict[int, float] = {}
    for e in lines(phase, pid):
        out[e["gsi"]] = max(out.get(e["gsi"], 0), e[field] or 0)
    return out


def slower_than(phase: dict, pid: int, ms: float) -> int:
    """Injections in buckets wholly above ``ms``."""
    return sum(b["count"] for e in lines(phase, pid) for b in e["buckets"] if b["low"] >= ms * 1000)


def test_the_slowest_injection_is_the_stop(kvm):
    pid = kvm["qemu_pid"]
    assert kvm["control"]["replies"] == kvm["control"]["pings"], kvm["control"]
    stopped = kvm["stopped"]
    slowest = max(e["max_us"] or 0 for e in lines(stopped, pid)) / 1000
    stop_ms = stopped["stop_s"] * 1000
    low = stop_ms - stopped["ping_interval_s"] * 1000 - 5
    high = stop_ms + stopped["cont_signal_s"] * 1000 + STOP_SLACK_MS
    assert low <= slowest <= high, (slowest, stopped)
    # The maximum since the probe started: the stop's, unless an injection before the control
    # phase was slower (the VM paused by the ring checks once the probe had attached: CI, once).
    before = max_by_gsi(kvm["control"], pid, "max_us_since_start")
    since_start = max_by_gsi(stopped, pid, "max_us_since_start")
    assert since_start == {gsi: max(before.get(gsi, 0), m) for gsi, m in max_by_gsi(stopped, pid, "max_us").items()}, \
        (since_start, before)
    # Only the interrupts pending across the stop are that slow: one per queue expected, two on
    # one queue seen once (2026-12-03, not explained); a stale start time would make dozens.
    # Without the stop none comes near it (TCG-nested: up to ~35 ms measured).
    assert 1 <= slower_than(stopped, pid, stop_ms / 2) <= 2 * len(lines(stopped, pid)), lines(stopped, pid)
    control = max(e["max_us"] or 0 for e in lines(kvm["control"], pid)) / 1000
    assert control < stop_ms / 2 and slower_than(kvm["control"], pid, stop_ms / 4) == 0, control


# What the hooks decide (trampolines or kprobes); the injection side is tracepoints either way.
HOOK_COUNTS = ("signals", "fast_path", "slow_path", "no_target", "accepted", "posted", "untracked")


def test_trampolines_and_kprobes_count_the_same_interrupts(kvm):
    """The lab kernel (6.1, kvm's BTF) takes a trampoline on each of the probe's functions, at entry
    and at return (fexit finds the fast path's verdict after its five arguments).  Its kprobe twin,
    attached to the same functions through both phases, counts the same interrupts, line by line
    (issue 18: same records, same counts either way).  Injected and coalesced are decided by the
    kvm tracepoints in both; the two probes' programs on one tracepoint run one after the other,
    and an accept on another CPU can land between them: CI on 2026-12-04 saw the twin count
    coalesced 1 / injected 72 where the first counted 0 / 73.  So their sum is compared."""
    assert kvm["attached"].startswith("fentry irqfd_wakeup, irqfd_inject, kvm_arch_vcpu_load; "
                                      "fexit kvm_arch_set_irq_inatomic, irqfd_inject;"), kvm["attached"]
    assert kvm["attached_kprobe"].startswith("kprobe irqfd_wakeup, irqfd_inject, kvm_arch_vcpu_load; "
                                             "kretprobe kvm_arch_set_irq_inatomic, irqfd_inject;"), kvm["attached_kprobe"]
    pid = kvm["qemu_pid"]
    for phase in ("control", "stopped"):
        p = kvm[phase]
        by_trampoline, by_kprobe = p["records"], p["records_kprobe"]
        assert {r["attach"] for r in by_trampoline} == {"auto"} and {r["attach"] for r in by_kprobe} == {"kprobe"}
        assert all(set(r["hooks"].values()) == {"fentry", "fexit"} and r["fentry_refused"] == {} for r in by_trampoline)
        assert all(set(r["hooks"].values()) == {"kprobe", "kretprobe"} for r in by_kprobe)
        counts = lambda records: {e["gsi"]: [e[f] for f in HOOK_COUNTS] + [e["injected"] + e["coalesced"]]
                                  for r in records for e in r["entries"] if e["pid"] == pid}
        assert counts(by_trampoline) == counts(by_kprobe) and total(p, pid, "signals") >= CONTROL_PINGS, phase


def test_real_records_are_documented(kvm):
    for phase in ("control", "stopped"):
        for r in kvm[phase]["records"]:
            assert_documented(r)


def test_nothing_left_attached(kvm, vmlab):
    assert kvm["kprobes_left"] == []
    assert vmlab["trampolines_left"] == []  # after the VM checks: the kvm and vhost probes' fentry/fexit programs
