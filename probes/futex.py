"""futex (guide tier 3, `futex.bt`): per thread per interval, FUTEX_WAIT count and time, FUTEX_WAKE count."""

from __future__ import annotations

import os
import time

from . import target
from .base import DURATION, PID, TID, Probe, interval_flag
from .runtime import clock, stop
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.loader import load
from .runtime.params import CDefines

_COUNTERS = ("waits_started", "waits_ended", "wait_ns", "wait_timeouts", "wait_eagain", "wake_count", "woken")
KIND_WAIT = 1  # struct pending.kind in futex.bpf.c


class Futex(Probe):
    name = "futex"
    title = "Futex wait/wake per thread (futex.bt)"
    tier = 3
    cost = "low-medium: two map updates per futex call of the traced threads"
    description = ("Per thread and interval: FUTEX_WAIT calls, time waiting (a wait counts in every interval "
                   "it spans), average wait, FUTEX_WAKE calls and how many waiters they woke.")
    reads_kernel_structs = False
    flags = (
        PID, TID,
        interval_flag(1.0),
        DURATION,
    )

    MAX_THREADS = 16384

    def __init__(self, caps=None, **raw):
        super().__init__(caps, **raw)
        target.check_threads_of("--tid", self.options.tid, self.options.pid)

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        missing = [ev for ev in ("sys_enter_futex", "sys_exit_futex") if not caps.tracepoint("syscalls", ev)]
        if not caps.tracefs or missing:
            return ("the syscalls:sys_enter_futex / sys_exit_futex tracepoints are missing: the kernel needs "
                    "CONFIG_FTRACE_SYSCALLS=y and tracefs mounted (mount -t tracefs nodev /sys/kernel/tracing)")
        return None

    def load(self):
        o = self.options
        d = CDefines()
        target.filter_defines(d, o.pid, o.tid)
        d.set("NS_MAX_THREADS", self.MAX_THREADS)
        bpf = load("futex.bpf.c", d, [])
        target.fill_thread_filter(bpf, o.tid)
        self._seen = Deltas()  # tid -> its counters
        self._waited = Deltas()  # tid -> ns waited, the ongoing wait included
        self._last_read = time.monotonic()
        return bpf

    def describe_attach(self) -> str:
        o = self.options
        return f"tracepoints syscalls:sys_enter_futex/sys_exit_futex; {target.describe_filter(o.pid, o.tid)}"

    def wait(self, timeout: float) -> None:
        target.stop_if_gone(self.options.pid)
        stop.sleep(timeout)

    def _ongoing_waits(self, now_ns: int) -> dict[int, int]:
        """tid -> how long (ns) its FUTEX_WAIT had been going on at ``now_ns`` (the read's
        instant, where its interval ends), for threads inside one.  Read after the counters:
        a wait ending in between is missed once (counted at the next read), never twice."""
        starts = {k.value: p.ts for k, p in self.bpf[b"pending"].items() if p.kind == KIND_WAIT}
        return {tid: max(0, now_ns - ts) for tid, ts in starts.items()}

    def read(self) -> list[dict]:
        """One record: what each thread did since the previous read."""
        # One instant ends the interval and the ongoing waits: measured at the map reads
        # instead, a loaded host counted more than 1000 ms of waiting per second.
        now_ns = time.monotonic_ns()  # the clock of bpf_ktime_get_ns()
        now = now_ns / 1e9
        interval, self._last_read = now - self._last_read, now
        stats = self.bpf[b"stats"]
        counters = {key.value: (key, s, tuple(getattr(s, name) for name in _COUNTERS)) for key, s in stats.items()}
        ongoing = self._ongoing_waits(now_ns)
        threads = []
        for tid, (key, s, current) in counters.items():
            d = dict(zip(_COUNTERS, self._seen.of(tid, current)))
            # Waited so far: the waits that ended plus the part of the one going on.  Never
            # lower than at the previous read (a wait that ended between the two map reads).
            waited_ns = self._waited.rise(tid, s.wait_ns + ongoing.get(tid, 0))
            if not os.path.exists(f"/proc/{s.tgid}/task/{tid}"):
                # Exited: its counts are final; free the slots (a reused id starts afresh).
                del stats[key]
                self.bpf[b"pending"].pop(self.bpf[b"pending"].Key(tid), None)
                self._seen.forget(tid)
                self._waited.forget(tid)
            if not any(d.values()) and not waited_ns and tid not in ongoing:
                continue
            ended = d["waits_ended"]
            threads.append({
                "tid": tid,
                "pid": s.tgid,
                "comm": target.thread_name(tid) or s.comm.decode("utf-8", "replace"),
                "wait_count": d["waits_started"],
                "waits_ended": ended,
                "wait_total_us": waited_ns // 1000,
                "wait_ms_per_s": round(waited_ns / 1e6 / interval, 1) if interval > 0 else None,
                "wait_avg_us": d["wait_ns"] // 1000 // ended if ended else None,
                "waiting_us": ongoing[tid] // 1000 if tid in ongoing else None,
                "wait_timeouts": d["wait_timeouts"],
                "wait_eagain": d["wait_eagain"],
                "wake_count": d["wake_count"],
                "woken": d["woken"],
            })
        threads.sort(key=lambda t: (-t["wait_total_us"], -t["wake_count"]))
        return [{
            "type": "futex",
            "time": clock.iso_wall(time.time()),
            "interval_s": round(interval, 3),
            "pid": self.options.pid or None,
            "threads": threads,
            "uncounted_table_full": sum(self.bpf[b"lost"][0]),
        }]

    @staticmethod
    def format_text(r: dict) -> str:
        lines = [f"[{r['time'][11:19]}] futex activity over {r['interval_s']:.2f} s"]
        if not r["threads"]:
            lines.append("  no futex calls")
        else:
            lines.append(f"  {'TID':>7} {'COMM':<16} {'WAITS':>7} {'WAIT ms':>9} {'AVG us':>9} {'ms/s':>7} "
                         f"{'WAKES':>7} {'WOKEN':>7}  NOW WAITING")
        for t in r["threads"]:
            avg = t["wait_avg_us"] if t["wait_avg_us"] is not None else "-"
            now = f"  for {t['waiting_us'] / 1000:.1f} ms" if t["waiting_us"] is not None else ""
            lines.append(f"  {t['tid']:>7} {t['comm']:<16} {t['wait_count']:>7} {t['wait_total_us'] / 1000:>9.1f} "
                         f"{avg:>9} {t['wait_ms_per_s'] or 0:>7} {t['wake_count']:>7} {t['woken']:>7}{now}")
        if r["uncounted_table_full"]:
            lines.append(f"  {r['uncounted_table_full']} calls not counted so far: thread table full")
        return "\n".join(lines)
