"""What the root-cause probes say on hosts that lack what they need.

This host has everything, so the missing pieces are described by hand-made
KernelCaps (a stand-in for other kernels, the one thing that cannot exist
here); the reasons must name what is missing and how to get it.
"""

from __future__ import annotations

import dataclasses

import pytest

from probes.cpu_burst import CpuBurst
from probes.futex import Futex
from probes.offcpu import OffCpu
from probes.pthread_lock import PthreadLock
from probes.runtime.kernel import KernelCaps, detect


class CapsWithoutTracepoints(KernelCaps):
    """Stand-in for a kernel without tracefs events."""

    def tracepoint(self, category: str, event: str) -> bool:
        return False


def _caps(cls=KernelCaps, **changes) -> KernelCaps:
    fields = {f.name: getattr(detect(), f.name) for f in dataclasses.fields(KernelCaps)}
    fields.update({"privileged": True, **changes})
    return cls(**fields)


def test_this_host_can_run_them_all():
    host = _caps()
    for probe in (OffCpu, Futex, PthreadLock, CpuBurst):
        assert probe.unavailable_reason(host) is None, probe.name


def test_uprobes_missing():
    reason = PthreadLock.unavailable_reason(_caps(uprobes=False))
    assert "uprobes" in reason and "CONFIG_UPROBE_EVENTS" in reason


def test_syscall_tracepoints_missing():
    reason = Futex.unavailable_reason(_caps(CapsWithoutTracepoints))
    assert "sys_enter_futex" in reason and "CONFIG_FTRACE_SYSCALLS" in reason


def test_offcpu_falls_back_then_says_why():
    # Old kernel (no raw tracepoints) with tracefs: the tracepoint fallback runs.
    assert OffCpu.unavailable_reason(_caps(raw_tracepoints=False)) is None
    reason = OffCpu.unavailable_reason(_caps(CapsWithoutTracepoints, raw_tracepoints=False))
    assert "sched:sched_switch" in reason and "tracefs" in reason


@pytest.mark.parametrize("probe", [OffCpu, Futex, PthreadLock])
def test_bpf_probes_need_privileges(probe):
    assert "root" in probe.unavailable_reason(_caps(privileged=False))


def test_cpu_burst_needs_no_privileges():
    assert CpuBurst.unavailable_reason(_caps(privileged=False)) is None


def test_offcpu_prefers_the_tracepoint_where_the_raw_one_has_no_state():
    """Before 5.18 the raw sched_switch carries no prev_state: neither the state nor a thread's
    death (its last switch-out must not be stamped) can be told, so "auto" takes the tracepoint."""
    from probes.offcpu import _choose_hook

    assert _choose_hook(_caps(release="6.18.0"), "auto") == "raw-tracepoint"
    assert _choose_hook(_caps(release="5.10.0-30-amd64"), "auto") == "tracepoint"
    assert _choose_hook(_caps(CapsWithoutTracepoints, release="5.10.0"), "auto") == "raw-tracepoint"
    assert _choose_hook(_caps(release="5.10.0"), "raw-tracepoint") == "raw-tracepoint"  # asked for
