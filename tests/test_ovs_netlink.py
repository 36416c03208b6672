"""FLOW_CMD_NEW decoding on messages built here the way ovs-vswitchd builds them
(include/uapi/linux/openvswitch.h); real ones are decoded in the lab tests."""

import socket
import struct

from probes.ovs_megaflow import band_of
from probes.ovs_netlink import decode_flow_msg, significant_key


def nla(typ: int, payload: bytes, nested: bool = False) -> bytes:
    raw = struct.pack("<HH", 4 + len(payload), typ | (0x8000 if nested else 0)) + payload
    return raw + b"\0" * ((-len(raw)) % 4)


def key_attrs(src, dst, proto, sport, dport, smac="52:54:00:00:00:01", dmac="52:54:00:00:00:02"):
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    return (nla(3, struct.pack("<I", 2)) + nla(4, mac(smac) + mac(dmac)) + nla(6, struct.pack("!H", 0x0800))
            + nla(7, socket.inet_aton(src) + socket.inet_aton(dst) + bytes([proto, 0, 64, 0]))
            + nla(10, struct.pack("!HH", sport, dport)))


def message(key: bytes, mask: bytes, actions: bytes) -> bytes:
    body = nla(1, key, True) + nla(7, mask, True) + nla(2, actions, True)
    genl = struct.pack("<BBH", 1, 1, 0) + struct.pack("<i", 7)
    return struct.pack("<IHHII", 16 + len(genl) + len(body), 0x20, 5, 1, 0) + genl + body


def test_decode_key_mask_actions():
    key = key_attrs("10.0.0.1", "10.0.0.2", 17, 4000, 53)
    mask = key_attrs("255.255.255.255", "255.255.255.255", 0xFF, 0, 0xFFFF, "00:00:00:00:00:00", "00:00:00:00:00:00")
    msg = decode_flow_msg(message(key, mask, nla(1, struct.pack("<I", 3))) + b"\xaa" * 100)  # trailing garbage
    assert msg["dp_ifindex"] == 7
    assert msg["key"]["ip_src"] == "10.0.0.1" and msg["key"]["l4_dst_port"] == 53 and msg["key"]["in_port"] == 2
    assert msg["key"]["eth_src"] == "52:54:00:00:00:01"
    assert msg["actions"] == ["output:3"]
    sig = significant_key(msg)
    assert sig["ip_dst"] == "10.0.0.2" and sig["l4_dst_port"] == 53
    assert "l4_src_port" not in sig and "eth_src" not in sig  # wildcarded


def test_empty_actions_is_drop_and_truncation_is_reported():
    raw = message(key_attrs("10.0.0.1", "10.0.0.2", 1, 0, 0), b"", b"")
    assert decode_flow_msg(raw)["actions"] == ["drop"]
    cut = decode_flow_msg(raw[:40])
    assert cut["truncated"] is True


def test_install_latency_bands():
    assert band_of(120).startswith("normal")
    assert band_of(5000).startswith("large OpenFlow")
    assert band_of(50_000).startswith("ovs-vswitchd CPU-bound")
    assert band_of(250_000).startswith("lock/scheduling")
