"""vm-latency-summary / -details (guide tool 4): VM (tap/vnet) <-> physical NIC through OVS."""

from __future__ import annotations

from .base import DST_IP, DURATION, HOOK_ATTACH, SRC_IP, Flag
from .stage_latency import (FLOW_EXTRACT, OVS_PROCESS, OVS_RX, OVS_UPCALL, QDISC_XMIT, VPORT_SEND, Stage,
                            StageLatency, device, kp, tp)
from .system_latency import INTERVAL, PHY, PROTOCOL, THRESHOLD

# tx: the VM sends (tun receive on vnet) -> OVS -> physical NIC
TX = [tp("VNET_RX"), OVS_RX, FLOW_EXTRACT, OVS_PROCESS, OVS_UPCALL, VPORT_SEND, QDISC_XMIT]
# rx: physical NIC -> OVS -> vnet -> tun ring towards the VM
RX = [tp("PHY_RX"), OVS_RX, FLOW_EXTRACT, OVS_PROCESS, OVS_UPCALL, VPORT_SEND,
      kp("VNET_XMIT", ("tun_net_xmit", 1))]

VM_IF = Flag("vm-interface", "interface", "the VM's tap device, e.g. vnet3 (required)", required=True,
             label="VM interface")
DIRECTION = Flag("direction", "choice", "tx (VM -> NIC) or rx (NIC -> VM)", choices=("tx", "rx"), required=True,
                 label="Direction")


class VmLatencySummary(StageLatency):
    name = "vm-latency-summary"
    title = "VM network latency Summary"
    tier = 1
    cost = "low-medium: kprobes on the OVS datapath and tun, in-kernel histograms"
    description = "Histograms of the time between the stages of a VM's traffic through OVS."
    family = "vm"
    flags = (VM_IF, PHY, SRC_IP, DST_IP, PROTOCOL, DIRECTION, INTERVAL, HOOK_ATTACH, DURATION)

    @classmethod
    def all_stages(cls) -> list[Stage]:
        return TX + RX

    def path(self):
        o = self.options
        vm, phy = device(o.vm_interface), device(o.phy_interface)
        if o.direction == "tx":
            return TX, {0: vm, len(TX) - 1: phy}
        return RX, {0: phy, len(RX) - 1: vm}


class VmLatencyDetails(VmLatencySummary):
    name = "vm-latency-details"
    title = "VM network latency Details"
    tier = 2
    cost = "medium: one event per packet over the threshold"
    description = ("Every VM packet slower than --latency-threshold, with each stage's time, CPU, device, "
                   "skb length and thread; the Summary's record every --interval.")
    details = True
    streaming = True
    flags = (VM_IF, PHY, SRC_IP, DST_IP, PROTOCOL, DIRECTION, INTERVAL, THRESHOLD, HOOK_ATTACH, DURATION)
