"""What the OVS and latency probes say where they cannot run.

This host really has no kprobes and no openvswitch module: the first test uses
its real capabilities.  The others describe a kprobe kernel by hand
(KernelCaps with a fixed function list: a stand-in for other kernels, which
cannot exist here); the reasons must name what is missing and how to get it.
"""

from __future__ import annotations

import dataclasses

import pytest

from probes.ovs_megaflow import OvsMegaflow
from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.kernel import KernelCaps, detect
from probes.system_latency import SystemLatencySummary
from probes.vm_latency import VmLatencySummary

OVS_PROBES = (OvsUpcallSummary, OvsMegaflow, SystemLatencySummary, VmLatencySummary)


class CapsWithFunctions(KernelCaps):
    """Stand-in for a kprobe kernel whose /proc/kallsyms holds exactly ``functions``."""

    functions: frozenset[str] = frozenset()

    def function(self, name: str) -> bool:
        return name in self.functions


def _caps(functions=(), **changes) -> KernelCaps:
    fields = {f.name: getattr(detect(), f.name) for f in dataclasses.fields(KernelCaps)}
    fields.update({"privileged": True, **changes})
    caps = CapsWithFunctions(**fields)
    caps.functions = frozenset(functions)
    return caps


@pytest.mark.parametrize("probe", OVS_PROBES, ids=lambda p: p.name)
def test_this_host_says_kprobes_are_missing(probe):
    reason = probe.unavailable_reason(_caps(kprobes=detect().kprobes))
    assert reason is not None and reason.startswith("needs kprobes (CONFIG_KPROBES)"), reason


@pytest.mark.parametrize("probe", OVS_PROBES, ids=lambda p: p.name)
def test_without_the_openvswitch_module_the_missing_functions_are_named(probe):
    reason = probe.unavailable_reason(_caps(kprobes=True, functions={"__dev_queue_xmit", "tun_net_xmit"}))
    assert reason.startswith("kernel functions missing: ") and "modprobe openvswitch" in reason, reason
    assert "ovs_dp_upcall" in reason or "ovs_flow_key_extract" in reason, reason
    assert "__dev_queue_xmit" not in reason and "tun_net_xmit" not in reason, reason


def test_a_stage_is_satisfied_by_any_of_its_names_across_kernels():
    """DEV_XMIT is __dev_queue_xmit on new kernels, dev_queue_xmit on old ones."""
    present = {"ip_output", "internal_dev_xmit", "ovs_flow_key_extract", "ovs_dp_process_packet",
               "ovs_vport_send", "netdev_frame_hook", "tcp_v4_rcv", "udp_rcv", "icmp_rcv"}
    assert SystemLatencySummary.unavailable_reason(_caps(kprobes=True, functions=present | {"dev_queue_xmit"})) is None
    reason = SystemLatencySummary.unavailable_reason(_caps(kprobes=True, functions=present))
    assert reason.startswith("kernel functions missing: __dev_queue_xmit ("), reason
