"""Where the drop probes attach on this kernel, and how a drop's location is named."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from vocab.stacks import function_of

from .base import Flag, Probe, Unavailable
from .runtime import direct_reads
from .runtime.attach import attach_kprobe, attach_or_unload
from .runtime.btf import BTF, VMLINUX_BTF, BTFError
from .runtime.kernel import KernelCaps, symbol_range
from .runtime.loader import load, unload
from .runtime.netns import current_netns
from .runtime.params import CDefines

# The struct fields the drop probes read (offsets from BTF or matching headers).
FIELDS = ["SKB_DEV", "SKB_HEAD", "SKB_DATA", "SKB_PROTOCOL", "SKB_NETWORK_HEADER", "SKB_MAC_HEADER",
          "SKB_VLAN_TCI", "NETDEV_NAME", "NETDEV_IFINDEX", "NETDEV_ND_NET", "NET_NS_INUM"]


def filter_defines(d: CDefines, o, proto_flag: str = "l4_protocol", device_flag: str = "device") -> None:
    """The 5-tuple and device filters both drop probes share."""
    d.set("NS_F_SADDR", o.src_ip).set("NS_F_DADDR", o.dst_ip)
    d.set("NS_F_SPORT", o.src_port).set("NS_F_DPORT", o.dst_port)
    d.set("NS_F_PROTO", o.values[proto_flag])
    ifindex = o.values[device_flag]
    ns = o.values.get("netns")
    d.set("NS_F_IFINDEX", ifindex)
    d.set("NS_F_NETNS", ns.inode if ns is not None else current_netns() if ifindex else 0)


NETNS = Flag("netns", "netns", "only drops on devices of this network namespace (a name from `ip netns`, "
             "or the id of a process inside it); the device/interface flag names a device there",
             label="Namespace")

# Kernel drop functions, newest first: (name, skb argument, reason argument or 0).
KPROBE_TARGETS = (
    ("sk_skb_reason_drop", 2, 3),  # 6.11+
    ("kfree_skb_reason", 1, 2),    # 5.17 - 6.10
    ("kfree_skb", 1, 0),           # older kernels (4.19: no drop reasons)
)

# Frames that free the skb rather than decide to drop it; the location we report
# is the first frame past these.
_FREE_FRAME = re.compile(
    r"^(sk_skb_reason_drop|kfree_skb\w*|__kfree_skb\w*|kfree_skb_list\w*|skb_release_\w+|"
    r"__dev_kfree_skb\w*|dev_kfree_skb\w*|consume_skb|__consume_stateless_skb|kfree_skbmem)$"
)


# Synthetic reason code (netsleuth.h) for packets an OVS drop action consumed.
OVS_DROP_ACTION = 0x7FFF0001
OVS_ACTION_FN = "do_execute_actions"
OVS_UPCALL_FN = "ovs_dp_upcall"
OVS_USERSPACE_FN = "output_userspace"  # a static function: inlined into do_execute_actions or not
# Since 6.6 OVS frees dropped packets with kfree_skb_reason and reasons of its own subsystem,
# which the kernel's enum skb_drop_reason_subsys names (include/net/dropreason.h).
OVS_DROP_SUBSYS = "SKB_DROP_REASON_SUBSYS_OPENVSWITCH"
OVS_DROP_REASONS_SINCE = (6, 6)

# The consume_skb kprobe runs for every packet the kernel frees normally, not only
# for OVS drops (a kprobe hit each, filtered in BPF by the caller's address); a busy
# host may prefer to give up seeing OVS drop actions.
NO_OVS_ACTIONS = Flag("no-ovs-actions", "bool",
                      "do not hook consume_skb for OVS drop actions (kernels before 6.6): "
                      "spares a kprobe hit on every freed packet", label="Skip OVS drop actions")


@dataclass(frozen=True)
class DropHook:
    kind: str  # "raw-tracepoint", "tracepoint" or "kprobe"
    function: str | None  # kprobe target
    has_reason: bool
    # [start, end) of do_execute_actions, where OVS drops go through consume_skb, and of the
    # code that hands packets of userspace actions to ovs_dp_upcall (netsleuth_ovs_drop.inc.c)
    ovs_action_range: tuple[int, int] | None = None
    ovs_userspace_range: tuple[int, int] | None = None
    # The raw tracepoint's program reads struct fields by plain loads (runtime/direct_reads.py)
    direct_reads: bool = False

    def reason_name(self, code: int, names: dict[int, str]) -> str | None:
        if code == OVS_DROP_ACTION and self.ovs_action_range:
            return "OVS_DROP_ACTION"
        if not self.has_reason:
            return None
        if code >> SUBSYS_SHIFT and code not in names:
            return ovs_reason_names().get(code)
        return names.get(code)

    def defines(self, d: CDefines) -> None:
        d.set("NS_DROP_RAW_TP", self.kind == "raw-tracepoint")
        d.set("NS_DROP_TP", self.kind == "tracepoint")
        d.set("NS_DROP_HAS_REASON", self.has_reason)
        d.set("NS_DIRECT_READS", self.direct_reads)
        if self.direct_reads:
            d.set("NS_RDONLY_CAST_STANDIN", direct_reads.RDONLY_CAST_STANDIN)
            d.set("NS_BTF_SK_BUFF", direct_reads.struct_type_id("sk_buff"))
            d.set("NS_BTF_NET_DEVICE", direct_reads.struct_type_id("net_device"))
        if self.kind == "kprobe":
            target = next(t for t in KPROBE_TARGETS if t[0] == self.function)
            d.set("NS_KPROBE_SKB_ARG", target[1])
            d.set("NS_KPROBE_REASON_ARG", target[2])
        if self.ovs_action_range:
            d.set("NS_OVS_ACTION_LO", self.ovs_action_range[0]).set("NS_OVS_ACTION_HI", self.ovs_action_range[1])
            lo, hi = self.ovs_userspace_range or self.ovs_action_range
            d.set("NS_OVS_USERSPACE_LO", lo).set("NS_OVS_USERSPACE_HI", hi)

    def attach(self, bpf) -> None:
        # The tracepoint attaches itself (TRACEPOINT_PROBE); the others are explicit.
        if self.kind == "raw-tracepoint" and self.direct_reads:
            direct_reads.attach_raw_tracepoint(bpf, "kfree_skb", "ns_raw_drop")  # its caller falls back
        elif self.kind == "raw-tracepoint":
            attach_or_unload(bpf, "raw tracepoint kfree_skb",
                             lambda: bpf.attach_raw_tracepoint(tp=b"kfree_skb", fn_name=b"ns_raw_drop"))
        if self.kind == "kprobe":
            attach_kprobe(bpf, self.function, "ns_kprobe_drop")
        if self.ovs_action_range:
            attach_kprobe(bpf, "consume_skb", "ns_kprobe_ovs_consume")
            attach_kprobe(bpf, OVS_UPCALL_FN, "ns_kprobe_ovs_upcall")

    def describe(self) -> str:
        reasons = " (with drop reasons)" if self.has_reason else ""
        if self.kind == "raw-tracepoint":
            direct = ", fields read by plain loads" if self.direct_reads else ""
            return "raw tracepoint kfree_skb" + reasons + direct + self._ovs_note()
        if self.kind == "tracepoint":
            return "tracepoint skb:kfree_skb" + reasons + self._ovs_note()
        return f"kprobe {self.function}" + reasons + self._ovs_note()

    def _ovs_note(self) -> str:
        return (" + kprobe consume_skb from do_execute_actions (OVS drop actions)"
                " + kprobe ovs_dp_upcall (userspace actions are not drops)") if self.ovs_action_range else ""


def ovs_reports_drops(caps: KernelCaps, btf_path: Path = VMLINUX_BTF) -> bool:
    """Does this kernel's OVS free dropped packets through kfree_skb with drop reasons of its
    own?  Read from what the kernel says about itself: its BTF names every enumerator, so
    the subsystem's name is in the BTF string table exactly when the kernel has it; else
    the matching headers' dropreason.h; else the release (6.6 added them)."""
    if caps.btf:
        try:
            return _btf_names(btf_path, OVS_DROP_SUBSYS)
        except OSError:
            pass
    if caps.matching_headers:
        for tree in (Path(caps.matching_headers), Path(caps.matching_headers).parent / "source"):
            try:
                return OVS_DROP_SUBSYS in (tree / "include/net/dropreason.h").read_text()
            except OSError:
                continue
    m = re.match(r"(\d+)\.(\d+)", caps.release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= OVS_DROP_REASONS_SINCE


# Subsystem drop reasons (6.6+) are (subsystem << 16) | n; the tracepoint's format file
# names only the core ones.  OVS's are enum ovs_drop_reason in the module's own BTF.
SUBSYS_SHIFT = 16
OVS_REASON_ENUM = "ovs_drop_reason"


@lru_cache(maxsize=1)
def ovs_reason_names() -> dict[int, str]:
    """OVS's drop reasons by code (OVS_DROP_LAST_ACTION, OVS_DROP_EXPLICIT, ...), from the
    openvswitch module's BTF; empty when the module, its BTF or the enum is missing."""
    try:
        values = BTF.load_module("openvswitch").enum(OVS_REASON_ENUM)
    except BTFError:
        return {}
    return {v: n for n, v in values.items() if not n.startswith("__") and not n.endswith("_MAX")}


@lru_cache(maxsize=4)
def _btf_names(path: Path, name: str) -> bool:
    return b"\0" + name.encode() + b"\0" in path.read_bytes()


def ovs_action_ranges(caps: KernelCaps, symbols=None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Where OVS drop actions are consumed unseen, when this kernel is one of those: the
    range of do_execute_actions, and the range that calls ovs_dp_upcall for a userspace
    action (output_userspace where it is a function of its own, else do_execute_actions)."""
    if not (caps.kprobes and all(caps.function(f) for f in (OVS_ACTION_FN, OVS_UPCALL_FN, "consume_skb"))):
        return None
    if ovs_reports_drops(caps):
        return None
    symbols = symbols or symbol_range  # [start, end) from /proc/kallsyms
    actions = symbols(OVS_ACTION_FN)
    if actions is None:
        return None
    userspace = symbols(OVS_USERSPACE_FN) if caps.function(OVS_USERSPACE_FN) else None
    return actions, userspace or actions


def choose(caps: KernelCaps, want: str = "auto", ovs_actions: bool = True) -> DropHook | str:
    """The best attach point for ``want`` (auto/raw-tracepoint/tracepoint/kprobe), or why there
    is none; with ``ovs_actions``, also the OVS drop-action hook where the kernel needs one.
    The tracepoint's format file says whether it carries a drop reason (and so whether the
    raw tracepoint's third argument is one)."""
    ovs = (ovs_action_ranges(caps) if ovs_actions else None) or (None, None)
    tracepoint = caps.tracefs and caps.tracepoint("skb", "kfree_skb")
    if want in ("auto", "raw-tracepoint") and tracepoint and caps.raw_tracepoints:
        return DropHook("raw-tracepoint", None, bool(caps.drop_reasons), *ovs)
    if want in ("auto", "tracepoint") and tracepoint:
        return DropHook("tracepoint", None, bool(caps.drop_reasons), *ovs)
    if want in ("raw-tracepoint", "tracepoint"):
        if not tracepoint:
            return "the skb:kfree_skb tracepoint is missing (is tracefs mounted? CONFIG_TRACEPOINTS?)"
        return "raw tracepoints need kernel 4.17 or newer; use --attach tracepoint"
    if not caps.kprobes:
        return "kprobes are not available on this kernel (CONFIG_KPROBES / CONFIG_KPROBE_EVENTS unset)"
    for name, _skb_arg, reason_arg in KPROBE_TARGETS:
        if caps.function(name):
            return DropHook("kprobe", name, reason_arg != 0 and bool(caps.drop_reasons), *ovs)
    return "none of the kernel drop functions (" + ", ".join(t[0] for t in KPROBE_TARGETS) + ") is in /proc/kallsyms"


def drop_location(location: str | None, stack: list[str]) -> str | None:
    """The function that decided the drop: the given location unless it is a free helper,
    else the first stack frame past the free helpers."""
    if location and not _FREE_FRAME.match(function_of(location)) and not location.startswith("0x"):
        return location
    for frame in stack:
        if not _FREE_FRAME.match(function_of(frame)):
            return frame
    return location


class DropHookProbe(Probe):
    """What drop-summary and drop-details share: availability and attaching the hook."""

    hook: DropHook
    # Read struct fields by plain loads where the kernel can (the drop hook's hot path).
    DIRECT_READS = False
    direct_reads_refused: str | None = None

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        hook = choose(caps, "auto")
        return hook if isinstance(hook, str) else None

    def c_defines(self, hook: DropHook) -> CDefines:  # pragma: no cover - each probe has its own
        raise NotImplementedError

    def load_with_hook(self, source: str, fields: list[str]):
        """Compile ``source`` for the attach point --attach asks for, and attach it."""
        hook = choose(self.caps, self.options.attach, not self.options.no_ovs_actions)
        if isinstance(hook, str):
            raise Unavailable(f"{self.name}: {hook}")
        if self.DIRECT_READS and hook.kind == "raw-tracepoint" and not hook.ovs_action_range \
                and direct_reads.unavailable() is None:
            hook = replace(hook, direct_reads=True)
        self.hook = hook
        bpf = load(source, self.c_defines(hook), fields)
        try:
            hook.attach(bpf)
        except direct_reads.DirectReadsError as e:  # the kernel's verifier said no: helper reads then
            unload(bpf)
            self.direct_reads_refused = str(e)
            self.hook = hook = replace(hook, direct_reads=False)
            bpf = load(source, self.c_defines(hook), fields)
            hook.attach(bpf)
        return bpf
