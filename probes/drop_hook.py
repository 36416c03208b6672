"""Where the drop probes attach on this kernel, and how a drop's location is named."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .runtime.kernel import KernelCaps
from .runtime.params import CDefines
from .runtime.stacks import function_of

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


@dataclass(frozen=True)
class DropHook:
    kind: str  # "tracepoint" or "kprobe"
    function: str | None  # kprobe target
    has_reason: bool

    def defines(self, d: CDefines) -> None:
        d.set("NS_DROP_TP", self.kind == "tracepoint")
        d.set("NS_DROP_HAS_REASON", self.has_reason)
        if self.kind == "kprobe":
            target = next(t for t in KPROBE_TARGETS if t[0] == self.function)
            d.set("NS_KPROBE_SKB_ARG", target[1])
            d.set("NS_KPROBE_REASON_ARG", target[2])

    def attach(self, bpf) -> None:
        # The tracepoint attaches itself (TRACEPOINT_PROBE); a kprobe is explicit.
        if self.kind == "kprobe":
            bpf.attach_kprobe(event=self.function, fn_name=b"ns_kprobe_drop")

    def describe(self) -> str:
        if self.kind == "tracepoint":
            return "tracepoint skb:kfree_skb" + (" (with drop reasons)" if self.has_reason else "")
        return f"kprobe {self.function}" + (" (with drop reasons)" if self.has_reason else "")


def choose(caps: KernelCaps, want: str = "auto") -> DropHook | str:
    """The best attach point for ``want`` (auto/tracepoint/kprobe), or why there is none."""
    if want in ("auto", "tracepoint"):
        if caps.tracefs and caps.tracepoint("skb", "kfree_skb"):
            return DropHook("tracepoint", None, bool(caps.drop_reasons))
        if want == "tracepoint":
            return "the skb:kfree_skb tracepoint is missing (is tracefs mounted? CONFIG_TRACEPOINTS?)"
    if not caps.kprobes:
        return "kprobes are not available on this kernel (CONFIG_KPROBES / CONFIG_KPROBE_EVENTS unset)"
    for name, _skb_arg, reason_arg in KPROBE_TARGETS:
        if caps.function(name):
            return DropHook("kprobe", name, reason_arg != 0 and bool(caps.drop_reasons))
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
