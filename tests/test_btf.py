"""The BTF reader against an independent source: the compiler's offsetof over
`bpftool btf dump file /sys/kernel/btf/vmlinux format c`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from probes.runtime.btf import BTF, VMLINUX_BTF, BTFError
from probes.runtime import offsets
from probes.runtime.offsets import FIELDS, MODULE_FIELDS, SIZES, from_btf

pytestmark = pytest.mark.skipif(not VMLINUX_BTF.exists() or not shutil.which("bpftool") or not shutil.which("gcc"),
                                reason="needs /sys/kernel/btf/vmlinux, bpftool and gcc")

EXTRA = [("sk_buff", "tstamp"), ("sk_buff", "cb"), ("task_struct", "pid"), ("task_struct", "tgid"),
         ("task_struct", "comm"), ("net_device", "mtu"), ("sock", "sk_protocol")]


@pytest.fixture(scope="module")
def btf():
    return BTF.load()


@pytest.fixture(scope="module")
def compiler_offsets(tmp_path_factory):
    d = tmp_path_factory.mktemp("btf")
    vmlinux_h = d / "vmlinux.h"
    with vmlinux_h.open("w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"], stdout=f, check=True)
    fields = list(FIELDS.values()) + EXTRA + built_in_module_fields()
    src = d / "off.c"
    lines = ['#include "vmlinux.h"', "int printf(const char *, ...);", "int main(void) {"]
    for struct_name, field in fields:
        lines.append(f'  printf("{struct_name}.{field} %lu\\n", (unsigned long)__builtin_offsetof(struct {struct_name}, {field}));')
    for struct_name in SIZES.values():
        lines.append(f'  printf("sizeof.{struct_name} %lu\\n", (unsigned long)sizeof(struct {struct_name}));')
    lines += ["  return 0;", "}"]
    src.write_text("\n".join(lines))
    exe = d / "off"
    subprocess.run(["gcc", "-w", "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}


def built_in_module_fields() -> list[tuple[str, str]]:
    """The module-private fields whose module is built into this kernel (tun is, here)."""
    btf = BTF.load()
    return [(s, f) for _m, s, f in MODULE_FIELDS.values() if f and btf.find(4, s) is not None]


def test_offsets_match_compiler(btf, compiler_offsets):
    for struct_name, field in list(FIELDS.values()) + EXTRA + built_in_module_fields():
        assert btf.field(struct_name, field).offset == compiler_offsets[f"{struct_name}.{field}"], (struct_name, field)
    for name, struct_name in SIZES.items():
        assert from_btf().values[name] == str(compiler_offsets[f"sizeof.{struct_name}"])


def test_module_fields_of_a_built_in_module_come_from_vmlinux(btf, compiler_offsets):
    found = [(name, s, f) for name, (_m, s, f) in MODULE_FIELDS.items() if f and btf.find(4, s) is not None]
    if not found:
        pytest.skip("no module of MODULE_FIELDS is built into this kernel")
    for name, struct_name, field in found:
        assert offsets.module_offset(name) == compiler_offsets[f"{struct_name}.{field}"]


def test_a_module_that_is_not_there_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(MODULE_FIELDS, "NO_SUCH", ("nosuchmod", "nosuch_struct", "x"))
    with pytest.raises(offsets.OffsetsUnavailable, match=r"modprobe nosuchmod"):
        offsets.module_offset("NO_SUCH")


def test_function_parameters_by_name(btf):
    assert btf.params("tcp_v4_rcv") == ("skb",)
    with pytest.raises(BTFError, match="function no_such_fn not found"):
        btf.params("no_such_fn")


def test_resolved_offsets_cache_matches(btf):
    offsets = from_btf()
    for name, (struct_name, field) in FIELDS.items():
        assert offsets.values[name] == str(btf.field(struct_name, field).offset)


def test_field_sizes(btf):
    assert btf.field("sk_buff", "len").size == 4
    assert btf.field("sk_buff", "network_header").size == 2
    assert btf.field("net_device", "name").size == 16
    assert btf.field("sk_buff", "head").size == 8


def test_missing_struct_and_field_are_clear_errors(btf):
    with pytest.raises(BTFError, match="struct no_such_struct not found"):
        btf.field("no_such_struct", "x")
    with pytest.raises(BTFError, match="sk_buff has no field no_such_field"):
        btf.field("sk_buff", "no_such_field")


def test_enum_matches_tracefs_names(btf):
    from probes.runtime.kernel import drop_reason_names

    names = drop_reason_names()
    if not names:
        pytest.skip("kernel without drop reasons")
    enum = btf.enum("skb_drop_reason")
    for value, name in names.items():
        assert enum["SKB_DROP_REASON_" + name] == value


def test_rejects_garbage():
    with pytest.raises(BTFError):
        BTF(b"\x00" * 64)
    with pytest.raises(BTFError):
        BTF(b"\x9f\xeb")


def test_the_skb_window_takes_the_lengths_only_when_read_and_they_fit():
    parser = list(offsets.WINDOWS["NS_SKB_WIN"])
    lens = ["SKB_LEN", "SKB_DATA_LEN"]
    near = {"SKB_VLAN_TCI": "154", "SKB_PROTOCOL": "176", "SKB_NETWORK_HEADER": "180", "SKB_MAC_HEADER": "182",
            "SKB_HEAD": "192", "SKB_DATA": "200", "SKB_LEN": "112", "SKB_DATA_LEN": "116"}  # 6.18's layout
    flags = lambda values, names: offsets.window_cflags(offsets.StructOffsets("btf", values), names)
    assert flags(near, parser) == ["-DNS_SKB_WIN_START=152", "-DNS_SKB_WIN_LEN=56"]
    assert flags(near, parser + lens) == ["-DNS_SKB_WIN_START=112", "-DNS_SKB_WIN_LEN=96", "-DNS_SKB_WIN_LENS=1"]
    assert flags(near, parser + lens[:1]) == ["-DNS_SKB_WIN_START=152", "-DNS_SKB_WIN_LEN=56"]
    far = near | {"SKB_LEN": "40", "SKB_DATA_LEN": "44"}  # too far for one read: the parser's window alone
    assert flags(far, parser + lens) == ["-DNS_SKB_WIN_START=152", "-DNS_SKB_WIN_LEN=56"]
    assert flags(near | {"SKB_HEAD": "offsetof(struct sk_buff, head)"}, parser + lens) == []  # headers: per field
