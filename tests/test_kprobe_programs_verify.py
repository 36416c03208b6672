"""The kprobe-only probes (OVS/latency) cannot attach on this kernel (no kprobes), but
their programs must still compile and pass this kernel's verifier: load them without
attaching.  Their behaviour is tested in the lab VM (tests/lab)."""

from __future__ import annotations

import os

import pytest

from probes.ovs_megaflow import FIELDS as MEGAFLOW_FIELDS
from probes.ovs_megaflow import OvsMegaflow
from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.kernel import KernelCaps
from probes.runtime.loader import load, unload
from probes.stage_latency import FIELDS
from probes.system_latency import SystemLatencyDetails, SystemLatencySummary
from probes.vm_latency import VmLatencySummary
from tests.netenv import our_bpf_programs

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CAPS = KernelCaps(release="t", btf=True, matching_headers=None, tracefs="/sys/kernel/tracing", kprobes=True,
                  raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)


def _verify(source, defines, functions, fields=FIELDS):
    from bcc import BPF

    bpf = load(source, defines, fields)
    try:
        for fn in functions:
            bpf.load_func(fn.encode(), BPF.KPROBE)  # raises if the verifier rejects it
    finally:
        unload(bpf)
    assert our_bpf_programs() == []


@pytest.mark.parametrize("cls,kw", [
    (SystemLatencySummary, dict(direction="tx")),
    (SystemLatencySummary, dict(direction="rx", src_ip="10.0.0.1")),
    (SystemLatencyDetails, dict(direction="tx", latency_threshold="100000")),
    (VmLatencySummary, dict(direction="rx", vm_interface="lo")),
])
def test_stage_latency_programs_pass_the_verifier(cls, kw):
    probe = cls(caps=CAPS, phy_interface="lo", protocol="icmp", **kw)
    stages, devices = probe.path()
    _verify("stage_latency.bpf.c", probe.c_defines(stages, devices), [f"stage_{i}" for i in range(len(stages))])


def test_upcall_programs_pass_the_verifier():
    probe = OvsUpcallSummary(caps=CAPS, proto="icmp")
    _verify("ovs_upcall.bpf.c", probe.c_defines(), ["on_upcall", "on_answer"])


def test_megaflow_programs_pass_the_verifier():
    probe = OvsMegaflow(caps=CAPS, ip_proto="udp", l4_dst_port="53")
    _verify("ovs_megaflow.bpf.c", probe.c_defines(), ["on_upcall", "on_flow_new", "on_flow_del"], MEGAFLOW_FIELDS)


def test_unavailable_here_says_why():
    from probes.runtime.kernel import detect

    caps = detect()
    if caps.kprobes:
        pytest.skip("this kernel has kprobes")
    for cls in (SystemLatencySummary, VmLatencySummary, OvsUpcallSummary, OvsMegaflow):
        assert "kprobes" in cls.unavailable_reason(caps)


@pytest.mark.parametrize("kind", ["kprobe", "tracepoint", "raw-tracepoint"])
def test_drop_probes_kprobe_and_ovs_consume_paths_pass_the_verifier(kind):
    from probes.drop_details import FIELDS as DETAILS_FIELDS
    from probes.drop_details import DropDetails
    from probes.drop_hook import DropHook
    from probes.drop_hook import FIELDS as SUMMARY_FIELDS
    from probes.drop_summary import DropSummary

    # A made-up do_execute_actions range: only the code paths are checked here.
    hook = DropHook(kind, "sk_skb_reason_drop" if kind == "kprobe" else None, True,
                    (0xFFFFFFFFC0000000, 0xFFFFFFFFC0001000))
    fns = (["ns_kprobe_drop"] if kind == "kprobe" else []) + ["ns_kprobe_ovs_consume"]
    for cls, source, fields in ((DropSummary, "drop_summary.bpf.c", SUMMARY_FIELDS),
                                (DropDetails, "drop_details.bpf.c", DETAILS_FIELDS)):
        probe = cls(caps=CAPS, l4_protocol="udp")
        _verify(source, probe.c_defines(hook), fns, fields)
