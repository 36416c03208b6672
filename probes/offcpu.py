"""offcpu (guide tier 3, `offcputime-ts`): how long threads were off CPU, when, and in which stacks."""

from __future__ import annotations

import ctypes as ct
import re
import time

from vocab.stacks import function_of

from . import target
from .base import DURATION, PID, TID, Flag, Probe, Unavailable, interval_flag
from .events import EventStream
from .runtime import clock, stop
from .runtime.attach import attach_or_unload
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.layout import CMirror
from .runtime.loader import load
from .runtime.params import CDefines, ParamError
from .runtime.stacks import UserSymbols, kernel_stack

FIELDS = ["TASK_PID"]

PREEMPTED, UNKNOWN = 0x10000, 0x20000
# Raw task state bits (raw tracepoint on >= 5.18) and the tracepoint's report form.
_RAW_STATES = ((0x402, "I"), (0x1, "S"), (0x2, "D"), (0x4, "T"), (0x8, "t"), (0x40, "P"), (0x80, "X"),
               (0x1000, "D"))
_REPORT_STATES = ((0x1, "S"), (0x2, "D"), (0x4, "T"), (0x8, "t"), (0x10, "X"), (0x20, "Z"), (0x40, "P"),
                  (0x80, "I"))
STATE_WORDS = {"R": "preempted (runnable)", "S": "sleeping", "D": "uninterruptible", "I": "idle",
               "T": "stopped", "t": "traced", "P": "parked", "X": "dead", "Z": "zombie", "?": "blocked"}


def state_letter(value: int, raw_tp: bool) -> str:
    """The `ps` letter of the state a thread was switched out in."""
    if value == PREEMPTED:
        return "R"
    if value == UNKNOWN:
        return "?"
    for bits, letter in (_RAW_STATES if raw_tp else _REPORT_STATES):
        if value & bits == bits:
            return letter
    return "?"


def raw_tp_has_state(release: str) -> bool:
    """sched_switch's raw arguments gained prev_state in 5.18."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (5, 18)


class BlockEvent(CMirror):
    """Mirror of struct block_event in offcpu.bpf.c."""

    _c_struct_ = "block_event"
    _c_when_ = "!NS_AGGREGATE"  # --aggregate sends no events
    _fields_ = [("start_ns", ct.c_uint64), ("end_ns", ct.c_uint64), ("tgid", ct.c_uint32), ("tid", ct.c_uint32),
                ("state", ct.c_uint32), ("cpu", ct.c_uint32), ("kstack", ct.c_int32), ("ustack", ct.c_int32),
                ("comm", ct.c_char * 16)]


def _choose_hook(caps: KernelCaps, want: str) -> str:
    """"raw-tracepoint", "tracepoint", or why neither can be used."""
    tracepoint = bool(caps.tracefs) and caps.tracepoint("sched", "sched_switch")
    raw = caps.raw_tracepoints
    if want == "auto":
        # The raw tracepoint reads task_struct.pid (an offset from BTF or matching headers), and
        # before 5.18 it carries no prev_state: neither the state nor a thread's death (see
        # offcpu.bpf.c) can be told then, so the tracepoint is better where there is one.
        offsets = bool(caps.btf or caps.matching_headers)
        best = raw and offsets and (raw_tp_has_state(caps.release) or not tracepoint)
        want = "raw-tracepoint" if best else "tracepoint"
    if want == "raw-tracepoint":
        return "raw-tracepoint" if raw else "raw tracepoints need kernel 4.17 or newer; use --attach tracepoint"
    if tracepoint:
        return "tracepoint"
    return ("the sched:sched_switch tracepoint is not available: mount tracefs "
            "(mount -t tracefs nodev /sys/kernel/tracing) on a kernel built with CONFIG_TRACEPOINTS")


# Where a thread blocks: its kernel stack's first frame outside the scheduler itself.
_SCHEDULER = re.compile(r"^(__)?(schedule|preempt_schedule|io_schedule|_?cond_resched)")
_COMPILER_SUFFIX = re.compile(r"\.(constprop|isra|part|cold|llvm)\.\d+.*$|\.cold$")


def blocked_in(kernel_frames: list[str]) -> str | None:
    """The kernel function a block happened in (``futex_do_wait``, ``do_nanosleep``,
    ``__mutex_lock``...): the first frame that is not scheduler machinery, without the
    compiler's ``.constprop.0``-style suffix; None without a kernel stack."""
    for frame in kernel_frames:
        name = _COMPILER_SUFFIX.sub("", function_of(frame))
        if not _SCHEDULER.match(name):
            return name
    return None


class OffCpu(EventStream, Probe):
    reads_kernel_structs = False  # only on the raw tracepoint, which it then does not choose
    name = "offcpu"
    title = "Off-CPU time with stacks (offcputime-ts)"
    tier = 3
    cost = "medium-high: two stack walks per context switch of the traced threads; trace one process"
    description = ("Per thread: when and how long it was off CPU, in which state, with kernel and user stacks; "
                   "per block or totalled by stack (--aggregate).")
    flags = (
        PID, TID, DURATION,
        Flag("min-block-us", "int", "ignore blocks shorter than this many microseconds", default=1000,
             lo=1, hi=3600 * 10**6, label="Shortest block (µs)"),
        Flag("aggregate", "bool", "total the off-CPU time by thread and stack instead of one line per block",
             label="Total by stack"),
        interval_flag(None, "with --aggregate: seconds between reports (default: one report at the end)"),
        Flag("top", "int", "with --aggregate: stacks per report, largest total first (0: all)", default=0, lo=0,
             hi=100000, label="Stacks per report"),
        Flag("attach", "choice", "attach point: auto (raw tracepoint where available), raw-tracepoint or tracepoint",
             default="auto", choices=("auto", "raw-tracepoint", "tracepoint"), label="Attach point"),
    )

    MAX_THREADS = 16384
    MAX_KEYS = 16384
    STACK_ENTRIES = 16384

    def __init__(self, caps=None, **raw):
        super().__init__(caps, **raw)
        o = self.options
        target.check_threads_of("--tid", o.tid, o.pid)
        if o.interval and not o.aggregate:
            raise ParamError("--interval", o.raw.get("interval"),
                             "only together with --aggregate (without it every block is printed as it ends)")
        # Per-block records stream as they come; totals are reported per interval or once at the end.
        self.streaming = not o.aggregate
        if o.aggregate and not o.interval:
            o.values["interval"] = o.duration or 365 * 86400.0

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        hook = _choose_hook(caps, "auto")
        return None if hook in ("raw-tracepoint", "tracepoint") else hook

    def load(self):
        o = self.options
        hook = _choose_hook(self.caps, o.attach)
        if hook not in ("raw-tracepoint", "tracepoint"):
            raise Unavailable(f"{self.name}: {hook}")
        self.raw_tp = hook == "raw-tracepoint"
        d = CDefines()
        d.set("NS_RAW_TP", self.raw_tp)
        d.set("NS_RAW_HAS_STATE", raw_tp_has_state(self.caps.release))
        target.filter_defines(d, o.pid, o.tid)
        d.set("NS_MIN_BLOCK_NS", o.min_block_us * 1000)
        d.set("NS_AGGREGATE", o.aggregate)
        d.set("NS_MAX_THREADS", self.MAX_THREADS).set("NS_MAX_KEYS", self.MAX_KEYS)
        d.set("NS_STACK_ENTRIES", self.STACK_ENTRIES)
        bpf = load("offcpu.bpf.c", d, FIELDS if self.raw_tp else [])
        target.fill_thread_filter(bpf, o.tid)
        if self.raw_tp:
            attach_or_unload(bpf, "raw tracepoint sched_switch",
                             lambda: bpf.attach_raw_tracepoint(tp=b"sched_switch", fn_name=b"ns_offcpu_switch"))
        self.symbols = UserSymbols()
        for pid in ({o.pid} | {target.tgid_of(t) for t in o.tid}) - {0}:
            self.symbols.warm(pid)  # while it lives: its memory map is read now
        self._seen = Deltas()  # stack key -> (total ns, blocks); "lost" -> blocks not counted
        self._last_read = time.monotonic()
        if not o.aggregate:
            self.open_events(bpf, self._on_event)
        return bpf

    def describe_attach(self) -> str:
        hook = "raw tracepoint sched_switch" if getattr(self, "raw_tp", True) else "tracepoint sched:sched_switch"
        o = self.options
        return f"{hook}; {target.describe_filter(o.pid, o.tid)}; blocks >= {o.min_block_us} us"

    # per-event mode -----------------------------------------------------------
    def _on_event(self, data, _size) -> None:
        # Symbolized now, while the process most likely still lives.
        self._pending.append(self._block_record(ct.cast(data, ct.POINTER(BlockEvent)).contents))

    def _stacks(self, tgid: int, kstack: int, ustack: int) -> dict:
        kernel = kernel_stack(self.bpf[b"stacks"], kstack)
        user = self.symbols.stack(self.bpf[b"stacks"], ustack, tgid)
        return {
            "blocked_in": blocked_in(kernel),
            "stack": kernel + user.frames,
            "kernel_stack": kernel,
            "user_stack": user.frames,
            "user_stack_truncated": user.truncated,
            "user_stack_note": user.note,
        }

    def _block_record(self, e: BlockEvent) -> dict:
        letter = state_letter(e.state, self.raw_tp)
        return {
            "type": "offcpu_block",
            "time": clock.iso(e.start_ns),
            "end": clock.iso(e.end_ns),
            "ktime_ns": e.start_ns,
            "pid": e.tgid,
            "tid": e.tid,
            "comm": e.comm.decode("utf-8", "replace"),
            "duration_us": (e.end_ns - e.start_ns) // 1000,
            "state": letter,
            "cpu": e.cpu,
            **self._stacks(e.tgid, e.kstack, e.ustack),
        }

    def wait(self, timeout: float) -> None:
        target.stop_if_gone(self.options.pid)
        if self.options.aggregate:
            stop.sleep(timeout)
        else:
            self.poll_events(timeout)

    # aggregated mode ----------------------------------------------------------
    def _stack_records(self) -> list[dict]:
        now = time.monotonic()
        interval, self._last_read = now - self._last_read, now
        out = []
        for key, val in self.bpf[b"totals"].items():
            raw = bytes(key)
            total_ns, count = self._seen.of(raw, (val.total_ns, val.count))
            if count <= 0:
                continue
            out.append({
                "type": "offcpu_stack",
                "time": clock.iso_wall(time.time()),
                "interval_s": round(interval, 3),
                "pid": key.tgid,
                "tid": key.tid,
                "comm": key.comm.decode("utf-8", "replace"),
                "state": state_letter(key.state, self.raw_tp),
                "total_us": total_ns // 1000,
                "count": count,
                "max_us": val.max_ns // 1000,  # over the whole run
                **self._stacks(key.tgid, key.kstack, key.ustack),
            })
        out.sort(key=lambda r: -r["total_us"])
        return out[: self.options.top] if self.options.top else out

    def read(self) -> list[dict]:
        if self.options.aggregate:
            records = self._stack_records()
        else:
            records = self.take_events()
        # Blocks the kernel could not time or total (its tables full): counted, reported once.
        uncounted = sum(sum(per_cpu) for per_cpu in self.bpf[b"lost"].values())
        new = self._seen.of("lost", uncounted)
        if new > 0:
            records.append({"type": "uncounted", "count": new, "total": uncounted,
                            "why": "the probe's thread or stack table was full"})
        return records

    # text ------------------------------------------------------------------------
    def format_text(self, r: dict) -> str:
        if r["type"] == "lost_events":
            return self.lost_text(r)
        if r["type"] == "uncounted":
            return f"WARNING: {r['count']} blocks not counted ({r['why']}; {r['total']} in all)"
        if r["type"] == "offcpu_block":
            head = (f"{r['time'][11:26]} {r['comm']:<16} tid {r['tid']:<7} off CPU {r['duration_us'] / 1000:9.3f} ms "
                    f"in {r['blocked_in'] or '?'} [{STATE_WORDS.get(r['state'], r['state'])}] cpu {r['cpu']}")
        else:
            head = (f"{r['comm']} tid {r['tid']}: {r['total_us'] / 1000:.3f} ms off CPU in {r['count']} blocks "
                    f"(max {r['max_us'] / 1000:.3f} ms) in {r['blocked_in'] or '?'} "
                    f"[{STATE_WORDS.get(r['state'], r['state'])}]")
        lines = [head]
        lines += [f"    {f}" for f in r["kernel_stack"]]
        if r["kernel_stack"] and r["user_stack"]:
            lines.append("    --")
        lines += [f"    {f}" for f in r["user_stack"]]
        if r["user_stack_note"]:
            lines.append(f"    ({r['user_stack_note']})")
        return "\n".join(lines) + "\n"

