"""What the vhost probes say where they cannot run, and how they refuse bad flags.

This host really has no kprobes and no vhost modules: the CLI test uses its real
capabilities.  The others describe a kprobe kernel by hand (its function list), as
tests/test_ovs_probes_unavailable.py does; the module BTF check is real (no
/sys/kernel/btf/vhost here).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from probes.runtime import kernel
from probes.runtime.kernel import detect
from probes.vhost_eventfd import HOOKS as COUNT_HOOKS
from probes.vhost_eventfd import VhostEventfdCount
from probes.vhost_queue import HOOKS as QUEUE_HOOKS
from probes.vhost_queue import VhostQueueCorrelationDetails
from tests.netenv import ROOT, TAP, TUN, open_tun
from tests.test_ovs_probes_unavailable import _caps

VHOST_PROBES = (VhostEventfdCount, VhostQueueCorrelationDetails)
ALL_FUNCTIONS = {h.function for h in COUNT_HOOKS + QUEUE_HOOKS} | {"eventfd_signal"}


def netsleuth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wizard.main", "probe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


@pytest.mark.parametrize("probe", VHOST_PROBES, ids=lambda p: p.name)
def test_this_host_says_kprobes_are_missing(probe):
    assert not detect().kprobes, "this test describes a host without kprobes"
    reason = probe.unavailable_reason(_caps(kprobes=False))
    assert reason == "needs kprobes (CONFIG_KPROBES): on vhost-net's functions", reason


@pytest.mark.parametrize("probe", VHOST_PROBES, ids=lambda p: p.name)
def test_without_vhost_net_the_missing_functions_and_the_fix_are_named(probe):
    reason = probe.unavailable_reason(_caps(kprobes=True, functions={"eventfd_signal", "tun_net_xmit"}))
    assert reason.startswith("kernel functions missing: ") and "`modprobe vhost_net`" in reason, reason
    assert "vhost_poll_wakeup" in reason and "handle_rx_net" in reason and "eventfd_signal" not in reason, reason


@pytest.mark.parametrize("probe", VHOST_PROBES, ids=lambda p: p.name)
def test_without_the_vhost_module_btf_the_fix_is_named(probe):
    """Functions all there (a stand-in), but /sys/kernel/btf/vhost is not: the struct layouts are unknown."""
    if os.geteuid() != 0:
        pytest.skip("kallsyms addresses need root")
    assert not os.path.exists("/sys/kernel/btf/vhost")
    reason = probe.unavailable_reason(_caps(kprobes=True, functions=ALL_FUNCTIONS))
    assert reason.startswith("needs the vhost module's BTF (/sys/kernel/btf/vhost) for struct vhost_poll"), reason
    assert "`modprobe vhost`" in reason, reason


def test_an_isra_clone_is_refused_and_a_constprop_clone_only_without_arguments(monkeypatch):
    monkeypatch.setattr(kernel, "kallsyms", lambda: frozenset({"vhost_notify.constprop.0", "handle_rx.isra.0",
                                                               "vhost_poll_wakeup.constprop.0"}))
    assert kernel.function_symbol("vhost_notify") == ("vhost_notify.constprop.0", None)
    symbol, why = kernel.function_symbol("handle_rx")
    assert symbol is None and "handle_rx.isra.0" in why and "cannot be probed reliably" in why
    reason = VhostEventfdCount.unavailable_reason(_caps(kprobes=True, functions=ALL_FUNCTIONS - {"vhost_poll_wakeup"}))
    assert reason.startswith("vhost_poll_wakeup is compiled as vhost_poll_wakeup.constprop.0 here"), reason


@pytest.mark.parametrize("name", [p.name for p in VHOST_PROBES])
def test_the_cli_says_why_it_cannot_run_in_one_line(name):
    r = netsleuth(name, "-d", "1")
    assert r.returncode == 3, r.stderr
    assert one_line(r) == f"netsleuth: cannot run here: {name}: needs kprobes (CONFIG_KPROBES): on vhost-net's functions"


@pytest.mark.parametrize("name", [p.name for p in VHOST_PROBES])
def test_a_pid_that_is_not_a_vm_is_refused(name):
    r = netsleuth(name, "--pid", str(os.getpid()))
    assert r.returncode == 2
    assert one_line(r) == (f"netsleuth probe {name}: --pid: '{os.getpid()}' is not valid; expected a QEMU/KVM "
                           "process (one holding /dev/kvm open)")


@pytest.mark.parametrize("name", [p.name for p in VHOST_PROBES])
def test_a_device_that_is_not_a_tap_is_refused_and_a_tap_accepted(name):
    r = netsleuth(name, "--device", "lo")
    assert r.returncode == 2 and "--device: 'lo' is not valid; expected a tap device" in one_line(r)
    if os.geteuid() != 0:
        pytest.skip("creating a tap needs root")
    for kind in (TAP, TUN):
        with open_tun(kind) as (tap, _fd):
            r = netsleuth(name, "--device", tap, "-d", "1")
        assert r.returncode == 3 and "needs kprobes" in one_line(r)  # the flag passed; the host cannot run it
