"""Attaching a loaded program, with cleanup and a plain error when it fails."""

from __future__ import annotations

from typing import Callable

from .loader import ProbeError, unload


def attach_or_unload(bpf, what: str, attach: Callable[[], object]) -> None:
    """Run ``attach()``; if BCC refuses, free the whole program (start() has not
    handed it to close() yet) and raise a ProbeError naming ``what``."""
    try:
        attach()
    except Exception as e:  # BCC raises bare Exception
        unload(bpf)
        raise ProbeError(f"could not attach {what}: {e}") from None


def attach_kprobe(bpf, function: str, fn_name: str) -> None:
    """A kprobe on ``function`` running ``fn_name``, or the program freed and a ProbeError."""
    attach_or_unload(bpf, f"kprobe {function}",
                     lambda: bpf.attach_kprobe(event=function.encode(), fn_name=fn_name.encode()))


def attach_kretprobe(bpf, function: str, fn_name: str) -> None:
    """A kretprobe on ``function`` running ``fn_name``, or the program freed and a ProbeError."""
    attach_or_unload(bpf, f"kretprobe {function}",
                     lambda: bpf.attach_kretprobe(event=function.encode(), fn_name=fn_name.encode()))
