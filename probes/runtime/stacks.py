"""Kernel stack symbolization shared by the probes."""

from __future__ import annotations

import re


def ksym(addr: int) -> str:
    """``symbol+0xoff`` of a kernel address (``0x...`` when unknown)."""
    from bcc import BPF

    name = BPF.ksym(addr, show_offset=True)
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    if text.startswith("[unknown]"):
        return hex(addr)
    return text


def kernel_stack(stack_map, stack_id: int) -> list[str]:
    if stack_id < 0:
        return []
    try:
        addrs = list(stack_map.walk(stack_id))
    except KeyError:
        return []
    return [ksym(a) for a in addrs]


def function_of(frame: str) -> str:
    """``tun_get_user+0x4d2`` -> ``tun_get_user``."""
    return re.split(r"\+0x", frame, maxsplit=1)[0]
