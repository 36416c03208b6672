"""A record's flow ({protocol, src_ip, dst_ip, src_port, dst_port}) in words."""

from __future__ import annotations


def flow_text(flow: dict | None) -> str:
    if flow is None:  # drop-summary: a flood's drops counted by location/reason/device only
        return "(not broken down by flow: sampled)"
    if not flow.get("protocol"):
        return "(not IPv4)"
    proto = flow["protocol"].upper()
    if flow.get("src_port") is not None:
        return f"{flow['src_ip']}:{flow['src_port']} -> {flow['dst_ip']}:{flow['dst_port']} ({proto})"
    return f"{flow['src_ip']} -> {flow['dst_ip']} ({proto})"
