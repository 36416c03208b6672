"""qdisc-drops (guide tool P18, qdisc_drop_trace): which queueing discipline of a device
drops, why, and whose packets.  docs/output-qdisc.md."""

from __future__ import annotations

import time
from datetime import datetime

from vocab.flows import flow_text

from . import drop_hook
from .base import (ATTACH, DST_IP, DST_PORT, DURATION, L4_PROTOCOL, SRC_IP, SRC_PORT, Flag, Options, Unavailable,
                   interval_flag)
from .flows import flow_dict
from .qdisc_stats import COUNTERS, QdiscReader, QdiscSample, find_device, handle_text, parent_text
from .runtime import stop
from .runtime.kernel import KernelCaps
from .runtime.attach import attach_or_unload
from .runtime.counters import Deltas, per_cpu_total
from .runtime.loader import load, unload
from .runtime.params import CDefines
from .runtime.stacks import kernel_stack, ksym

# The kernel's drop reasons that name a qdisc (by name: the numbers differ between kernels).
QDISC_REASONS = ("QDISC_DROP", "QDISC_OVERLIMIT", "QDISC_CONGESTED", "CAKE_FLOOD", "FQ_BAND_LIMIT",
                 "FQ_HORIZON_LIMIT", "FQ_FLOW_LIMIT", "DUALPI2_STEP_DROP")
SAMPLE_EVERY = 0.1  # seconds between netlink samples of backlog and queue length


def enqueue_tie(caps: KernelCaps) -> bool:
    """Can dropped packets be tied to the qdisc that accepted them (qdisc:qdisc_enqueue,
    ~5.14, forgotten at the net_dev_start_xmit raw tracepoint)?"""
    return bool(caps.raw_tracepoints and caps.tracepoint("qdisc", "qdisc_enqueue")
                and caps.tracepoint("net", "net_dev_start_xmit"))


class QdiscDrops(drop_hook.DropHookProbe):
    name = "qdisc-drops"
    title = "qdisc drops"
    tier = 1
    cost = "low: netlink statistics; in the kernel, one map update per packet the device's qdisc accepts"
    description = ("Per queueing discipline of a device: drops, overlimits, requeues, backlog, and the dropped "
                   "packets' reasons, places and flows.")
    flags = (
        Flag("device", "ifname", "the device whose qdiscs to watch", short="n", required=True, label="Interface"),
        Flag("netns", "netns", "the network namespace the device is in: a name from `ip netns` (or its inode)",
             label="Namespace"),
        SRC_IP, DST_IP, SRC_PORT, DST_PORT, L4_PROTOCOL,
        interval_flag(10.0),
        DURATION,
        Flag("top", "int", "flows listed per qdisc and report", short="t", default=5, lo=1, hi=1000,
             label="Flows per report"),
        ATTACH,
    )
    FIELDS = drop_hook.FIELDS + ["NETDEV_QDISC", "QDISC_HANDLE"]
    MAX_KEYS = 4096
    MAX_FLOWS = 10240
    MAX_QUEUED = 65536

    def __init__(self, caps=None, **raw):
        super().__init__(caps, **raw)
        # The device is looked up where it lives: a missing one is bad input (exit 2).
        self.ifindex, self.netns_inode = find_device(self.options.device, self.options.netns)
        self.stats: QdiscReader | None = None
        if self.options.netns:  # an inode given (as drop-summary reports it) reads back as name or pid
            self.options.raw["netns"] = self.options.netns.ref

    def load(self):
        self.tie = enqueue_tie(self.caps)
        hook = drop_hook.choose(self.caps, self.options.attach, ovs_actions=False)
        if isinstance(hook, str):
            raise Unavailable(f"{self.name}: {hook}")
        self.hook = hook
        bpf = load("qdisc_drops.bpf.c", self.c_defines(hook), self.FIELDS)
        hook.attach(bpf)  # frees the program when it fails, as the next attach does
        if self.tie:
            attach_or_unload(bpf, "raw tracepoint net_dev_start_xmit",
                             lambda: bpf.attach_raw_tracepoint(tp=b"net_dev_start_xmit", fn_name=b"ns_raw_start_xmit"))
        try:
            self.stats = QdiscReader(self.ifindex, self.options.netns)
            self._start_interval(self.stats.sample())
        except BaseException:
            unload(bpf)
            self.close()
            raise
        self._seen_drops = Deltas()
        self._seen_flows = Deltas()
        self._lost_seen = Deltas()
        self._last_read = time.monotonic()
        return bpf

    def c_defines(self, hook: drop_hook.DropHook) -> CDefines:
        o = self.options
        d = CDefines()
        hook.defines(d)
        # drop-summary's filters, with the device found in its own namespace
        drop_hook.filter_defines(d, Options(values={**o.values, "device": self.ifindex}))
        d.set("NS_F_NETNS", self.netns_inode)
        d.set("NS_QDISC_ENQUEUE_TP", self.tie)
        codes = [c for c, n in self.caps.drop_reasons.items() if n in QDISC_REASONS] if hook.has_reason else []
        for i, code in enumerate(codes[:8]):
            d.set(f"NS_QR{i}", code)
        d.set("NS_MAX_KEYS", self.MAX_KEYS).set("NS_MAX_FLOWS", self.MAX_FLOWS)
        d.set("NS_MAX_QUEUED", self.MAX_QUEUED).set("NS_STACK_ENTRIES", 1024)
        return d

    def describe_attach(self) -> str:
        tie = " + tracepoint qdisc:qdisc_enqueue, raw tracepoint net_dev_start_xmit" if self.tie else ""
        return f"{self.hook.describe()}{tie} + rtnetlink qdisc statistics"

    # netlink ---------------------------------------------------------------------
    def _start_interval(self, samples: list[QdiscSample]) -> None:
        self._base = {q.id: q for q in samples}
        self._peak: dict[tuple[int, int], tuple[int, int]] = {q.id: (q.backlog, q.qlen) for q in samples}
        self._next_sample = time.monotonic() + SAMPLE_EVERY

    def _note_peaks(self, samples: list[QdiscSample]) -> None:
        for q in samples:
            b, n = self._peak.get(q.id, (0, 0))
            self._peak[q.id] = (max(b, q.backlog), max(n, q.qlen))

    def wait(self, timeout: float) -> None:
        """Sleep, sampling backlog and queue length every SAMPLE_EVERY seconds (the kernel
        keeps no maximum: a peak between two samples is missed)."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_sample:
                self._note_peaks(self.stats.sample())
                self._next_sample = now + SAMPLE_EVERY
            if now >= end:
                return
            stop.sleep(min(end, self._next_sample) - now)

    # BPF maps --------------------------------------------------------------------
    def _deltas(self, table: str, seen: Deltas):
        """(key, delta, a per-CPU value) for keys with new counts since the last read."""
        for key, per_cpu in self.bpf[table.encode()].items():
            delta = seen.of(bytes(key), per_cpu_total(per_cpu))
            if delta > 0:
                yield key, delta, per_cpu

    def _traced(self) -> dict[int, dict]:
        """(handle, parent) -> {traced, at_enqueue, after_enqueue, reasons, locations, flows}."""
        out: dict[tuple[int, int], dict] = {}

        def slot(q):
            return out.setdefault((q.handle, q.parent), {"traced": 0, "at_enqueue": 0, "after_enqueue": 0, "reasons": {},
                                           "locations": {}, "flows": []})

        reasons = self.caps.drop_reasons
        stacks = self.bpf[b"stacks"]
        for key, delta, per_cpu in self._deltas("drops", self._seen_drops):
            s = slot(key.q)
            s["traced"] += delta
            s["after_enqueue" if key.queued else "at_enqueue"] += delta
            reason = self.hook.reason_name(key.reason, reasons) or "unknown"
            s["reasons"][reason] = s["reasons"].get(reason, 0) + delta
            stack_id = next((v.stack_id1 - 1 for v in per_cpu if v.stack_id1 > 0), -1)
            where = drop_hook.drop_location(ksym(key.location) if key.location else None,
                                            kernel_stack(stacks, stack_id))
            where = (where or "?").split("+")[0]  # by function: offsets split one place in many
            s["locations"][where] = s["locations"].get(where, 0) + delta
        for key, delta, _ in self._deltas("flows", self._seen_flows):
            slot(key.q)["flows"].append({"flow": flow_dict(key.flow), "count": delta})
        return out

    def _lost(self) -> tuple[int, int]:
        return self._lost_seen.of("overflow", tuple(sum(self.bpf[b"overflow"][i]) for i in (0, 1)))

    def read(self) -> list[dict]:
        """One qdisc_drop record per qdisc of the device, covering the time since the last read."""
        now = time.monotonic()
        interval, self._last_read = now - self._last_read, now
        samples = self.stats.sample()
        self._note_peaks(samples)
        traced = self._traced()
        lost_reasons, lost_flows = self._lost()
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        records = []
        by_id = {q.id: q for q in samples}
        ns = self.options.netns
        exec_in = f"{ns.enter} " if ns and ns.enter else ""
        for qid in list(by_id) + [i for i in traced if i not in by_id]:
            q = by_id.get(qid)
            t = traced.get(qid) or {"traced": 0, "at_enqueue": 0, "after_enqueue": 0, "reasons": {},
                                       "locations": {}, "flows": []}
            base = self._base.get(qid)
            delta = {c: (getattr(q, c) - getattr(base, c)) if q and base else (getattr(q, c) if q else None)
                     for c in COUNTERS}
            peak = self._peak.get(qid, (None, None))
            flows = sorted(t["flows"], key=lambda f: -f["count"])
            records.append({
                "type": "qdisc_drop",
                "time": stamp,
                "interval_s": round(interval, 3),
                "device": self.options.device,
                "ifindex": self.ifindex,
                "netns": self.netns_inode,
                "netns_name": ns.label if ns else None,
                "kind": q.kind if q else None,
                "handle": handle_text(qid[0]),
                "parent": parent_text(qid[1]),
                **delta,
                "backlog_max": peak[0] if q else None,
                "qlen_max": peak[1] if q else None,
                "options": q.options if q else {},
                "traced": t["traced"],
                "traced_at_enqueue": t["at_enqueue"],
                "traced_after_enqueue": t["after_enqueue"],
                "reasons": t["reasons"],
                "locations": t["locations"],
                "flows": flows[:self.options.top],
                # device-wide, so carried by the interval's first record only
                "untraced_table_full": 0 if records else lost_reasons,
                "flows_untraced_table_full": 0 if records else lost_flows,
                "tie": "qdisc_enqueue" if self.tie else "root",
                # what runs a command where the device is ("" here), for advice to paste as it stands
                "exec_prefix": exec_in,
                "tc_target": q.tc_target if q else None,
            })
        self._start_interval(samples)
        return records

    def close(self) -> None:
        try:
            super().close()
        finally:
            stats, self.stats = self.stats, None
            if stats is not None:
                stats.close()

    def format_text(self, r: dict) -> str:
        where = f" (netns {r['netns_name']})" if r.get("netns_name") else ""
        head = (f"[{r['time']}] {r['device']}{where} qdisc {r['kind'] or '?'} {r['handle']} parent {r['parent']}: "
                f"{r['drops']} dropped, {r['overlimits']} overlimits, {r['requeues']} requeues, "
                f"backlog up to {r['backlog_max']} B / {r['qlen_max']} packets in {r['interval_s']:.1f}s")
        lines = [head]
        if r["traced"]:
            lines.append(f"   traced {r['traced']} ({r['traced_at_enqueue']} refused at enqueue, "
                         f"{r['traced_after_enqueue']} after): reasons "
                         + ", ".join(f"{k} {v}" for k, v in r["reasons"].items())
                         + "; in " + ", ".join(f"{k} {v}" for k, v in r["locations"].items()))
            for f in r["flows"]:
                lines.append(f"   {f['count']:>8} {flow_text(f['flow'])}")
        return "\n".join(lines)
