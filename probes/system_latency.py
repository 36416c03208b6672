"""system-latency-summary / -details (guide tool 3): host <-> physical NIC through OVS."""

from __future__ import annotations

from .base import DST_IP, DURATION, HOOK_ATTACH, SRC_IP, Flag, interval_flag
from .stage_latency import (FLOW_EXTRACT, OVS_PROCESS, OVS_RX, OVS_UPCALL, QDISC_XMIT, VPORT_SEND, Stage,
                            StageLatency, device, kp, tp)

TX = [
    # ip_output: every locally built IPv4 packet, header written, reached through the
    # route's function pointer, so never inlined.  Measured on 6.1: ip_local_out's kprobe
    # missed every ping (inlined into ip_send_skb); at ip_queue_xmit's entry a TCP packet
    # has no IP header yet.
    kp("IP_SEND", ("ip_output", 3)),
    kp("INTERNAL_XMIT", ("internal_dev_xmit", 1)),
    FLOW_EXTRACT, OVS_PROCESS, OVS_UPCALL, VPORT_SEND,
    QDISC_XMIT,  # on the physical NIC
]
RX = [
    tp("PHY_RX"),  # net:netif_receive_skb on the physical NIC
    OVS_RX, FLOW_EXTRACT, OVS_PROCESS, OVS_UPCALL, VPORT_SEND,
    kp("PROTO_RCV", ("tcp_v4_rcv", 1), ("udp_rcv", 1), ("icmp_rcv", 1), union=True),
]

PHY = Flag("phy-interface", "interface", "the physical NIC the traffic leaves / enters by (required)", required=True,
           label="Physical interface")
PROTOCOL = Flag("protocol", "protocol", "tcp, udp or icmp", choices=("tcp", "udp", "icmp"), label="Protocol")
DIRECTION = Flag("direction", "choice", "tx (host -> NIC) or rx (NIC -> host)", choices=("tx", "rx"), required=True,
                 label="Direction")
INTERVAL = interval_flag(5.0)
THRESHOLD = Flag("latency-threshold", "int", "only packets slower than this many microseconds", default=0,
                 lo=0, hi=60_000_000, label="Latency threshold (µs)")


class SystemLatencySummary(StageLatency):
    name = "system-latency-summary"
    title = "System network latency Summary"
    tier = 1
    cost = "low-medium: kprobes on the OVS datapath, in-kernel histograms"
    description = "Histograms of the time between the stages of the host's own traffic through OVS."
    family = "system"
    flags = (PHY, SRC_IP, DST_IP, PROTOCOL, DIRECTION, INTERVAL, HOOK_ATTACH, DURATION)

    @classmethod
    def all_stages(cls) -> list[Stage]:
        return TX + RX

    def path(self):
        o = self.options
        if o.direction == "tx":
            return TX, {len(TX) - 1: device(o.phy_interface)}
        return RX, {0: device(o.phy_interface)}


class SystemLatencyDetails(SystemLatencySummary):
    name = "system-latency-details"
    title = "System network latency Details"
    tier = 2
    cost = "medium: one event per packet over the threshold"
    description = ("Every packet slower than --latency-threshold, with each stage's time, CPU, device, skb length "
                   "and thread; the Summary's record every --interval.")
    details = True
    streaming = True
    flags = (PHY, SRC_IP, DST_IP, PROTOCOL, DIRECTION, INTERVAL, THRESHOLD, HOOK_ATTACH, DURATION)
