"""vhost-queue-correlation-details (guide: vhost_queue_correlation_details): for each vhost-net
work item, the wait from being queued to the worker starting it, what queued it, how long it ran
and the rings' state; events past --latency-threshold and per-queue wait histograms."""

from __future__ import annotations

import ctypes as ct
import time

from vocab.hist import Log2Hist, render_text

from .base import DURATION, HOOK_ATTACH, Flag, Probe
from .events import EventStream
from .runtime.clock import iso
from .runtime.counters import Deltas
from .runtime.layout import CMirror
from .runtime.loader import load
from .runtime.params import CDefines
from .vhost_common import (VhostProbe, INTERVAL, POLL_WAKEUP, QEMU_PID, TAP, VQ_FIELDS, WORK_FNS, Hook,
                           attach_hooks, cpu_list, cstr, qemu_pid_of_worker,
                           set_return_slots, vq_defines)

THRESHOLD = Flag("latency-threshold", "int", "report work items that waited at least this many microseconds",
                 default=1000, lo=0, hi=60_000_000, label="Latency threshold (µs)")
TRIGGERS = {1: "guest_kick", 2: "socket", 3: "requeue"}
FIELDS = VQ_FIELDS + ["VQ_NUM", "VQ_LAST_USED_IDX", "VQ_LAST_AVAIL_IDX", "VQ_AVAIL_IDX", "TFILE_TX_RING",
                      "PTR_RING_PRODUCER", "PTR_RING_CONSUMER_HEAD", "PTR_RING_SIZE", "PTR_RING_QUEUE",
                      "VNET_NVQ_RXQ_HEAD", "VNET_NVQ_RXQ_TAIL"]
HOOKS = (
    Hook(POLL_WAKEUP, entry="on_poll_wakeup"),
    Hook("vhost_poll_queue", entry="on_poll_queue"),
    *(Hook(fn, entry="on_" + fn.removeprefix("handle_"), ret="on_work_return") for fn in WORK_FNS),
    Hook("vhost_get_vq_desc", ret="on_get_vq_desc_return", reads_args=False, ret_slot="NS_RET_AT_GET_VQ_DESC"),
    Hook("vhost_exceeds_weight", ret="on_exceeds_weight_return", reads_args=False, ret_slot="NS_RET_AT_EXCEEDS_WEIGHT"),
)
# struct vq_totals counters summed per interval (the C's names), then maxima (kept per interval).
TOTALS = ("works", "unseen", "wait_ns", "run_ns", "packets", "guest_empty", "weight_exhausted", "slow")


class Event(CMirror):
    """Mirror of struct event in vhost_queue.bpf.c."""

    _c_struct_ = "event"
    _fields_ = [("ts", ct.c_uint64), ("vq", ct.c_uint64), ("wait_ns", ct.c_uint64), ("run_ns", ct.c_uint64),
                ("cpu", ct.c_uint32), ("tid", ct.c_uint32), ("pid", ct.c_uint32),
                ("waker_tid", ct.c_uint32), ("waker_pid", ct.c_uint32),
                ("tun_pending", ct.c_uint32), ("tun_size", ct.c_uint32), ("batch_pending", ct.c_uint32),
                ("queue", ct.c_uint16), ("packets", ct.c_uint16), ("avail_pending", ct.c_uint16),
                ("guest_empty", ct.c_uint16), ("trigger", ct.c_uint8), ("rx", ct.c_uint8), ("weight", ct.c_uint8),
                ("has_tap", ct.c_uint8), ("comm", ct.c_char * 16), ("waker_comm", ct.c_char * 16),
                ("device", ct.c_char * 16)]


class VhostQueueCorrelationDetails(EventStream, VhostProbe):
    name = "vhost-queue-correlation-details"
    title = "vhost queue correlation Details"
    tier = 2
    cost = ("medium: hooks (trampolines or kprobes) on vhost's wakeups and work runs, and a return hook on "
            "every descriptor fetch; one event per work item past the threshold")
    description = ("Per virtqueue work item: the wait from the guest kick / tap wakeup / requeue to the vhost "
                   "worker starting it, who woke it, run time, packets, guest ring empty, tap ring backlog; "
                   "per-queue wait histograms every --interval.")
    streaming = True
    flags = (TAP, QEMU_PID, THRESHOLD, INTERVAL, HOOK_ATTACH, DURATION)
    hooks = HOOKS


    def c_defines(self) -> CDefines:
        return set_return_slots(vq_defines().set("NS_THRESHOLD_NS", self.options.latency_threshold * 1000), HOOKS)

    def load(self):
        bpf = load("vhost_queue.bpf.c", self.c_defines(), FIELDS)
        self.attached = attach_hooks(bpf, HOOKS, self.options.values.get("attach", "auto"))
        self.bpf = bpf
        self.open_events(bpf, self._on_event)
        self.start_reading()
        return bpf

    def describe_attach(self) -> str:
        return self.attached.describe()

    def start_reading(self) -> None:
        self._seen = Deltas()  # vq address -> TOTALS
        self._seen_hist = Deltas()  # (vq, log2 slot) -> works
        self._seen_max: dict[int, tuple[int, int]] = {}
        self._last_summary = time.monotonic()
        self._ending = False

    def finish(self) -> None:
        """The run ends: the next read reports the interval so far (a run shorter than
        --interval has no other summary)."""
        self._ending = True

    def wait(self, timeout: float) -> None:
        self.poll_events(timeout)

    # events -------------------------------------------------------------------
    def _wanted(self, device: str | None, tid: int, pid: int, comm: str) -> bool:
        o = self.options
        if o.device and device != o.raw.get("device"):
            return False
        return not o.pid or qemu_pid_of_worker(tid, pid, comm) == o.pid

    def _on_event(self, data, size) -> None:
        e = ct.cast(data, ct.POINTER(Event)).contents
        device = cstr(e.device) if e.has_tap else None
        if not self._wanted(device, e.tid, e.pid, cstr(e.comm)):
            return
        self._pending.append(self.event_record(e))

    @staticmethod
    def event_record(e: Event) -> dict:
        return {
            "type": "vhost_queue",
            "time": iso(e.ts),
            "ktime_ns": e.ts,
            "device": cstr(e.device) if e.has_tap else None,
            "queue": e.queue if e.has_tap else None,
            "vq": "rx" if e.rx else "tx",
            "trigger": TRIGGERS.get(e.trigger, "unknown"),
            "waker_tid": e.waker_tid,
            "waker_pid": e.waker_pid,
            "waker_comm": cstr(e.waker_comm),
            "latency_us": round(e.wait_ns / 1000, 1),
            "run_us": round(e.run_ns / 1000, 1),
            "packets": e.packets,
            "weight_exhausted": bool(e.weight),
            "guest_ring_empty": e.guest_empty,
            "avail_pending": e.avail_pending,
            "tun_ring_pending": e.tun_pending if e.rx and e.has_tap else None,
            "tun_ring_size": e.tun_size if e.rx and e.has_tap else None,
            "vhost_batch_pending": e.batch_pending if e.rx else None,
            "cpu": e.cpu,
            "tid": e.tid,
            "comm": cstr(e.comm),
            "qemu_pid": qemu_pid_of_worker(e.tid, e.pid, cstr(e.comm)),
        }

    # interval records -----------------------------------------------------------
    def read(self) -> list[dict]:
        out = self.take_events()
        now = time.monotonic()
        since = now - self._last_summary
        # At the end, a part of at least 1 s (a shorter one would inflate busy_pct).
        if since >= self.options.interval or (self._ending and since >= min(1.0, self.options.interval)):
            out += self.summary_records(since)
            self._last_summary = now
        return out

    def _hist_deltas(self) -> dict[int, dict[int, int]]:
        per_vq: dict[int, dict[int, int]] = {}
        for k, v in self.bpf[b"wait_hist"].items():
            d = self._seen_hist.of((k.vq, k.slot), v.value)
            if d > 0:
                per_vq.setdefault(k.vq, {})[k.slot] = d
        return per_vq

    def summary_records(self, elapsed: float) -> list[dict]:
        hists = self._hist_deltas()
        out = []
        for key, t in self.bpf[b"vqs"].items():
            totals = tuple(getattr(t, c) for c in TOTALS)
            d = dict(zip(TOTALS, self._seen.of(key.value, totals)))
            # Maxima since start in the kernel; this interval's when they rose in it.
            maxima = (t.wait_max_ns, t.run_max_ns)
            rose = [m if m > p else None for m, p in zip(maxima, self._seen_max.get(key.value, (0, 0)))]
            self._seen_max[key.value] = maxima
            device = cstr(t.device) if t.has_tap else None
            comm = cstr(t.worker_comm)
            if not d["works"] or not self._wanted(device, t.worker_tid, t.worker_pid, comm):
                continue
            timed = d["works"] - d["unseen"]
            hist = Log2Hist(hists.get(key.value, {}))
            out.append({
                "type": "vhost_queue_summary",
                "device": device,
                "queue": t.queue if t.has_tap else None,
                "vq": "rx" if t.rx else "tx",
                "interval_s": round(elapsed, 3),
                "works": d["works"],
                "works_unseen": d["unseen"],
                "slow": d["slow"],
                "wait_avg_us": round(d["wait_ns"] / timed / 1000, 1) if timed else None,
                "max_latency_us": round(rose[0] / 1000, 1) if rose[0] else None,
                "max_latency_us_since_start": round(t.wait_max_ns / 1000, 1),
                "run_us": round(d["run_ns"] / 1000, 1),
                "run_avg_us": round(d["run_ns"] / d["works"] / 1000, 1),
                "max_run_us_since_start": round(t.run_max_ns / 1000, 1),
                "busy_pct": round(100 * d["run_ns"] / 1e9 / elapsed, 1) if elapsed > 0 else 0.0,
                "packets": d["packets"],
                "guest_ring_empty": d["guest_empty"],
                "weight_exhausted": d["weight_exhausted"],
                "tun_ring_pending_max_since_start": t.tun_pending_max if t.rx and t.has_tap else None,
                "cpus": cpu_list(t.cpus),
                "tid": t.worker_tid,
                "comm": comm,
                "qemu_pid": qemu_pid_of_worker(t.worker_tid, t.worker_pid, comm),
                "histogram": hist.summary(),
            })
        return out

    def format_text(self, r: dict) -> str:
        if r["type"] == "lost_events":
            return self.lost_text(r)
        if r["type"] == "vhost_queue_summary":
            h = r["histogram"]
            return (f"=== {r['device']}/{r['queue']} {r['vq']}: {r['works']} work items, wait avg {r['wait_avg_us']} us "
                    f"P99 {h['p99']} max {r['max_latency_us']} us, run avg {r['run_avg_us']} us, busy {r['busy_pct']}%, "
                    f"{r['packets']} used, guest ring empty {r['guest_ring_empty']}x, weight limit "
                    f"{r['weight_exhausted']}x, CPUs {r['cpus']} ===\n" + render_text(Log2Hist.from_buckets(h["buckets"])))
        return (f"{r['time']} {r['device']}/{r['queue']} {r['vq']}: waited {r['latency_us']} us after {r['trigger']} by "
                f"{r['waker_comm']}({r['waker_tid']}), ran {r['run_us']} us on CPU {r['cpu']} ({r['comm']}), "
                f"{r['packets']} used, guest ring empty {r['guest_ring_empty']}x, tap ring {r['tun_ring_pending']}"
                f"/{r['tun_ring_size']}, vhost batch {r['vhost_batch_pending']}")
