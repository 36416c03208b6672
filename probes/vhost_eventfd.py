"""vhost-eventfd-count (guide: vhost_eventfd_count): per vhost worker and virtqueue, the guest's
kicks, tap socket wakeups, runs and busy time, and the interrupts sent back to the guest."""

from __future__ import annotations

import time

from .base import DURATION, HOOK_ATTACH, Probe
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps, function_symbol
from .runtime.loader import load
from .runtime.offsets import OffsetsUnavailable, module_offset
from .vhost_common import (VHOST_HINT, VhostProbe, INTERVAL, POLL_WAKEUP, QEMU_PID, TAP, VQ_FIELDS, WORK_FNS, Hook,
                           arg_index, attach_hooks, cpu_list, cstr, qemu_pid_of_worker,
                           vq_defines)

# Counters of the C's struct vq_stats that are summed per interval, in record order.
COUNTERS = ("kicks", "net_wakeups", "runs", "signal_attempts", "eventfd_signals", "signals", "weight_exhausted")
EVENTFD_FNS = ("eventfd_signal", "eventfd_signal_mask")  # 6.8+: eventfd_signal is an inline wrapper
IRQFD_FN = "irqfd_wakeup"
# The signal functions and the C entry reading each one's `vq` argument (chosen by BTF name).
SIGNAL_FNS = (("vhost_add_used_and_signal_n", "on_signal_n", "NS_SIGNAL_N_VQ_ARG", True),
              ("vhost_add_used_and_signal", "on_signal_1", "NS_SIGNAL_1_VQ_ARG", False),
              ("vhost_signal", "on_signal_plain", "NS_SIGNAL_VQ_ARG", False))
# Where a requeue at the weight limit is seen, and the C entry reading each one's `work`
# argument (<= 6.4: vhost_work_queue(dev, work); later vhost_vq_work_queue(vq, work)).
QUEUE_FNS = (("vhost_work_queue", "on_work_queue", "NS_WORK_QUEUE_WORK_ARG"),
             ("vhost_vq_work_queue", "on_vq_work_queue", "NS_VQ_WORK_QUEUE_WORK_ARG"))

HOOKS = (
    Hook(POLL_WAKEUP, entry="on_poll_wakeup"),
    *(Hook(fn, entry="on_" + fn.removeprefix("handle_"), ret="on_work_return") for fn in WORK_FNS),
    *(Hook(fn, entry=entry, required=False) for fn, entry, _ in QUEUE_FNS),
    *(Hook(fn, entry=entry, ret="on_signal_return", required=req) for fn, entry, _, req in SIGNAL_FNS),
    *(Hook(fn, entry="on_eventfd_signal", required=False) for fn in EVENTFD_FNS),
)
IRQFD_HOOK = Hook(IRQFD_FN, entry="on_irqfd_wakeup", required=False)
IRQFD_FIELDS = ["IRQFD_WAIT", "IRQFD_EVENTFD"]


def irqfd_available() -> bool:
    """KVM is loaded with its BTF: signals can be followed into irqfd_wakeup."""
    if function_symbol(IRQFD_FN)[0] is None:
        return False
    try:
        for name in IRQFD_FIELDS:
            module_offset(name)
    except OffsetsUnavailable:
        return False
    return True


class VhostEventfdCount(VhostProbe):
    name = "vhost-eventfd-count"
    title = "vhost eventfd kicks and signals"
    tier = 1
    cost = ("low: hooks (trampolines or kprobes) on vhost's wakeups, runs and signals (per batch, not per "
            "packet); counters in the kernel")
    description = ("Per vhost worker thread and virtqueue: guest kicks, tap socket wakeups, runs, busy %, "
                   "weight-limit hits, signal attempts and the interrupts KVM actually received.")
    flags = (QEMU_PID, TAP, INTERVAL, HOOK_ATTACH, DURATION)
    hooks = HOOKS

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps)
        if reason:
            return reason
        if not any(caps.function(fn) for fn in EVENTFD_FNS):
            return "kernel functions missing: eventfd_signal or eventfd_signal_mask"
        if not any(caps.function(fn) for fn, _, _ in QUEUE_FNS):
            return f"kernel functions missing: {' or '.join(fn for fn, _, _ in QUEUE_FNS)} ({VHOST_HINT})"
        return None

    def load(self):
        defines = vq_defines()
        for fn, _entry, macro, required in SIGNAL_FNS:
            defines.set(macro, arg_index("vhost", fn, "vq") if required or function_symbol(fn)[0] else 1)
        for fn, _entry, macro in QUEUE_FNS:
            defines.set(macro, arg_index("vhost", fn, "work") if function_symbol(fn)[0] else 1)
        hooks, fields = HOOKS, VQ_FIELDS
        self.irqfd = irqfd_available()
        if self.irqfd:
            hooks, fields = HOOKS + (IRQFD_HOOK,), VQ_FIELDS + IRQFD_FIELDS
            defines.set("NS_HAVE_IRQFD", 1)
        bpf = load("vhost_eventfd.bpf.c", defines, fields)
        self.attached = attach_hooks(bpf, hooks, self.options.values.get("attach", "auto"))
        self.start_reading()
        return bpf

    def describe_attach(self) -> str:
        return self.attached.describe()

    def start_reading(self) -> None:
        self._seen = Deltas()  # vq address -> counters + busy_ns
        self._last_read = time.monotonic()

    def read(self) -> list[dict]:
        now = time.monotonic()
        elapsed, self._last_read = now - self._last_read, now
        workers: dict[int, dict] = {}
        for key, s in self.bpf[b"vqs"].items():
            totals = tuple(getattr(s, c) for c in COUNTERS) + (s.busy_ns,)
            delta = dict(zip(COUNTERS + ("busy_ns",), self._seen.of(key.value, totals)))
            if not any(delta.values()):
                continue
            vq = self._vq_record(s, delta, elapsed)
            if not self._wanted(vq):
                continue
            comm = cstr(s.worker_comm)
            w = workers.setdefault(s.worker_tid, {
                "type": "vhost_eventfd", "tid": s.worker_tid, "comm": comm or "?",
                "qemu_pid": qemu_pid_of_worker(s.worker_tid, s.worker_tgid, comm) or vq["qemu_pid"],
                "interval_s": round(elapsed, 3), "vqs": []})
            w["vqs"].append(vq)
        records = [self._worker_record(w, elapsed) for w in workers.values()]
        return [r for r in records if not self.options.pid or r["qemu_pid"] == self.options.pid]

    def _vq_record(self, s, delta: dict, elapsed: float) -> dict:
        signals = delta["signals"] if self.irqfd else None
        return {
            "device": cstr(s.device) if s.has_tap else None,
            "queue": s.queue if s.has_tap else None,
            "vq": "rx" if s.rx else "tx",
            "qemu_pid": s.kicker_tgid or None,
            **{c: delta[c] for c in COUNTERS if c != "signals"},
            "signals": signals,
            "signals_no_irqfd": delta["eventfd_signals"] - signals if signals is not None else None,
            "suppressed": max(0, delta["signal_attempts"] - delta["eventfd_signals"]),
            "busy_pct": round(100 * delta["busy_ns"] / 1e9 / elapsed, 1) if elapsed > 0 else 0.0,
            "cpus": cpu_list(s.cpus),
        }

    def _wanted(self, vq: dict) -> bool:
        o = self.options
        return not o.device or vq["device"] == o.raw.get("device")

    def _worker_record(self, w: dict, elapsed: float) -> dict:
        vqs = sorted(w.pop("vqs"), key=lambda v: (v["device"] or "", v["queue"] or 0, v["vq"]))
        for v in vqs:
            v.pop("qemu_pid")
        out = dict(w)
        for c in COUNTERS + ("signals_no_irqfd", "suppressed"):
            values = [v[c] for v in vqs]
            out[c] = None if None in values else sum(values)
        out["busy_pct"] = round(sum(v["busy_pct"] for v in vqs), 1)
        out["cpus"] = sorted({c for v in vqs for c in v["cpus"]})
        out["vqs"] = vqs
        return out

    def format_text(self, r: dict) -> str:
        head = (f"=== {r['comm']} ({r['tid']}), QEMU {r['qemu_pid']}: {r['kicks']} kicks, {r['net_wakeups']} socket "
                f"wakeups, {r['runs']} runs, busy {r['busy_pct']}%, {r['signal_attempts']} signal attempts, "
                f"{r['signals']} signals to KVM, weight limit {r['weight_exhausted']}x, CPUs {r['cpus']} ===")
        lines = [head]
        for v in r["vqs"]:
            lines.append(f"  {v['device']}/{v['queue']} {v['vq']}: kicks {v['kicks']}  wakeups {v['net_wakeups']}  "
                         f"runs {v['runs']}  busy {v['busy_pct']}%  attempts {v['signal_attempts']}  "
                         f"signals {v['signals']}  no-irqfd {v['signals_no_irqfd']}  suppressed {v['suppressed']}  "
                         f"weight {v['weight_exhausted']}")
        return "\n".join(lines)
