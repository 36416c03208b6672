"""Decode the OVS datapath's FLOW_CMD_NEW / FLOW_CMD_DEL netlink requests.

Layout (include/uapi/linux/openvswitch.h): nlmsghdr (16 bytes) + genlmsghdr
(4) + ovs_header (4: dp_ifindex) + attributes.  Pure Python: tested on
crafted messages and on real ones in the lab.
"""

from __future__ import annotations

import socket
import struct

NLA_TYPE_MASK = 0x3FFF
HEADER_LEN = 16 + 4 + 4

# enum ovs_flow_attr
FLOW_ATTR_KEY, FLOW_ATTR_ACTIONS, FLOW_ATTR_MASK, FLOW_ATTR_UFID = 1, 2, 7, 9
# enum ovs_key_attr
KEY_ATTRS = {
    1: "encap", 2: "priority", 3: "in_port", 4: "ethernet", 5: "vlan", 6: "ethertype", 7: "ipv4",
    8: "ipv6", 9: "tcp", 10: "udp", 11: "icmp", 12: "icmpv6", 13: "arp", 14: "nd", 15: "skb_mark",
    16: "tunnel", 17: "sctp", 18: "tcp_flags", 19: "dp_hash", 20: "recirc_id", 21: "mpls",
    22: "ct_state", 23: "ct_zone", 24: "ct_mark", 25: "ct_labels",
}
# enum ovs_action_attr
ACTION_ATTRS = {
    1: "output", 2: "userspace", 3: "set", 4: "push_vlan", 5: "pop_vlan", 6: "sample", 7: "recirc",
    8: "hash", 9: "push_mpls", 10: "pop_mpls", 11: "set_masked", 12: "ct", 13: "trunc", 14: "push_eth",
    15: "pop_eth", 16: "ct_clear", 17: "push_nsh", 18: "pop_nsh", 19: "meter", 20: "clone",
    21: "check_pkt_len", 22: "add_mpls", 23: "dec_ttl", 24: "drop",
}


class NetlinkDecodeError(ValueError):
    pass


def attrs(buf: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in buf."""
    out, pos = [], 0
    while pos + 4 <= len(buf):
        length, typ = struct.unpack_from("<HH", buf, pos)
        if length < 4 or pos + length > len(buf):
            break  # truncated copy: keep what was complete
        out.append((typ & NLA_TYPE_MASK, buf[pos + 4 : pos + length]))
        pos += (length + 3) & ~3
    return out


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def decode_key(buf: bytes) -> dict:
    """OVS_FLOW_ATTR_KEY (or _MASK) -> readable fields."""
    key: dict = {}
    for typ, p in attrs(buf):
        name = KEY_ATTRS.get(typ, f"attr{typ}")
        if name == "encap":  # a VLAN frame: what follows the tag (its EtherType and L3/L4 keys)
            key.update(decode_key(p))
        elif name == "vlan" and len(p) >= 2:
            key["vlan_tci"] = struct.unpack_from("!H", p)[0]
        elif name == "in_port" and len(p) >= 4:
            key["in_port"] = struct.unpack_from("<I", p)[0]
        elif name == "ethernet" and len(p) >= 12:
            key["eth_src"], key["eth_dst"] = _mac(p[:6]), _mac(p[6:12])
        elif name == "ethertype" and len(p) >= 2:
            key["eth_type"] = struct.unpack_from("!H", p)[0]
        elif name == "ipv4" and len(p) >= 12:
            key["ip_src"], key["ip_dst"] = socket.inet_ntoa(p[:4]), socket.inet_ntoa(p[4:8])
            key["ip_proto"], key["ip_tos"], key["ip_ttl"], key["ip_frag"] = p[8], p[9], p[10], p[11]
        elif name in ("tcp", "udp", "sctp") and len(p) >= 4:
            key["l4_src_port"], key["l4_dst_port"] = struct.unpack_from("!HH", p)
        elif name == "icmp" and len(p) >= 2:
            key["icmp_type"], key["icmp_code"] = p[0], p[1]
        elif name in ("recirc_id", "dp_hash", "skb_mark", "priority", "ct_state", "ct_mark") and len(p) >= 4:
            key[name] = struct.unpack_from("<I", p)[0]
    return key


def decode_actions(buf: bytes) -> list[str]:
    out = []
    for typ, p in attrs(buf):
        name = ACTION_ATTRS.get(typ, f"action{typ}")
        if name == "output" and len(p) >= 4:
            out.append(f"output:{struct.unpack_from('<I', p)[0]}")
        elif name == "recirc" and len(p) >= 4:
            out.append(f"recirc({struct.unpack_from('<I', p)[0]:#x})")
        else:
            out.append(name)
    return out or ["drop"]  # an empty action list drops the packet


def decode_flow_msg(raw: bytes) -> dict:
    """A FLOW_CMD_NEW/DEL request -> {dp_ifindex, key, mask, actions, ufid}."""
    if len(raw) < HEADER_LEN:
        raise NetlinkDecodeError(f"message too short ({len(raw)} bytes)")
    msg_len = struct.unpack_from("<I", raw, 0)[0]
    body = raw[HEADER_LEN : min(len(raw), msg_len)] if msg_len >= HEADER_LEN else raw[HEADER_LEN:]
    dp_ifindex = struct.unpack_from("<i", raw, 20)[0]
    out = {"dp_ifindex": dp_ifindex, "key": {}, "mask": {}, "actions": None, "ufid": None,
           "truncated": msg_len > len(raw)}
    for typ, p in attrs(body):
        if typ == FLOW_ATTR_KEY:
            out["key"] = decode_key(p)
        elif typ == FLOW_ATTR_MASK:
            out["mask"] = decode_key(p)
        elif typ == FLOW_ATTR_ACTIONS:
            out["actions"] = decode_actions(p)
        elif typ == FLOW_ATTR_UFID:
            out["ufid"] = p.hex()
    return out


def significant_key(decoded: dict) -> dict:
    """The key fields the megaflow actually matches on (mask non-zero, or no mask sent)."""
    key, mask = decoded["key"], decoded["mask"]
    if not mask:
        return dict(key)
    wild_zero = {"eth_src": "00:00:00:00:00:00", "eth_dst": "00:00:00:00:00:00", "ip_src": "0.0.0.0",
                 "ip_dst": "0.0.0.0"}
    return {k: v for k, v in key.items() if k in mask and mask[k] not in (0, wild_zero.get(k))}
