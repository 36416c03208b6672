"""Turning the kernel's struct ns_flow into JSON and text."""

from __future__ import annotations

import ctypes as ct
import socket

from .runtime.layout import CMirror
from .runtime.params import ipv4_text

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


def flow_dict(flow) -> dict:
    """{protocol, src_ip, dst_ip, src_port, dst_port}; None where the packet had no such field."""
    if not (flow.saddr or flow.daddr or flow.proto):
        return {"protocol": None, "src_ip": None, "dst_ip": None, "src_port": None, "dst_port": None}
    ports = flow.proto in (6, 17)
    return {
        "protocol": PROTO_NAMES.get(flow.proto, str(flow.proto)),
        "src_ip": ipv4_text(flow.saddr),
        "dst_ip": ipv4_text(flow.daddr),
        "src_port": socket.ntohs(flow.sport) if ports else None,
        "dst_port": socket.ntohs(flow.dport) if ports else None,
    }


class NsFlow(CMirror):
    """Mirror of struct ns_flow in netsleuth.h."""

    _c_struct_ = "ns_flow"
    _fields_ = [("saddr", ct.c_uint32), ("daddr", ct.c_uint32), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("pad", ct.c_uint8 * 3)]


class NsPkt(CMirror):
    """Mirror of struct ns_pkt in netsleuth.h (perf events need explicit ctypes)."""

    _c_struct_ = "ns_pkt"
    _fields_ = [
        ("flow", NsFlow), ("eth_src", ct.c_uint8 * 6), ("eth_dst", ct.c_uint8 * 6),
        ("eth_type", ct.c_uint16), ("vlan_id", ct.c_uint16), ("has_vlan", ct.c_uint8),
        ("has_ip", ct.c_uint8), ("ttl", ct.c_uint8), ("tcp_flags", ct.c_uint8),
        ("ip_len", ct.c_uint16), ("ip_id", ct.c_uint16), ("tcp_seq", ct.c_uint32),
        ("payload_len", ct.c_uint16), ("icmp_type", ct.c_uint8), ("icmp_code", ct.c_uint8),
        ("icmp_id", ct.c_uint16), ("icmp_seq", ct.c_uint16),
    ]
