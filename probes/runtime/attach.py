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


def attach_kretprobe(bpf, function: str, fn_name: str, maxactive: int = 0) -> None:
    """A kretprobe on ``function`` running ``fn_name`` (``maxactive``: its instances, 0 the
    kernel's default), or the program freed and a ProbeError."""
    attach_or_unload(bpf, f"kretprobe {function}", lambda: bpf.attach_kretprobe(
        event=function.encode(), fn_name=fn_name.encode(), maxactive=maxactive))


HOOK_MODES = ("auto", "fentry", "kprobe")


def link_key(program_key: bytes) -> bytes:
    """Where BCC keeps a trampoline's link fd (its cleanup closes them: that detaches)."""
    return b"kfunc__" + program_key


class FunctionHooks:
    """A probe's hooks on kernel functions, by the user's ``--attach``: ``fentry`` (BPF trampolines,
    an error where the kernel refuses one), ``kprobe``, or ``auto`` (a trampoline where the kernel
    takes it, a kprobe on that hook otherwise).  Each hook's way and any fallback's reason are kept
    for the probe's start line and records.  The program is compiled with both twins of each
    hook: ``fn_name`` (kprobe or kretprobe) and ``fentry_<fn_name>`` / ``fexit_<fn_name>``
    (netsleuth.h's NS_ENTRY_HOOK, NS_RETURN_HOOK)."""

    def __init__(self, bpf, mode: str = "auto"):
        self.bpf, self.mode = bpf, mode
        self.by: dict[str, str] = {}  # hook ("fn" or "fn return") -> "fentry" | "fexit" | "kprobe" | "kretprobe"
        self.fell_back: dict[str, str] = {}  # hook -> why not a trampoline (auto only)
        self.trampolines: dict[str, bytes] = {}  # hook -> its program's key in bpf.funcs
        self._refused: str | None = None if mode != "kprobe" else "--attach kprobe"
        if mode != "kprobe" and (why := fentry.why_no_trampolines()):
            self._refused = why

    def entry(self, function: str, fn_name: str, symbol: str | None = None) -> str:
        """Hook ``function``'s entry; "fentry" or "kprobe" (on ``symbol``, its name in
        kallsyms where the compiler cloned it, e.g. ``f.isra.0``: a trampoline needs BTF's name)."""
        return self._hook(function, fn_name, symbol or function, at_return=False)

    def exit(self, function: str, fn_name: str, symbol: str | None = None, maxactive: int = 0) -> str:
        """Hook ``function``'s return; "fexit" or "kretprobe" (``maxactive``: its instances)."""
        return self._hook(function, fn_name, symbol or function, at_return=True, maxactive=maxactive)

    def _hook(self, function: str, fn_name: str, symbol: str, at_return: bool, maxactive: int = 0) -> str:
        hook = f"{function} return" if at_return else function
        trampoline, probe = ("fexit", "kretprobe") if at_return else ("fentry", "kprobe")
        why = self._refused
        if why is None:
            try:
                self._trampoline(hook, function, f"{trampoline}_{fn_name}", at_return)
                self.by[hook] = trampoline
                return trampoline
            except fentry.TrampolineError as e:
                why = str(e)
                if e.everywhere:
                    self._refused = why
        if self.mode == "fentry":
            unload(self.bpf)
            raise ProbeError(f"could not attach {trampoline} {function}: {why}")
        if self.mode == "auto":
            self.fell_back[hook] = why
        if at_return:
            attach_kretprobe(self.bpf, symbol, fn_name, maxactive)
        else:
            attach_kprobe(self.bpf, symbol, fn_name)
        self.by[hook] = probe
        return probe

    def _trampoline(self, hook: str, function: str, fn_name: str, at_return: bool) -> None:
        from bcc import BPF  # present: the program was compiled with it
        prog_fd, link_fd = fentry.load_and_attach(self.bpf.dump_func(fn_name.encode()), fn_name,
                                                  fentry.target(function), at_return)
        # Handed to BCC's own bookkeeping, so its cleanup closes them: closing the link detaches.
        key = f"{fn_name}@{function}".encode()
        self.bpf.funcs[key] = BPF.Function(self.bpf, key, prog_fd)
        self.bpf.kfunc_entry_fds[link_key(key)] = link_fd
        self.trampolines[hook] = key

    def describe(self) -> str:
        """The start line's words: each way with its functions, and why any hook took no
        trampoline: "fentry a, b; kretprobe c (no trampoline for c return: why)"."""
        ways: dict[str, list[str]] = {}
        for hook, way in self.by.items():
            ways.setdefault(way, []).append(hook.removesuffix(" return"))
        text = "; ".join(f"{way} {', '.join(fns)}" for way, fns in ways.items())
        by_reason: dict[str, list[str]] = {}  # one reason for all when the kernel refuses every one
        for hook, why in self.fell_back.items():
            by_reason.setdefault(why, []).append(hook)
        if by_reason:
            text += " (no trampoline " + "; ".join(f"for {', '.join(h)}: {why}" for why, h in by_reason.items()) + ")"
        return text

    def record(self) -> dict:
        """What the records say: each hook's way, and why any fell back from a trampoline."""
        return {"attach": self.mode, "hooks": dict(self.by), "fentry_refused": dict(self.fell_back)}
