"""cpu-starvation (tier 3): is a process kept off the CPU?  Its cgroup's CPU quota and how
often it throttled, each thread's run-queue delay (runnable → on a CPU) as an in-kernel
histogram, and who held the CPU while its threads waited."""

from __future__ import annotations

import dataclasses
import time

from vocab.hist import Log2Hist

from . import target
from .base import DURATION, PID, TID, Probe, Unavailable, interval_flag
from .offcpu import raw_tp_has_state
from .runtime import clock, stop
from .runtime.cgroup import CpuCgroup, cpu_cgroup
from .runtime.kernel import KernelCaps
from .runtime.loader import ProbeError, load
from .runtime.params import CDefines

FIELDS = ["TASK_PID", "TASK_TGID"]
TOP_INSTEAD = 5


class CpuStarvation(Probe):
    name = "cpu-starvation"
    title = "CPU starvation: cgroup quota, run-queue delay per thread, who ran instead"
    tier = 3
    cost = ("low-medium: every context switch and wake-up of the host runs it (about 0.3 and 0.2 us; the "
            "traced threads' about 0.6 and 0.3 us: docs/performance.md); histograms stay in the kernel")
    description = ("Per interval: the process's cgroup CPU quota and its throttled periods (cpu.max / "
                   "cpu.cfs_quota_us, cpu.stat), each thread's wait for a CPU once runnable (histogram), and "
                   "which tasks held the CPU meanwhile.")
    reads_kernel_structs = True  # task_struct pid and tgid (BTF or matching headers)
    flags = (
        dataclasses.replace(PID, help="the process to watch", required=True),
        TID,
        interval_flag(1.0),
        DURATION,
    )

    MAX_THREADS = 16384
    MAX_KEYS = 16384

    def __init__(self, caps=None, **raw):
        super().__init__(caps, **raw)
        target.check_threads_of("--tid", self.options.tid, self.options.pid)

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        if not caps.raw_tracepoints:
            return "needs raw tracepoints (kernel 4.17 or newer) on sched_wakeup and sched_switch"
        return None

    def load(self):
        o = self.options
        if not target.alive(o.pid):
            raise ProbeError(f"process {o.pid} does not exist")
        self.cgroup: CpuCgroup | None = cpu_cgroup(o.pid)
        d = CDefines()
        d.set("NS_RAW_HAS_STATE", raw_tp_has_state(self.caps.release))
        target.filter_defines(d, o.pid, o.tid)
        d.set("NS_MAX_THREADS", self.MAX_THREADS).set("NS_MAX_KEYS", self.MAX_KEYS)
        bpf = load("cpu_starvation.bpf.c", d, FIELDS)
        target.fill_thread_filter(bpf, o.tid)
        try:
            for tp in (b"sched_wakeup", b"sched_wakeup_new"):
                bpf.attach_raw_tracepoint(tp=tp, fn_name=b"ns_runq_wakeup")
            bpf.attach_raw_tracepoint(tp=b"sched_switch", fn_name=b"ns_runq_switch")
        except Exception as e:
            bpf.cleanup()
            raise Unavailable(f"{self.name}: cannot attach to the sched raw tracepoints: {e}") from None
        self._stat0 = self._stat_prev = self.cgroup.stat() if self.cgroup else None
        self._names: dict[int, str] = {}
        self._last_read = time.monotonic()
        return bpf

    def describe_attach(self) -> str:
        o = self.options
        cg = self.cgroup
        where = (f"cgroup v{cg.version} {cg.path}" + (f", quota on {cg.limited}" if cg.limited else ", no CPU quota")
                 if cg else "no CPU cgroup found")
        return f"raw tracepoints sched_wakeup, sched_wakeup_new, sched_switch; {target.describe_filter(o.pid, o.tid)}; {where}"

    def wait(self, timeout: float) -> None:
        target.stop_if_gone(self.options.pid)
        stop.sleep(timeout)

    def _name(self, tid: int) -> str:
        if tid not in self._names:
            self._names[tid] = target.thread_name(tid) or "?"
        return self._names[tid]

    def _threads(self) -> list[dict]:
        buckets: dict[int, dict[int, int]] = {}
        for k, v in self.bpf[b"hist"].items():
            buckets.setdefault(k.tid, {})[k.slot] = v.value
        rows = []
        for k, t in self.bpf[b"totals"].items():
            tid = k.value
            h = Log2Hist(buckets.get(tid, {})).summary()
            rows.append({"tid": tid, "comm": self._name(tid), "count": t.count, "total_us": t.total_ns // 1000,
                         "max_us": t.max_ns // 1000, "p50_us": h["p50"], "p99_us": h["p99"], "buckets": h["buckets"]})
        rows.sort(key=lambda r: (-r["max_us"], -r["total_us"]))
        return rows

    def _instead(self) -> list[dict]:
        rows = [{"pid": k.tgid, "comm": "idle" if k.tgid == 0 else self._name(k.tgid), "idle": k.tgid == 0,
                 "wait_us": v.wait_ns // 1000, "count": v.count} for k, v in self.bpf[b"instead"].items()]
        rows.sort(key=lambda r: -r["wait_us"])
        return rows[:TOP_INSTEAD]

    def read(self) -> list[dict]:
        now = time.monotonic()
        interval, self._last_read = now - self._last_read, now
        cg = self.cgroup
        stat = cg.stat() if cg else None
        since = {k: stat[k] - self._stat0[k] for k in stat} if stat else {}
        step = {k: stat[k] - self._stat_prev[k] for k in stat} if stat else {}
        self._stat_prev = stat
        threads = self._threads()
        return [{
            "type": "cpu_starvation",
            "time": clock.iso_wall(time.time()),
            "interval_s": round(interval, 3),
            "pid": self.options.pid,
            "comm": self._name(self.options.pid),
            "cgroup_version": cg.version if cg else None,
            "cgroup": cg.path if cg else None,
            "quota_cgroup": cg.limited if cg else None,
            "quota_file": cg.quota_file if cg else None,
            "quota_us": cg.quota_us if cg else None,
            "period_us": cg.period_us if cg else None,
            "quota_cpus": round(cg.quota_us / cg.period_us, 2) if cg and cg.quota_us and cg.period_us else None,
            "nr_periods": since.get("nr_periods"),
            "nr_throttled": since.get("nr_throttled"),
            "throttled_us": since.get("throttled_us"),
            "throttled_pct": (round(100.0 * since["nr_throttled"] / since["nr_periods"], 1)
                              if since.get("nr_periods") else None),
            "interval_nr_periods": step.get("nr_periods"),
            "interval_nr_throttled": step.get("nr_throttled"),
            "interval_throttled_us": step.get("throttled_us"),
            "waits": sum(t["count"] for t in threads),
            "max_wait_us": max((t["max_us"] for t in threads), default=0),
            "threads": threads,
            "ran_instead": self._instead(),
            "uncounted_table_full": sum(self.bpf[b"lost"][0]),
        }]

    @staticmethod
    def format_text(r: dict) -> str:
        if r["quota_us"]:
            quota = (f"cgroup {r['quota_cgroup']}: quota {r['quota_us']} us per {r['period_us']} us "
                     f"({r['quota_cpus']} CPUs), throttled {r['nr_throttled']} of {r['nr_periods']} periods "
                     f"({r['throttled_us'] / 1000:.1f} ms; this interval {r['interval_nr_throttled']} of "
                     f"{r['interval_nr_periods']})")
        else:
            quota = f"cgroup {r['cgroup'] or '?'}: no CPU quota"
        lines = [f"[{r['time'][11:19]}] {r['comm']} ({r['pid']}): {quota}",
                 f"  waits for a CPU: {r['waits']}, longest {r['max_wait_us'] / 1000:.1f} ms"]
        for t in r["threads"][:10]:
            lines.append(f"  {t['tid']:>7} {t['comm']:<16} {t['count']:>7} waits, max {t['max_us'] / 1000:8.1f} ms, "
                         f"p99 {(t['p99_us'] or 0) / 1000:8.1f} ms, total {t['total_us'] / 1000:9.1f} ms")
        if r["ran_instead"]:
            lines.append("  on the CPU meanwhile: " + ", ".join(
                f"{'idle' if i['idle'] else i['comm'] + '/' + str(i['pid'])} {i['wait_us'] / 1000:.1f} ms"
                for i in r["ran_instead"]))
        return "\n".join(lines)
