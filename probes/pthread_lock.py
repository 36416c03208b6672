"""pthread-lock (guide tier 3, `pthread_rwlock_wrlock.bt`): lock waits in one process, with the holder."""

from __future__ import annotations

import ctypes as ct
import dataclasses

from . import target
from .base import DURATION, PID, Flag, Probe, Unavailable
from .events import EventStream
from .runtime import clock
from .runtime.attach import attach_or_unload
from .runtime.kernel import KernelCaps
from .runtime.layout import CMirror
from .runtime.loader import ProbeError, load
from .runtime.offsets import OffsetsUnavailable, resolve
from .runtime.params import CDefines
from .runtime.stacks import UserSymbols

# How a lock is taken (the waiter's call, or how its holder took it); KIND_UNKNOWN (3) -> None.
KINDS = {0: "mutex", 1: "rdlock", 2: "wrlock"}

# libc function -> BPF entry handler.  Every one also gets the common return
# handler, which records the acquisition (and reports a long wait).
ACQUIRE = {
    "pthread_mutex_lock": "ns_mutex_enter",
    "pthread_mutex_timedlock": "ns_mutex_enter",
    "pthread_mutex_clocklock": "ns_mutex_enter",
    "pthread_rwlock_rdlock": "ns_rdlock_enter",
    "pthread_rwlock_timedrdlock": "ns_rdlock_enter",
    "pthread_rwlock_clockrdlock": "ns_rdlock_enter",
    "pthread_rwlock_wrlock": "ns_wrlock_enter",
    "pthread_rwlock_timedwrlock": "ns_wrlock_enter",
    "pthread_rwlock_clockwrlock": "ns_wrlock_enter",
    # No wait to report, but they change who holds the lock:
    "pthread_mutex_trylock": "ns_trymutex_enter",
    "pthread_rwlock_tryrdlock": "ns_tryrdlock_enter",
    "pthread_rwlock_trywrlock": "ns_trywrlock_enter",
    "pthread_cond_wait": "ns_cond_enter",
    "pthread_cond_timedwait": "ns_cond_enter",
    "pthread_cond_clockwait": "ns_cond_enter",
}
RELEASE = {"pthread_mutex_unlock": "ns_unlock", "pthread_rwlock_unlock": "ns_unlock"}
# Without these the probe would be blind; the others are in newer glibc only.
REQUIRED = ("pthread_mutex_lock", "pthread_rwlock_rdlock", "pthread_rwlock_wrlock",
            "pthread_mutex_unlock", "pthread_rwlock_unlock")


class WaitEvent(CMirror):
    """Mirror of struct wait_event in pthread_lock.bpf.c."""

    _c_struct_ = "wait_event"
    _fields_ = [("start_ns", ct.c_uint64), ("end_ns", ct.c_uint64), ("lock", ct.c_uint64),
                ("holder_since", ct.c_uint64), ("release_ns", ct.c_uint64), ("releaser_since", ct.c_uint64),
                ("releaser_caller", ct.c_uint64), ("releaser_ran_ns", ct.c_uint64),
                ("releaser_queued_ns", ct.c_uint64), ("waiter_tid", ct.c_uint32), ("holder_tid", ct.c_uint32),
                ("releaser_tid", ct.c_uint32), ("kind", ct.c_uint32), ("holder_kind", ct.c_uint32),
                ("releaser_kind", ct.c_uint32), ("waiter_stack", ct.c_int32),
                ("releaser_stack", ct.c_int32), ("comm", ct.c_char * 16), ("holder_comm", ct.c_char * 16),
                ("releaser_comm", ct.c_char * 16)]


def _function_addresses(library: str) -> dict[str, list[int]]:
    """Addresses of the pthread functions in ``library`` (several for versioned symbols)."""
    from bcc import BPF

    pattern = "^(" + "|".join(list(ACQUIRE) + list(RELEASE)) + ")$"
    found: dict[str, list[int]] = {}
    for name, addr in BPF.get_user_functions_and_addresses(library.encode(), pattern):
        name = name.decode() if isinstance(name, bytes) else name
        if addr not in found.setdefault(name, []):
            found[name].append(addr)
    return found


# The holder's own scheduler times (on CPU, waiting for one): optional, where BTF or headers know them.
SCHED_FIELDS = ["TASK_SUM_EXEC", "TASK_RUN_DELAY"]


def _sched_fields_known(caps: KernelCaps) -> bool:
    try:
        offsets = resolve(bool(caps.matching_headers))
    except (OffsetsUnavailable, OSError):
        return False
    return all(f in offsets.values for f in SCHED_FIELDS)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class PthreadLock(EventStream, Probe):
    name = "pthread-lock"
    title = "pthread lock waits with the holder (pthread_rwlock_wrlock.bt)"
    tier = 3
    cost = ("high on lock-heavy processes: two uprobe traps per lock call (a few microseconds each); "
            "short runs only")
    description = ("Waits on pthread mutexes and rwlocks in one process: lock address, waiting thread, "
                   "wait time, and the thread that held the lock, with stacks.")
    streaming = True
    reads_kernel_structs = False
    flags = (
        dataclasses.replace(PID, help="the process whose locks to trace", required=True),
        Flag("min-wait-us", "int", "report only waits at least this long, in microseconds", default=100,
             lo=0, hi=3600 * 10**6, label="Shortest wait (µs)"),
        DURATION,
    )

    MAX_LOCKS = 65536
    MAX_THREADS = 16384
    STACK_ENTRIES = 16384

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        if not caps.uprobes:
            return ("uprobes are not available: the kernel needs CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y "
                    "(with tracefs mounted: mount -t tracefs nodev /sys/kernel/tracing)")
        return None

    def load(self):
        o = self.options
        library = target.library_defining(o.pid, "pthread_mutex_lock")
        if library is None:
            raise Unavailable(f"{self.name}: process {o.pid} maps no libc/libpthread defining pthread_mutex_lock "
                              "(statically linked, or not using pthreads): there is nothing to put uprobes on")
        addresses = _function_addresses(library)
        missing = [f for f in REQUIRED if f not in addresses]
        if missing:
            raise ProbeError(f"{library} lacks {', '.join(missing)}: cannot trace lock waits there")
        d = CDefines()
        d.set("NS_F_TGID", o.pid).set("NS_MIN_WAIT_NS", o.min_wait_us * 1000)
        d.set("NS_MAX_LOCKS", self.MAX_LOCKS).set("NS_MAX_THREADS", self.MAX_THREADS)
        d.set("NS_STACK_ENTRIES", self.STACK_ENTRIES)
        self.holder_sched = _sched_fields_known(self.caps)
        d.set("NS_HOLDER_SCHED", self.holder_sched)
        bpf = load("pthread_lock.bpf.c", d, SCHED_FIELDS if self.holder_sched else [])
        self.library = library
        self.attached = sorted(addresses)
        for func, addrs in addresses.items():
            for addr in addrs:
                self._attach(bpf, func, addr)
        self.symbols = UserSymbols()
        self.symbols.warm(o.pid)
        # Symbolized as it comes, while the process lives.
        self.open_events(bpf, lambda data, _size: self._pending.append(
            self._record(ct.cast(data, ct.POINTER(WaitEvent)).contents)))
        return bpf

    def _attach(self, bpf, func: str, addr: int) -> None:
        lib, pid = self.library.encode(), self.options.pid
        if func in RELEASE:
            attach_or_unload(bpf, f"uprobe {func}", lambda: bpf.attach_uprobe(
                name=lib, addr=addr, fn_name=RELEASE[func].encode(), pid=pid))
            return
        attach_or_unload(bpf, f"uprobe {func}", lambda: bpf.attach_uprobe(
            name=lib, addr=addr, fn_name=ACQUIRE[func].encode(), pid=pid))
        attach_or_unload(bpf, f"uretprobe {func}", lambda: bpf.attach_uretprobe(
            name=lib, addr=addr, fn_name=b"ns_lock_return", pid=pid))

    def describe_attach(self) -> str:
        o = self.options
        return (f"uprobes on {getattr(self, 'library', 'libc')} ({len(getattr(self, 'attached', []))} functions) "
                f"of process {o.pid}; waits >= {o.min_wait_us} us")

    def _record(self, e: WaitEvent) -> dict:
        pid, stacks = self.options.pid, self.bpf[b"stacks"]
        waiter = self.symbols.stack(stacks, e.waiter_stack, pid)
        # The holder on arrival; else the thread whose unlock let the waiter through.
        holder = e.holder_tid or e.releaser_tid or None
        releaser_is_holder = bool(e.releaser_tid) and e.releaser_tid == holder
        holder_stack = (self.symbols.stack(stacks, e.releaser_stack, pid, caller=e.releaser_caller)
                        if releaser_is_holder and e.releaser_stack >= 0 else None)
        since = e.holder_since if e.holder_tid else (e.releaser_since if releaser_is_holder else 0)
        hold_seen = releaser_is_holder and since and e.release_ns and e.releaser_since
        held = bool(hold_seen and self.holder_sched)
        return {
            "type": "lock_wait",
            "time": clock.iso(e.start_ns),
            "end": clock.iso(e.end_ns),
            "ktime_ns": e.start_ns,
            "pid": pid,
            "lock": hex(e.lock),
            "kind": KINDS.get(e.kind),
            "waiter_tid": e.waiter_tid,
            "waiter_comm": _text(e.comm),
            "wait_us": (e.end_ns - e.start_ns) // 1000,
            "holder_tid": holder,
            "holder_comm": _text((e.holder_comm if e.holder_tid else e.releaser_comm)) if holder else None,
            # How the holder had taken the lock (None when it was not seen taking it).
            "holder_kind": KINDS.get(e.holder_kind if e.holder_tid else e.releaser_kind) if holder else None,
            # How the holder is known: it acquired the lock while traced, or only released it.
            "holder_seen": "acquire" if e.holder_tid else ("release" if holder else None),
            # Acquire -> release of the holder, when both were seen.
            "holder_hold_us": ((e.release_ns - since) // 1000
                               if releaser_is_holder and since and e.release_ns else None),
            # What the holder did meanwhile: ran, or waited for a CPU (a starved holder).
            "holder_on_cpu_us": e.releaser_ran_ns // 1000 if held else None,
            "holder_runq_us": e.releaser_queued_ns // 1000 if held else None,
            "released_by_tid": e.releaser_tid or None,
            "stack": waiter.frames,
            "user_stack_truncated": waiter.truncated,
            "user_stack_note": waiter.note,
            "holder_stack": holder_stack.frames if holder_stack else None,
            "holder_stack_note": holder_stack.note if holder_stack else None,
        }

    def wait(self, timeout: float) -> None:
        target.stop_if_gone(self.options.pid)
        self.poll_events(timeout)

    def read(self) -> list[dict]:
        return self.take_events()

    def format_text(self, r: dict) -> str:
        if r["type"] == "lost_events":
            return self.lost_text(r)
        held = f" ({r['holder_kind']})" if r["holder_kind"] else ""
        holder = (f"held{held} by {r['holder_comm'] or '?'} tid {r['holder_tid']}" if r["holder_tid"]
                  else "holder unknown (taken before tracing started)")
        hold = f", held {r['holder_hold_us'] / 1000:.3f} ms" if r["holder_hold_us"] else ""
        lines = [f"{r['time'][11:26]} {r['waiter_comm']} tid {r['waiter_tid']} waited {r['wait_us'] / 1000:.3f} ms "
                 f"for {r['kind']} {r['lock']}, {holder}{hold}"]
        lines += [f"    {f}" for f in r["stack"]]
        if r["user_stack_note"]:
            lines.append(f"    ({r['user_stack_note']})")
        if r["holder_stack"]:
            lines.append("  holder released it at:")
            lines += [f"    {f}" for f in r["holder_stack"]]
            if r["holder_stack_note"]:
                lines.append(f"    ({r['holder_stack_note']})")
        return "\n".join(lines) + "\n"
