"""The trampoline loader's host side (probes/runtime/fentry.py): BTF lookups against bpftool's
own reading of the kernel's BTF, and the kernel's answer to a trampoline program here.  The
attach itself, on the OVS module's functions, is checked in the lab
(tests/lab/test_lab_latency.py::test_trampolines_and_kprobes_count_the_same_packets)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from probes.runtime import fentry
from probes.runtime.attach import FunctionHooks
from probes.runtime.btf import VMLINUX_BTF

pytestmark = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="the kernel has no BTF")

FUNCTIONS = ["ip_rcv", "ip_output", "__dev_queue_xmit", "tcp_v4_rcv", "udp_rcv", "consume_skb"]


def bpftool_functions() -> dict[str, tuple[int, int]]:
    """{name: (FUNC type id, its prototype's parameter count)} as bpftool reads vmlinux's BTF."""
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(VMLINUX_BTF)], capture_output=True,
                         text=True, check=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    return {t["name"]: (t["id"], types[t["type_id"]]["vlen"]) for t in types.values()
            if t["kind"] == "FUNC" and t["name"] in FUNCTIONS}


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool is not installed")
def test_targets_are_the_functions_bpftool_finds():
    """Each function's id and argument count: an fexit program reads the return value after
    the arguments (return_slot), so a wrong count reads an argument as the return value."""
    truth = bpftool_functions()
    assert set(truth) == set(FUNCTIONS)
    for name in FUNCTIONS:
        t = fentry.target(name)
        assert (t.btf_id, t.btf_object, t.arity) == (truth[name][0], "vmlinux", truth[name][1]), name
        assert fentry.return_slot(name) == truth[name][1]
    assert fentry.return_slot("ip_rcv") == 4  # (skb, dev, pt, orig_dev)
    assert fentry.return_slot("no_such_function_here") == 0


def test_a_function_without_btf_says_so():
    with pytest.raises(fentry.TrampolineError, match="no_such_function_here is not in the BTF of vmlinux"):
        fentry.target("no_such_function_here")


def test_an_old_kernel_takes_no_trampolines():
    assert "older than 5.11" in fentry.why_no_trampolines("4.19.90-2102.2.0.0062.oe1.x86_64")
    assert fentry.why_no_trampolines("6.1.0-57-amd64") in (None, fentry.why_no_trampolines())


def test_the_kernel_answers_a_trampoline_program():
    """Here the platform refuses fentry (EPERM as root): the trial says so, and an attach says
    it about the function asked, as a refusal of every hook; where a kernel takes them, the
    trial is None and nothing stays loaded."""
    why = fentry.trial()
    if why is None:
        assert "netsleuth_trial" not in fentry.trampoline_programs()
        return
    assert "refuse" in why and "Operation not permitted" in why, why
    with pytest.raises(fentry.TrampolineError) as e:
        fentry.load_and_attach(bytes.fromhex("b700000000000000" "9500000000000000"), "fentry_test",
                               fentry.target("ip_rcv"))
    assert "on ip_rcv: Operation not permitted" in str(e.value) and e.value.everywhere
    with pytest.raises(fentry.TrampolineError, match="refused an fexit program on ip_output"):
        fentry.load_and_attach(bytes.fromhex("b700000000000000" "9500000000000000"), "fexit_test",
                               fentry.target("ip_output"), at_return=True)


def test_the_start_line_groups_the_hooks_by_way():
    """What a probe's start line and the session report say of its hooks (FunctionHooks.describe)."""
    hooks = FunctionHooks(None, "auto")
    hooks.by = {"irqfd_wakeup": "fentry", "kvm_arch_set_irq_inatomic return": "fexit", "irqfd_inject": "fentry",
                "vhost_get_vq_desc return": "kretprobe"}
    hooks.fell_back = {"vhost_get_vq_desc return": "x", "a": "y", "b return": "x"}
    assert hooks.describe() == ("fentry irqfd_wakeup, irqfd_inject; fexit kvm_arch_set_irq_inatomic; "
                                "kretprobe vhost_get_vq_desc (no trampoline for vhost_get_vq_desc return, "
                                "b return: x; for a: y)")
