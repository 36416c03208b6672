"""When the drop probes add the OVS drop-action hooks (probes/drop_hook.py).

Whether a kernel's OVS reports its drops itself is read from that kernel: this host's
own BTF (6.18: it does) in the first test.  The others describe other kernels by
hand (KernelCaps with a fixed function list, BTF blobs and header trees written
here: stand-ins for kernels that cannot exist on this machine)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from probes import drop_hook
from probes.drop_hook import OVS_DROP_SUBSYS, choose, ovs_action_ranges, ovs_reports_drops
from probes.runtime.kernel import KernelCaps, detect
from probes.runtime.params import CDefines

OVS_FUNCTIONS = {"do_execute_actions", "ovs_dp_upcall", "consume_skb", "kfree_skb_reason"}
ACTIONS, USERSPACE = (0xFFFFFFFFC0100000, 0xFFFFFFFFC0101000), (0xFFFFFFFFC0102000, 0xFFFFFFFFC0102400)


class FakeKernel(KernelCaps):
    """Stand-in for another kernel: /proc/kallsyms holds exactly ``functions``."""

    functions: frozenset[str] = frozenset()

    def function(self, name: str) -> bool:
        return name in self.functions

    def tracepoint(self, category: str, event: str) -> bool:
        return (category, event) == ("skb", "kfree_skb")


def kernel(release="6.1.0-18-amd64", btf=False, headers=None, functions=OVS_FUNCTIONS, **changes) -> FakeKernel:
    fields = dict(release=release, btf=btf, matching_headers=headers, tracefs="/sys/kernel/tracing",
                  kprobes=True, raw_tracepoints=True, uprobes=True, drop_reasons={2: "NOT_SPECIFIED"}, privileged=True)
    caps = FakeKernel(**{**fields, **changes})
    caps.functions = frozenset(functions)
    return caps


def symbols(name: str):
    return {"do_execute_actions": ACTIONS, "output_userspace": USERSPACE}.get(name)


def btf_blob(tmp_path, names: list[str]):
    """A file whose string table holds ``names`` as a BTF string section does (NUL-separated)."""
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x9f\xeb\x01\x00" + bytes(20) + b"\0" + b"\0".join(n.encode() for n in names) + b"\0")
    return path


def test_this_hosts_kernel_says_from_its_own_btf():
    caps = detect()
    if not caps.btf:
        pytest.skip("no BTF on this host")
    m = re.match(r"(\d+)\.(\d+)", caps.release)
    assert ovs_reports_drops(caps) == ((int(m.group(1)), int(m.group(2))) >= (6, 6))


def test_btf_decides_before_the_version(tmp_path, monkeypatch):
    with_subsys = btf_blob(tmp_path, ["SKB_DROP_REASON_SUBSYS_CORE", OVS_DROP_SUBSYS])
    assert ovs_reports_drops(kernel("6.1.0", btf=True), with_subsys) is True  # a backport
    (tmp_path / "b").mkdir()
    without = btf_blob(tmp_path / "b", ["SKB_DROP_REASON_SUBSYS_CORE", "SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE"])
    assert ovs_reports_drops(kernel("6.8.0", btf=True), without) is False


def test_matching_headers_then_the_release(tmp_path):
    tree = tmp_path / "build"
    (tree / "include/net").mkdir(parents=True)
    (tree / "include/net/dropreason.h").write_text(f"enum skb_drop_reason_subsys {{\n\t{OVS_DROP_SUBSYS},\n}};\n")
    assert ovs_reports_drops(kernel("6.1.0", headers=str(tree))) is True
    (tree / "include/net/dropreason.h").write_text("enum skb_drop_reason { SKB_NOT_DROPPED_YET = 0 };\n")
    assert ovs_reports_drops(kernel("6.8.0", headers=str(tree))) is False
    # Debian puts the common headers beside the build tree: the `source` link.
    empty = tmp_path / "deb" / "build"
    empty.mkdir(parents=True)
    (tmp_path / "deb" / "source" / "include/net").mkdir(parents=True)
    (tmp_path / "deb" / "source" / "include/net/dropreason.h").write_text(OVS_DROP_SUBSYS)
    assert ovs_reports_drops(kernel("6.1.0", headers=str(empty))) is True
    assert ovs_reports_drops(kernel("6.5.7")) is False and ovs_reports_drops(kernel("6.6.1")) is True
    assert ovs_reports_drops(kernel("4.19.90-2102.2.0.0062.oe1.x86_64")) is False


def test_ranges_only_where_the_kernel_needs_them(tmp_path):
    # 6.1 (OVS without drop reasons), output_userspace not inlined: its own range.
    assert ovs_action_ranges(kernel(functions=OVS_FUNCTIONS | {"output_userspace"}), symbols) == (ACTIONS, USERSPACE)
    # Inlined: the upcall for a userspace action comes from do_execute_actions itself.
    assert ovs_action_ranges(kernel(), symbols) == (ACTIONS, ACTIONS)
    # The old check looked for ovs_kfree_skb_reason: a static inline, never in kallsyms.
    assert ovs_action_ranges(kernel("6.8.0-1-amd64"), symbols) is None
    assert ovs_action_ranges(kernel(kprobes=False), symbols) is None
    assert ovs_action_ranges(kernel(functions=OVS_FUNCTIONS - {"ovs_dp_upcall"}), symbols) is None  # no OVS module
    assert ovs_action_ranges(kernel(), lambda name: None) is None  # addresses hidden (not root)


def test_the_hook_carries_both_ranges_into_the_program(monkeypatch):
    monkeypatch.setattr(drop_hook, "symbol_range", symbols)
    caps = kernel(functions=OVS_FUNCTIONS | {"output_userspace"})
    hook = choose(caps, "kprobe")
    assert (hook.ovs_action_range, hook.ovs_userspace_range) == (ACTIONS, USERSPACE)
    d = CDefines()
    hook.defines(d)
    values = dict(d.items())
    assert (values["NS_OVS_ACTION_LO"], values["NS_OVS_ACTION_HI"]) == ACTIONS
    assert (values["NS_OVS_USERSPACE_LO"], values["NS_OVS_USERSPACE_HI"]) == USERSPACE
    assert "ovs_dp_upcall" in hook.describe() and "consume_skb" in hook.describe()
    assert hook.reason_name(drop_hook.OVS_DROP_ACTION, {}) == "OVS_DROP_ACTION"
    plain = choose(caps, "kprobe", ovs_actions=False)
    assert plain.ovs_action_range is None and "consume_skb" not in plain.describe()
    assert dataclasses.replace(plain).reason_name(drop_hook.OVS_DROP_ACTION, {}) is None
    assert choose(kernel("6.9.0"), "kprobe").ovs_action_range is None
