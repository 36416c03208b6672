"""Split BTF (a module's, /sys/kernel/btf/<module>) and the OVS drop-reason names read from it.

No openvswitch module here, so the two BTF blobs are built by the test, in the
layout of the kernel's (include/uapi/linux/btf.h): a base whose string table the
module's name offsets continue, as a module's BTF does."""

from __future__ import annotations

import struct

from probes import drop_hook
from probes.runtime import btf

ENUM_KIND = 6


def blob(types: bytes, strings: bytes) -> bytes:
    header = struct.pack("<HBBI", 0xEB9F, 1, 0, 24) + struct.pack("<IIII", 0, len(types), len(types), len(strings))
    return header + types + strings


def enum(name_off: int, values: list[tuple[int, int]]) -> bytes:
    out = struct.pack("<III", name_off, (ENUM_KIND << 24) | len(values), 4)
    return out + b"".join(struct.pack("<Ii", n, v) for n, v in values)


def strings(*names: str, start: int = 0) -> tuple[bytes, dict[str, int]]:
    table, offs = b"\0", {}
    for n in names:
        offs[n] = start + len(table)
        table += n.encode() + b"\0"
    return table, offs


def ovs_module_btf(tmp_path):
    base_strings, base_offs = strings("int", "skb_drop_reason_subsys", "SKB_DROP_REASON_SUBSYS_OPENVSWITCH")
    base = blob(enum(base_offs["skb_drop_reason_subsys"], [(base_offs["SKB_DROP_REASON_SUBSYS_OPENVSWITCH"], 3)]),
                base_strings)
    names = ("ovs_drop_reason", "__OVS_DROP_REASON", "OVS_DROP_LAST_ACTION", "OVS_DROP_EXPLICIT", "OVS_DROP_MAX")
    mod_strings, offs = strings(*names, start=len(base_strings))
    first = 3 << 16
    values = [(offs["__OVS_DROP_REASON"], first), (offs["OVS_DROP_LAST_ACTION"], first + 1),
              (offs["OVS_DROP_EXPLICIT"], first + 2), (offs["OVS_DROP_MAX"], first + 3)]
    (tmp_path / "vmlinux").write_bytes(base)
    (tmp_path / "openvswitch").write_bytes(blob(enum(offs["ovs_drop_reason"], values), mod_strings))
    return tmp_path / "vmlinux"


def test_split_btf_names_continue_the_base_string_table(tmp_path):
    module = btf.BTF.load_module("openvswitch", ovs_module_btf(tmp_path))
    assert module.enum("ovs_drop_reason")["OVS_DROP_EXPLICIT"] == (3 << 16) + 2


def test_ovs_drop_reasons_are_named_from_the_module(tmp_path, monkeypatch):
    monkeypatch.setattr(btf, "VMLINUX_BTF", ovs_module_btf(tmp_path))
    drop_hook.ovs_reason_names.cache_clear()
    try:
        hook = drop_hook.DropHook("raw-tracepoint", None, True)
        core = {2: "NO_SOCKET"}
        assert hook.reason_name((3 << 16) + 1, core) == "OVS_DROP_LAST_ACTION"
        assert hook.reason_name((3 << 16) + 2, core) == "OVS_DROP_EXPLICIT"
        assert hook.reason_name(2, core) == "NO_SOCKET"
        assert hook.reason_name((5 << 16) + 1, core) is None  # a subsystem nobody named
    finally:
        drop_hook.ovs_reason_names.cache_clear()


def test_no_module_btf_means_no_names(tmp_path, monkeypatch):
    monkeypatch.setattr(btf, "VMLINUX_BTF", tmp_path / "vmlinux")
    drop_hook.ovs_reason_names.cache_clear()
    try:
        assert drop_hook.ovs_reason_names() == {}
    finally:
        drop_hook.ovs_reason_names.cache_clear()


def test_split_btf_type_ids_continue_the_base(tmp_path):
    """A module struct whose members are module types (an anonymous union) and a base type:
    ids after the base's count are the module's own."""
    base_strings, base_offs = strings("int")
    int_type = struct.pack("<III", base_offs["int"], 1 << 24, 4) + struct.pack("<I", 32)  # id 1
    base = blob(int_type, base_strings)
    mod_strings, offs = strings("tun_file", "queue_index", "tx_ring", start=len(base_strings))
    union = struct.pack("<III", 0, (5 << 24) | 1, 8) + struct.pack("<III", offs["tx_ring"], 1, 0)  # id 2
    file_struct = struct.pack("<III", offs["tun_file"], (4 << 24) | 2, 24)  # id 3
    file_struct += struct.pack("<III", offs["queue_index"], 1, 0) + struct.pack("<III", 0, 2, 64)
    (tmp_path / "vmlinux").write_bytes(base)
    (tmp_path / "tun").write_bytes(blob(union + file_struct, mod_strings))
    module = btf.BTF.load_module("tun", tmp_path / "vmlinux")
    assert btf.type_count(base) == 1
    assert module.field("tun_file", "queue_index").offset == 0
    assert module.field("tun_file", "tx_ring").offset == 8  # through the module's anonymous union
    assert module.struct_size("tun_file") == 24
