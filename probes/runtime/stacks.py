"""Kernel and user stack symbolization shared by the probes."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass


def ksym(addr: int) -> str:
    """``symbol+0xoff`` of a kernel address (``0x...`` when unknown)."""
    from bcc import BPF

    name = BPF.ksym(addr, show_offset=True)
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    if text.startswith("[unknown]"):
        return hex(addr)
    return text


def kernel_stack(stack_map, stack_id: int) -> list[str]:
    """The symbolized stack, from the traced code outwards (the tracing machinery's
    own frames, which raw tracepoints and kprobes capture, left out)."""
    if stack_id < 0:
        return []
    try:
        addrs = list(stack_map.walk(stack_id))
    except KeyError:
        return []
    return without_probe_frames([ksym(a) for a in addrs])


# ---- user stacks -------------------------------------------------------------

# Functions a complete user stack ends in: the entry point of a process or thread.
_USER_STACK_ROOTS = frozenset({
    "_start", "__libc_start_main", "__libc_start_call_main", "start_thread", "clone", "clone3",
    "__clone", "__clone3", "__clone_internal", "thread_start",
})
_EFAULT, _EEXIST = -14, -17


@dataclass(frozen=True)
class UserStack:
    frames: list[str]  # innermost first: "func+0xoff [module]" or "module+0xoff"
    truncated: bool  # the walk did not reach the thread's entry point
    note: str | None  # why, in one line, when truncated

    @staticmethod
    def missing(reason: str) -> "UserStack":
        return UserStack([], True, reason)


class UserSymbols:
    """Symbolizes user addresses per process.

    BCC reads a process's memory map when its cache is created, so a cache must
    be made (``warm``) while the process lives; afterwards it still resolves.
    """

    MAX_PROCESSES = 256

    def __init__(self) -> None:
        self._caches: dict[int, object] = {}

    def warm(self, pid: int):
        cache = self._caches.get(pid)
        if cache is None:
            from bcc import SymbolCache

            if len(self._caches) >= self.MAX_PROCESSES:
                self._caches.clear()  # system-wide tracing: bound the memory
            cache = self._caches[pid] = SymbolCache(pid)
        return cache

    def frame(self, pid: int, addr: int) -> tuple[str, str | None, str | None, int]:
        """(text, function, module basename, function start address) of one user address."""
        name, offset, module = self.warm(pid).resolve(addr, True)
        base = os.path.basename(module.decode("utf-8", "replace")) if module else None
        if name is None:
            return (f"{base}+{offset:#x}" if base else hex(addr)), None, base, 0
        func = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        text = f"{func}+{offset:#x}" + (f" [{base}]" if base else "")
        return text, func, base, addr - offset

    def stack(self, stack_map, stack_id: int, pid: int, caller: int = 0) -> UserStack:
        """The user stack ``stack_id`` of ``pid``, and whether it is complete.

        ``caller``: a return address read at the stack pointer by a probe on a
        function's first instruction, where frame-pointer walking skips the
        immediate caller; it is inserted as the second frame.
        """
        if stack_id == _EFAULT:
            return UserStack([], False, None)  # no user context (kernel thread)
        if stack_id == _EEXIST:
            return UserStack.missing("user stack lost: the stack table had a hash collision or was full")
        if stack_id < 0:
            return UserStack.missing(f"user stack not captured (error {stack_id})")
        try:
            addrs = list(stack_map.walk(stack_id))
        except KeyError:
            return UserStack.missing("user stack no longer in the stack table")
        # Newer kernels add the caller themselves when the probed instruction is `push %rbp`.
        if caller and addrs and (len(addrs) < 2 or addrs[1] != caller):
            addrs.insert(1, caller)
        if pid not in self._caches and not os.path.exists(f"/proc/{pid}"):
            return UserStack([hex(a) for a in addrs], True,
                             "user stack not symbolized: the process exited before it could be read")
        resolved = [self.frame(pid, a) for a in addrs]
        notes = []
        # An address in no mapping of the process is not code: a frame pointer walk
        # through code without frame pointers read junk there.  Cut the stack before it.
        junk = next((i for i, r in enumerate(resolved) if r[1] is None and r[2] is None), None)
        if junk is not None:
            notes.append(f"unwinding ran into a non-code address ({hex(addrs[junk])}), dropped")
            resolved = resolved[:junk]
        frames = [r[0] for r in resolved]
        if not resolved:
            return UserStack.missing("user stack empty" + (": " + notes[0] if notes else ""))
        _text, first_func, first_module, first_start = resolved[0]
        # A function without a frame pointer leaves the frame pointer at its caller's
        # frame, so the walk goes straight to the caller's caller.
        if not caller and first_func and keeps_frame_pointer(pid, first_start) is False:
            notes.append(f"the caller of {first_func} is missing ({first_func} in {first_module or '?'} "
                         "sets up no frame pointer)")
        _text, last_func, last_module, _start = resolved[-1]
        if last_func not in _USER_STACK_ROOTS:
            notes.append(f"frame-pointer unwinding stopped after {len(frames)} frame(s) in "
                         f"{last_module or 'an unknown module'}, probably built without frame pointers "
                         "(as Debian's libc is); outer callers are missing")
        if not notes:
            return UserStack(frames, False, None)
        return UserStack(frames, True, "user stack incomplete: " + "; ".join(reversed(notes)))


_FP_PROLOGUE = b"\x55\x48\x89\xe5"  # push %rbp; mov %rsp,%rbp
_ENDBR64 = b"\xf3\x0f\x1e\xfa"


def keeps_frame_pointer(pid: int, func_start: int) -> bool | None:
    """Whether the function at ``func_start`` in ``pid`` sets up a frame pointer
    (x86-64 prologue check; None when it cannot be told)."""
    if not func_start or platform.machine() != "x86_64":
        return None
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(func_start)
            code = mem.read(8)
    except (OSError, ValueError, OverflowError):
        return None
    if code.startswith(_ENDBR64):
        code = code[4:]
    return code.startswith(_FP_PROLOGUE)


# The tracing machinery's own innermost frames.  Our JIT-compiled program itself
# shows as `_einittext+0x...` or a bare address when BCC's symbol cache predates
# the program's load (seen intermittently on 6.18): drop those at the head too.
_PROBE_FRAME = re.compile(r"^(bpf_prog_|bpf_trace_run|__bpf_trace_|trace_call_bpf|perf_trace_|perf_syscall_|"
                          r"trace_event_raw_event_|__traceiter_|bpf_get_stack|_einittext\b|0x[0-9a-f]+$)")


def without_probe_frames(frames: list[str]) -> list[str]:
    """A kernel stack minus the innermost frames of the tracing machinery itself."""
    i = 0
    while i < len(frames) and _PROBE_FRAME.match(frames[i]):
        i += 1
    return frames[i:]
