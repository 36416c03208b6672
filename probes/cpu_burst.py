"""cpu-burst (guide tier 3, the `pidstat -t -p PID 1` step): per-thread CPU of one process at a
fine interval, and the bursts above a threshold that coarse monitoring averages away."""

from __future__ import annotations

import dataclasses
import time

from . import target
from .base import DURATION, PID, Flag, Probe, interval_flag
from .runtime import clock, stop
from .runtime.kernel import KernelCaps
from .runtime.loader import ProbeError


@dataclasses.dataclass
class _Burst:
    start: float  # wall-clock seconds: start of the first interval above the threshold
    end: float
    samples: list[float] = dataclasses.field(default_factory=list)  # process CPU % per interval
    peak_ts: float = 0.0  # end of the interval with the highest CPU
    thread_cpu_s: dict[int, float] = dataclasses.field(default_factory=dict)
    # Samples below the threshold since the last one above: part of the burst if it resumes.
    dips: list[tuple[float, list[dict], float]] = dataclasses.field(default_factory=list)

    def add(self, cpu: float, threads: list[dict], at: float) -> None:
        if not self.samples or cpu > max(self.samples):
            self.peak_ts = at
        self.samples.append(cpu)
        for t in threads:
            self.thread_cpu_s[t["tid"]] = self.thread_cpu_s.get(t["tid"], 0.0) + t["cpu_s"]


class CpuBurst(Probe):
    name = "cpu-burst"
    title = "Per-thread CPU bursts (pidstat -t 1)"
    tier = 3
    cost = "negligible: reads /proc/PID/task/*/stat once per interval, no BPF"
    description = ("Per-thread user/system CPU of one process every interval (1 s or finer), and the bursts "
                   "where the process went above a threshold: start, length, peak and the threads behind them.")
    reads_kernel_structs = False
    flags = (
        dataclasses.replace(PID, help="the process to watch", required=True),
        interval_flag(1.0, "sampling interval in seconds", "Sample every (s)", hi=60),
        Flag("threshold", "int", "a burst is CPU above this percent of one core (can exceed 100 for "
             "several threads)", short="t", default=80, lo=1, hi=100000, label="Burst above (% CPU)"),
        Flag("merge-gap", "seconds", "dips below the threshold up to this long do not end a burst "
             "(useful when other work shares the CPUs)", default=0.0, lo=0, hi=3600, label="Merge dips up to (s)"),
        DURATION,
    )

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        try:
            import psutil  # noqa: F401
        except ImportError:
            return "the psutil Python module is missing: pip install psutil (it is a netsleuth dependency)"
        return None  # /proc/PID/task/*/stat is readable without privileges

    def load(self):
        import psutil

        pid = self.options.pid
        try:
            self._proc = psutil.Process(pid)
            self._prev = self._snapshot()
        except psutil.Error as e:
            raise ProbeError(f"cannot read process {pid}: {e}") from None
        self._names: dict[int, str] = {}
        self._records: list[dict] = []
        self._burst: _Burst | None = None
        self._next = time.monotonic() + self.options.interval
        return None  # nothing loaded in the kernel

    def describe_attach(self) -> str:
        o = self.options
        return f"/proc/{o.pid}/task every {o.interval:g} s; bursts above {o.threshold} %"

    def _snapshot(self) -> tuple[float, float, float, dict[int, tuple[float, float]]]:
        """(monotonic time, process user s, process system s, {tid: (user s, system s)})."""
        times = self._proc.cpu_times()
        threads = {t.id: (t.user_time, t.system_time) for t in self._proc.threads()}
        return time.monotonic(), times.user, times.system, threads

    def _name(self, tid: int) -> str:
        if tid not in self._names:
            self._names[tid] = target.thread_name(tid) or "?"
        return self._names[tid]

    # sampling -------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout``, sampling whenever an interval is complete."""
        end = time.monotonic() + timeout
        try:
            while True:
                now = time.monotonic()
                if now >= self._next:
                    self._sample()
                    self._next += self.options.interval
                    if self._next < now:  # we were suspended: do not catch up with a burst of samples
                        self._next = now + self.options.interval
                    continue
                if now >= end:
                    break
                stop.sleep(min(end, self._next) - now)
            if self.options.duration and self.started_at is not None:
                if time.monotonic() - self.started_at >= self.options.duration - 1e-3:
                    self.finish()
        except BaseException:  # Ctrl-C, SIGTERM, the process exited: report the burst in progress
            self.finish()
            raise

    def _sample(self) -> None:
        import psutil

        try:
            snap = self._snapshot()
        except psutil.Error:
            self.finish()
            target.stop_if_gone(self.options.pid)
            raise
        (t0, u0, s0, threads0), (t1, u1, s1, threads1) = self._prev, snap
        self._prev = snap
        elapsed = t1 - t0
        if elapsed <= 0:
            return
        wall_end = time.time()
        threads = []
        for tid, (u, s) in threads1.items():
            bu, bs = threads0.get(tid, (0.0, 0.0))  # a new thread ran only within this interval
            du, ds = max(0.0, u - bu), max(0.0, s - bs)
            if du + ds > 0:
                threads.append({"tid": tid, "comm": self._name(tid), "user_pct": _pct(du, elapsed),
                                "system_pct": _pct(ds, elapsed), "cpu_pct": _pct(du + ds, elapsed),
                                "cpu_s": du + ds})
        threads.sort(key=lambda t: -t["cpu_pct"])
        cpu = _pct(max(0.0, u1 - u0) + max(0.0, s1 - s0), elapsed)
        above = cpu > self.options.threshold
        self._records.append({
            "type": "cpu_sample",
            "time": clock.iso_wall(wall_end),
            "ts": round(wall_end, 3),  # the interval's end, for a timeline's x axis
            "interval_s": round(elapsed, 3),
            "pid": self.options.pid,
            "user_pct": _pct(max(0.0, u1 - u0), elapsed),
            "system_pct": _pct(max(0.0, s1 - s0), elapsed),
            "cpu_pct": cpu,
            "threshold_pct": self.options.threshold,
            "above_threshold": above,
            "threads": [{k: v for k, v in t.items() if k != "cpu_s"} for t in threads],
        })
        b = self._burst
        if above:
            if b is None:
                b = self._burst = _Burst(start=wall_end - elapsed, end=wall_end)
            for dip in b.dips:
                b.add(*dip)
            b.dips.clear()
            b.add(cpu, threads, wall_end)
            b.end = wall_end
        elif b is not None:
            b.dips.append((cpu, threads, wall_end))
            if wall_end - b.end > self.options.merge_gap:
                self._close_burst(ongoing=False)

    def _close_burst(self, ongoing: bool) -> None:
        b, self._burst = self._burst, None
        length = b.end - b.start
        top = sorted(b.thread_cpu_s.items(), key=lambda kv: -kv[1])[:5]
        self._records.append({
            "type": "cpu_burst",
            "pid": self.options.pid,
            "start": clock.iso_wall(b.start),
            "end": clock.iso_wall(b.end),
            "start_ts": round(b.start, 3),
            "end_ts": round(b.end, 3),
            "length_s": round(length, 3),
            "samples": len(b.samples),
            "peak_pct": max(b.samples),
            "peak_ts": round(b.peak_ts, 3),
            "avg_pct": round(sum(b.samples) / len(b.samples), 1),
            "threshold_pct": self.options.threshold,
            # Still above the threshold when the run ended: the real burst may be longer.
            "ongoing": ongoing,
            "threads": [{"tid": tid, "comm": self._name(tid), "cpu_s": round(cpu_s, 2),
                         "avg_pct": _pct(cpu_s, length)} for tid, cpu_s in top],
        })

    def finish(self) -> None:
        """Report a burst still in progress (end of the run)."""
        if getattr(self, "_burst", None) is not None:
            self._close_burst(ongoing=not self._burst.dips)

    def read(self) -> list[dict]:
        out, self._records = self._records, []
        return out

    # text ------------------------------------------------------------------------------
    def format_text(self, r: dict) -> str:
        if r["type"] == "cpu_burst":
            threads = ", ".join(f"{t['comm']}/{t['tid']} {t['avg_pct']:.0f}%" for t in r["threads"])
            cut = " (still going when the run ended)" if r["ongoing"] else ""
            return (f"*** BURST {r['start'][11:23]} -> {r['end'][11:23]}: {r['length_s']:.1f} s above "
                    f"{r['threshold_pct']}% (peak {r['peak_pct']:.0f}%, avg {r['avg_pct']:.0f}%){cut}; "
                    f"threads: {threads}")
        mark = "  <-- above threshold" if r["above_threshold"] else ""
        lines = [f"{r['time'][11:23]}  PID {r['pid']}  %usr {r['user_pct']:6.1f}  %system {r['system_pct']:6.1f}  "
                 f"%CPU {r['cpu_pct']:6.1f}{mark}"]
        for t in r["threads"][:8]:
            lines.append(f"{'':12}  TID {t['tid']:<7} %usr {t['user_pct']:6.1f}  %system {t['system_pct']:6.1f}  "
                         f"%CPU {t['cpu_pct']:6.1f}  {t['comm']}")
        return "\n".join(lines)


def _pct(cpu_seconds: float, elapsed: float) -> float:
    return round(100.0 * cpu_seconds / elapsed, 1)
