"""The kprobe-only probes (OVS/latency) cannot attach on this kernel (no kprobes), but
their programs must still compile and pass this kernel's verifier: load them without
attaching.  Their behaviour is tested in the lab VM (tests/lab)."""

from __future__ import annotations

import os
import struct

import pytest

from probes.ovs_megaflow import FIELDS as MEGAFLOW_FIELDS
from probes.ovs_megaflow import OvsMegaflow
from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.kernel import KernelCaps
from probes.runtime.loader import load, unload
from probes.stage_latency import FIELDS
from probes.system_latency import SystemLatencyDetails, SystemLatencySummary
from probes.vm_latency import VmLatencyDetails, VmLatencySummary
from tests.netenv import our_bpf_programs

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CAPS = KernelCaps(release="t", btf=True, matching_headers=None, tracefs="/sys/kernel/tracing", kprobes=True,
                  raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)


def has_loop(code: bytes) -> bool:
    """Does this BPF bytecode have a cycle?  Kernels before 5.3 (4.19 among the supported
    ones) reject every loop, so the programs unroll theirs."""
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    succ: dict[int, list[int]] = {}
    i = 0
    while i < len(insns):
        op, off = insns[i][0], insns[i][2]
        if op == 0x18:  # a 64-bit immediate takes two slots
            succ[i], i = [i + 2], i + 2
            continue
        if op & 7 in (5, 6):  # jumps: ja, conditional, call, exit
            kind = op >> 4
            succ[i] = [] if kind == 9 else [i + 1] if kind == 8 else [i + 1 + off] if kind == 0 else [i + 1, i + 1 + off]
        else:
            succ[i] = [i + 1]
        i += 1
    state = {0: 1}  # 1: on the DFS path, 2: done
    path = [(0, iter(succ[0]))]
    while path:
        node, nexts = path[-1]
        nxt = next(nexts, None)
        if nxt is None:
            state[node] = 2
            path.pop()
        elif state.get(nxt) == 1:
            return True
        elif nxt not in state and nxt in succ:
            state[nxt] = 1
            path.append((nxt, iter(succ[nxt])))
    return False


def _verify(source, defines, functions, fields=FIELDS):
    from bcc import BPF

    bpf = load(source, defines, fields)
    try:
        for fn in functions:
            bpf.load_func(fn.encode(), BPF.KPROBE)  # raises if the verifier rejects it
            assert not has_loop(bpf.dump_func(fn.encode())), f"{source}: {fn} has a loop"
    finally:
        unload(bpf)
    assert our_bpf_programs() == []


@pytest.mark.parametrize("cls,kw", [
    (SystemLatencySummary, dict(direction="tx")),
    (SystemLatencySummary, dict(direction="rx", src_ip="10.0.0.1")),
    (SystemLatencyDetails, dict(direction="tx", latency_threshold="100000")),
    (VmLatencySummary, dict(direction="rx", vm_interface="lo")),
    (VmLatencyDetails, dict(direction="tx", vm_interface="lo", latency_threshold="0", interval="1")),
])
def test_stage_latency_programs_pass_the_verifier(cls, kw):
    probe = cls(caps=CAPS, phy_interface="lo", protocol="icmp", **kw)
    stages, devices = probe.path()
    _verify("stage_latency.bpf.c", probe.c_defines(stages, devices), [f"stage_{i}" for i in range(len(stages))])


def test_upcall_programs_pass_the_verifier():
    probe = OvsUpcallSummary(caps=CAPS, proto="icmp")
    _verify("ovs_upcall.bpf.c", probe.c_defines(), ["on_upcall", "on_answer"])


@pytest.mark.parametrize("filters", [
    {},
    dict(ip_proto="udp", l4_dst_port="53"),
    # every filter: the flow key walk with all its field checks
    dict(eth_src="52:54:00:00:00:01", eth_dst="52:54:00:00:00:02", ip_src="10.0.0.1", ip_dst="10.0.0.2",
         ip_proto="tcp", l4_src_port="4000", l4_dst_port="80"),
], ids=["none", "udp-port", "all"])
def test_megaflow_programs_pass_the_verifier(filters):
    probe = OvsMegaflow(caps=CAPS, **filters)
    _verify("ovs_megaflow.bpf.c", probe.c_defines(), ["on_upcall", "on_flow_new", "on_flow_del", "on_execute"], MEGAFLOW_FIELDS)


def test_unavailable_here_says_why():
    from probes.runtime.kernel import detect

    caps = detect()
    if caps.kprobes:
        pytest.skip("this kernel has kprobes")
    for cls in (SystemLatencySummary, VmLatencySummary, OvsUpcallSummary, OvsMegaflow):
        assert "kprobes" in cls.unavailable_reason(caps)


@pytest.mark.parametrize("filters", [dict(l4_protocol="udp"), {}])  # every drop parsed / sampled by group
@pytest.mark.parametrize("kind", ["kprobe", "tracepoint", "raw-tracepoint"])
def test_drop_probes_kprobe_and_ovs_consume_paths_pass_the_verifier(kind, filters):
    from probes.drop_details import FIELDS as DETAILS_FIELDS
    from probes.drop_details import DropDetails
    from probes.drop_hook import DropHook
    from probes.drop_hook import FIELDS as SUMMARY_FIELDS
    from probes.drop_summary import DropSummary

    # A made-up do_execute_actions range: only the code paths are checked here.
    hook = DropHook(kind, "sk_skb_reason_drop" if kind == "kprobe" else None, True,
                    (0xFFFFFFFFC0000000, 0xFFFFFFFFC0001000))
    fns = (["ns_kprobe_drop"] if kind == "kprobe" else []) + ["ns_kprobe_ovs_consume", "ns_kprobe_ovs_upcall"]
    for cls, source, fields in ((DropSummary, "drop_summary.bpf.c", SUMMARY_FIELDS),
                                (DropDetails, "drop_details.bpf.c", DETAILS_FIELDS)):
        probe = cls(caps=CAPS, **filters)
        notifier = ["ns_raw_notifier"] if cls is DropSummary and probe._dev_gen(hook) else []
        _verify(source, probe.c_defines(hook), fns + notifier, fields)
