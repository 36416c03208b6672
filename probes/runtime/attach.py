"""Attaching a loaded program, with cleanup and a plain error when it fails."""

from __future__ import annotations

from typing import Callable

from . import fentry
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


HOOK_MODES = ("auto", "fentry", "kprobe")


def link_key(program_key: bytes) -> bytes:
    """Where BCC keeps a trampoline's link fd (its cleanup closes them: that detaches)."""
    return b"kfunc__" + program_key


class FunctionHooks:
    """A probe's hooks on kernel functions, by the user's ``--attach``: ``fentry`` (BPF trampolines,
    an error where the kernel refuses one), ``kprobe``, or ``auto`` (a trampoline where the kernel
    takes it, a kprobe on that hook otherwise).  Each hook's way and any fallback's reason are kept
    for the probe's start line and records.  The program is compiled with both twins of each
    function: ``fn_name`` (kprobe) and ``fentry_<fn_name>``."""

    def __init__(self, bpf, mode: str = "auto"):
        self.bpf, self.mode = bpf, mode
        self.by: dict[str, str] = {}  # function -> "fentry" | "kprobe"
        self.fell_back: dict[str, str] = {}  # function -> why not fentry (auto only)
        self.trampolines: dict[str, bytes] = {}  # function -> its program's key in bpf.funcs
        self._refused: str | None = None if mode != "kprobe" else "--attach kprobe"
        if mode != "kprobe" and (why := fentry.why_no_trampolines()):
            self._refused = why

    def entry(self, function: str, fn_name: str) -> str:
        """Hook ``function``'s entry; "fentry" or "kprobe"."""
        why = self._refused
        if why is None:
            try:
                self._trampoline(function, f"fentry_{fn_name}")
                self.by[function] = "fentry"
                return "fentry"
            except fentry.TrampolineError as e:
                why = str(e)
                if e.everywhere:
                    self._refused = why
        if self.mode == "fentry":
            unload(self.bpf)
            raise ProbeError(f"could not attach fentry {function}: {why}")
        if self.mode == "auto":
            self.fell_back[function] = why
        attach_kprobe(self.bpf, function, fn_name)
        self.by[function] = "kprobe"
        return "kprobe"

    def _trampoline(self, function: str, fn_name: str) -> None:
        from bcc import BPF  # present: the program was compiled with it
        prog_fd, link_fd = fentry.load_and_attach(self.bpf.dump_func(fn_name.encode()), fn_name,
                                                  fentry.target(function))
        # Handed to BCC's own bookkeeping, so its cleanup closes them: closing the link detaches.
        key = f"{fn_name}@{function}".encode()
        self.bpf.funcs[key] = BPF.Function(self.bpf, key, prog_fd)
        self.bpf.kfunc_entry_fds[link_key(key)] = link_fd
        self.trampolines[function] = key

    def record(self) -> dict:
        """What the records say: each function's way, and why any fell back from fentry."""
        return {"attach": self.mode, "hooks": dict(self.by), "fentry_refused": dict(self.fell_back)}
