"""ovs-upcall-summary: latency of OVS upcalls (kernel miss -> answer from ovs-vswitchd)."""

from __future__ import annotations

import ctypes as ct

from vocab.hist import Log2Hist, render_text

from .base import DST_IP, DURATION, HOOK_ATTACH, SRC_IP, Flag, Probe, interval_flag, kprobe_reason
from .runtime.attach import FunctionHooks
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.loader import load
from .runtime.params import CDefines
from .stage_latency import FIELDS

# The answer: OVS_PACKET_CMD_EXECUTE builds the packet and extracts its key here (see the .bpf.c).
UPCALL_FN, ANSWER_FN = "ovs_dp_upcall", "ovs_flow_key_extract_userspace"
# The program's `totals` array, slot by slot (ovs_upcall.bpf.c).
TOTALS = ("upcalls", "answered", "sum_ns", "unmatched")


class OvsUpcallSummary(Probe):
    name = "ovs-upcall-summary"
    title = "OVS upcall latency Summary"
    tier = 1
    cost = "low: two hooks on the OVS datapath (trampolines or kprobes), only upcalls and their answers are timed"
    description = "Histogram of upcall latency (datapath miss -> ovs-vswitchd's answer), with the handler threads."
    flags = (
        SRC_IP, DST_IP,
        Flag("proto", "protocol", "tcp, udp, icmp or all", default="all", choices=("tcp", "udp", "icmp", "all"),
             label="Protocol"),
        interval_flag(5.0),
        HOOK_ATTACH,
        DURATION,
    )

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        return super().unavailable_reason(caps) or kprobe_reason(caps, (UPCALL_FN, ANSWER_FN), "on the OVS datapath functions")

    def c_defines(self) -> CDefines:
        o = self.options
        return CDefines().set("NS_F_SADDR", o.src_ip).set("NS_F_DADDR", o.dst_ip).set("NS_F_PROTO", o.proto)

    def load(self):
        bpf = load("ovs_upcall.bpf.c", self.c_defines(), FIELDS)
        self.hooks = FunctionHooks(bpf, self.options.values.get("attach", "auto"))
        self.hooks.entry(UPCALL_FN, "on_upcall")
        self.hooks.entry(ANSWER_FN, "on_answer")
        self.start_reading()
        return bpf

    def start_reading(self) -> None:
        """Nothing read yet: every count is a delta against what was read last."""
        self._seen = Deltas()  # "slots", "totals", ("handler", tid)
        self._epoch = 0
        self._run_max_ns = 0

    def describe_attach(self) -> str:
        return " + ".join(f"{way} {fn}" for fn, way in self.hooks.by.items())

    def read(self) -> list[dict]:
        slots = self._seen.of("slots", tuple(sum(self.bpf[b"slots"][ct.c_int(i)]) for i in range(64)))
        counts = {i: n for i, n in enumerate(slots) if n > 0}
        totals = tuple(sum(self.bpf[b"totals"][ct.c_int(i)]) for i in range(len(TOTALS)))
        upcalls, answered, sum_ns, unmatched = self._seen.of("totals", totals)
        max_ns = self._interval_max_ns()
        self._run_max_ns = max(self._run_max_ns, max_ns)
        hist = Log2Hist(counts)
        handlers = []
        for tid, h in self.bpf[b"handlers"].items():
            count, total_ns = self._seen.of(("handler", tid.value), (h.count, h.total_ns))
            if count > 0:
                handlers.append({"tid": tid.value, "comm": h.comm.decode("utf-8", "replace"), "upcalls": count,
                                 "avg_us": round(total_ns / count / 1000, 1),
                                 "max_us_since_start": round(h.max_ns / 1000, 1)})
        handlers.sort(key=lambda h: -h["max_us_since_start"])
        summary = hist.summary()
        return [{
            "type": "ovs_upcall_summary",
            "upcalls": upcalls,
            "answered": answered,
            # Upcalls whose packet ovs-vswitchd did not send back (yet): drop decisions (it
            # installs a drop flow and executes nothing), lost upcalls, answers still to come.
            "unanswered": max(0, upcalls - answered),
            # Packets executed for ovs-vswitchd that match no upcall this probe saw: an
            # OpenFlow packet-out, an upcall from before the probe started, or a packet the
            # probe could not identify (then the latencies above miss it: worth knowing).
            "executes_without_upcall": unmatched,
            "avg_us": round(sum_ns / answered / 1000, 1) if answered else None,
            "max_us": round(max_ns / 1000, 1) if max_ns else None,  # this interval's slowest answer
            "max_us_since_start": round(self._run_max_ns / 1000, 1) if self._run_max_ns else None,
            "histogram": summary,
            "handlers": handlers,
            **self.hooks.record(),
        }]

    def _interval_max_ns(self) -> int:
        """The slowest answer since the last read: the answers now go to the other per-CPU
        slot, and this interval's slot is read and cleared before it is used again."""
        half = ct.c_int(self._epoch & 1)
        self._epoch += 1
        self.bpf[b"epoch"][ct.c_int(0)] = ct.c_uint64(self._epoch)
        table = self.bpf[b"max_ns"]
        value = max(table[half])
        table[half] = table.Leaf()  # zeros on every CPU
        return value

    def format_text(self, r: dict) -> str:
        h = r["histogram"]
        unmatched = r["executes_without_upcall"]
        lines = [f"=== OVS upcall latency: {r['upcalls']} upcalls, {r['answered']} answered"
                 + (f", {unmatched} executes without an upcall seen" if unmatched else "") + " ===",
                 f"avg {r['avg_us']} us  P50 {h['p50']}  P95 {h['p95']}  P99 {h['p99']}  P99.9 {h['p99_9']}  "
                 f"max(bucket) {h['max']} us  max {r['max_us']} us (since start {r['max_us_since_start']} us)",
                 render_text(Log2Hist.from_buckets(h["buckets"]))]
        for t in r["handlers"][:8]:
            lines.append(f"  {t['comm']}({t['tid']}): {t['upcalls']} upcalls, avg {t['avg_us']} us, "
                         f"max since start {t['max_us_since_start']} us")
        return "\n".join(lines)
