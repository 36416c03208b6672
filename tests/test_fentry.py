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
from probes.runtime.btf import VMLINUX_BTF

pytestmark = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="the kernel has no BTF")

FUNCTIONS = ["ip_rcv", "ip_output", "__dev_queue_xmit", "tcp_v4_rcv", "udp_rcv", "consume_skb"]


def bpftool_functions() -> dict[str, int]:
    """{name: FUNC type id} as bpftool reads vmlinux's BTF."""
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(VMLINUX_BTF)], capture_output=True,
                         text=True, check=True).stdout
    return {t["name"]: t["id"] for t in json.loads(out)["types"] if t["kind"] == "FUNC" and t["name"] in FUNCTIONS}


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool is not installed")
def test_targets_are_the_functions_bpftool_finds():
    truth = bpftool_functions()
    assert set(truth) == set(FUNCTIONS)
    for name in FUNCTIONS:
        t = fentry.target(name)
        assert (t.btf_id, t.btf_object) == (truth[name], "vmlinux"), name


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
