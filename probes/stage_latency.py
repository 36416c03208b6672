"""The machinery shared by the system and VM network latency probes (guide tools 3 and 4).

A path is a list of stages; each stage is one or more kernel functions (kprobes)
or the net:netif_receive_skb tracepoint.  The BPF side (stage_latency.bpf.c)
keeps a log2 histogram per (previous stage -> stage) pair and one for the
total; details mode also emits the packets whose total exceeds a threshold.
"""

from __future__ import annotations

import ctypes as ct
import time
from dataclasses import dataclass

from vocab.hist import Log2Hist

from .base import Probe, Unavailable, kprobe_reason
from .events import EventStream
from .runtime.attach import FunctionHooks
from .runtime.clock import iso
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.layout import CMirror
from .runtime.loader import load
from .runtime.netns import current_netns
from .runtime.params import CDefines

FIELDS = ["SKB_DEV", "SKB_HEAD", "SKB_DATA", "SKB_LEN", "SKB_DATA_LEN", "SKB_PROTOCOL", "SKB_NETWORK_HEADER",
          "SKB_MAC_HEADER", "SKB_VLAN_TCI", "NETDEV_NAME", "NETDEV_IFINDEX", "NETDEV_ND_NET", "NET_NS_INUM"]

MAX_STAGES = 8
TOTAL = 0xFF
NETIF_RECEIVE_TP = "tracepoint:net:netif_receive_skb"


@dataclass(frozen=True)
class Hook:
    function: str  # kernel function, or NETIF_RECEIVE_TP
    skb_arg: int = 1
    deref: bool = False  # the argument is a struct sk_buff **


@dataclass(frozen=True)
class Stage:
    label: str
    hooks: tuple[Hook, ...]
    optional: bool = False  # e.g. the upcall: only on a flow miss
    # True: every hook is a path of its own (one per protocol), attach all present.
    # False: the hooks are one function's names across kernels, attach the first present
    # (6.1 lists an untraceable local `dev_queue_xmit` beside `__dev_queue_xmit`).
    union: bool = False


def tp(label: str) -> Stage:
    return Stage(label, (Hook(NETIF_RECEIVE_TP),))


def kp(label: str, *hooks: tuple, optional: bool = False, union: bool = False) -> Stage:
    return Stage(label, tuple(Hook(*h) for h in hooks), optional, union)


# OVS datapath stages, shared by every path through the bridge, in the order a packet
# meets them: ovs_vport_receive() extracts the flow key before ovs_dp_process_packet()
# looks it up.  After an upcall, ovs-vswitchd's OVS_PACKET_CMD_EXECUTE re-injects the
# packet straight into the actions (ovs_vport_send), past both.
OVS_RX = kp("OVS_RX", ("netdev_frame_hook", 1, True))
FLOW_EXTRACT = kp("FLOW_EXTRACT", ("ovs_flow_key_extract", 2))
OVS_PROCESS = kp("OVS_PROCESS", ("ovs_dp_process_packet", 1))
OVS_UPCALL = kp("OVS_UPCALL", ("ovs_dp_upcall", 2), optional=True)
VPORT_SEND = kp("OVS_VPORT_SEND", ("ovs_vport_send", 2))
QDISC_XMIT = kp("DEV_XMIT", ("__dev_queue_xmit", 1), ("dev_queue_xmit", 1))


class PktState(CMirror):
    """Mirror of struct pkt_state in stage_latency.bpf.c (with NS_DETAILS: what events carry)."""

    _c_struct_ = "pkt_state"
    _c_when_ = "NS_DETAILS"
    _fields_ = [
        ("first_ns", ct.c_uint64), ("last_ns", ct.c_uint64), ("last_stage", ct.c_uint32),
        ("stages_seen", ct.c_uint32), ("stage_ns", ct.c_uint64 * MAX_STAGES),
        ("stage_cpu", ct.c_uint32 * MAX_STAGES), ("stage_ifindex", ct.c_uint32 * MAX_STAGES),
        ("stage_pid", ct.c_uint32 * MAX_STAGES), ("stage_len", ct.c_uint32 * MAX_STAGES),
        ("stage_comm", ct.c_uint8 * (16 * MAX_STAGES)), ("stage_dev", ct.c_uint8 * (16 * MAX_STAGES)),
        ("ip_len", ct.c_uint32), ("pad", ct.c_uint32),
    ]


def _text(raw, i: int) -> str:
    """The i-th 16-byte name of a flat char array."""
    return bytes(raw[16 * i:16 * (i + 1)]).split(b"\0")[0].decode("utf-8", "replace")


class StageLatency(EventStream, Probe):
    """Subclasses give the stages per direction and which stages are tied to which device.

    Summary: one ``<family>_latency_summary`` record per read.  Details: the events of the
    packets over the threshold as they come, and the same summary record every --interval."""

    details = False  # set by the *-details probes
    MAX_INFLIGHT = 16384

    def path(self) -> tuple[list[Stage], dict[int, tuple[int, int]]]:
        """(stages, {stage index: (ifindex, netns)}) for the chosen options."""
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        kprobed = [tuple(h.function for h in s.hooks) for s in cls.all_stages()
                   if not s.optional and s.hooks[0].function != NETIF_RECEIVE_TP]
        return (super().unavailable_reason(caps)
                or kprobe_reason(caps, kprobed, "the OVS datapath stages are kernel functions"))

    @classmethod
    def all_stages(cls) -> list[Stage]:
        raise NotImplementedError

    def _resolve(self, stages: list[Stage]) -> list[list[Hook]]:
        """The hooks present on this kernel, per stage; Unavailable if a required stage has none."""
        out = []
        for s in stages:
            present = [h for h in s.hooks if h.function == NETIF_RECEIVE_TP and self.caps.tracepoint("net", "netif_receive_skb")
                       or h.function != NETIF_RECEIVE_TP and self.caps.kprobes and self.caps.function(h.function)]
            present = present if s.union else present[:1]
            if not present and not s.optional:
                raise Unavailable(f"{self.name}: stage {s.label} cannot be hooked here (none of "
                                  + ", ".join(h.function for h in s.hooks) + " is available)")
            out.append(present)
        return out

    def c_defines(self, stages: list[Stage], devices: dict[int, tuple[int, int]]) -> CDefines:
        o = self.options
        d = CDefines()
        d.set("NS_F_SADDR", o.src_ip).set("NS_F_DADDR", o.dst_ip).set("NS_F_PROTO", o.protocol)
        d.set("NS_LAST_STAGE", len(stages) - 1).set("NS_MAX_INFLIGHT", self.MAX_INFLIGHT)
        d.set("NS_DETAILS", self.details)
        d.set("NS_THRESHOLD_NS", int(o.values.get("latency_threshold") or 0) * 1000)
        slots = list(devices.items()) + [(0xFF, (0, 0))] * (2 - len(devices))  # 0xff: no such stage
        for name, (stage, (ifindex, netns)) in zip("AB", slots):
            d.set(f"NS_DEV_{name}_STAGE", stage).set(f"NS_DEV_{name}_IFINDEX", ifindex).set(f"NS_DEV_{name}_NETNS", netns)
        for i in range(MAX_STAGES):
            hooks = stages[i].hooks if i < len(stages) else ()
            first = next((h for h in hooks if h.function != NETIF_RECEIVE_TP), Hook("", 1))
            d.set(f"NS_STAGE{i}_ARG", first.skb_arg).set(f"NS_STAGE{i}_DEREF", first.deref)
            if any(h.function == NETIF_RECEIVE_TP for h in hooks):
                d.set("NS_TP_NETIF_RECEIVE_STAGE", i)
        return d

    def load(self):
        stages, devices = self.path()
        self.stages = stages
        hooks = self._resolve(stages)
        bpf = load("stage_latency.bpf.c", self.c_defines(stages, devices), FIELDS)
        self.attached: list[str] = []
        self.hooks = FunctionHooks(bpf, self.options.values.get("attach", "auto"))
        for i, present in enumerate(hooks):
            for h in present:
                if h.function == NETIF_RECEIVE_TP:
                    self.attached.append(f"{stages[i].label}: tracepoint net:netif_receive_skb")
                    continue  # attached by its TRACEPOINT_PROBE
                self.attached.append(f"{stages[i].label}: {self.hooks.entry(h.function, f'stage_{i}')} {h.function}")
        self.start_reading()
        if self.details:
            self.open_events(bpf, lambda data, _size: self._pending.append(
                self._event(ct.cast(data, ct.POINTER(PktState)).contents)))
        return bpf

    def start_reading(self) -> None:
        """Nothing read yet: every count is a delta against what was read last."""
        self._seen = Deltas()  # (prev, cur, slot) -> packets; "counters"; "evicted" (highest seen)
        self._last_summary = time.monotonic()

    def describe_attach(self) -> str:
        return "; ".join(self.attached)

    def _label(self, i: int) -> str:
        return "TOTAL" if i == TOTAL else self.stages[i].label

    # summary ------------------------------------------------------------------
    def _hist_deltas(self) -> dict[tuple[int, int], Log2Hist]:
        out: dict[tuple[int, int], dict[int, int]] = {}
        for k, per_cpu in self.bpf[b"hists"].items():
            delta = self._seen.of((k.prev, k.cur, k.slot), sum(per_cpu))
            if delta > 0:
                out.setdefault((k.prev, k.cur), {})[k.slot] = delta
        return {pair: Log2Hist(c) for pair, c in out.items()}

    def _counter_totals(self) -> list[int]:
        """started, completed, stage hits without a start, unfinished packets replaced (since load)."""
        return [sum(self.bpf[b"counters"][ct.c_int(i)]) for i in range(4)]

    def summary_record(self) -> dict:
        hists = self._hist_deltas()
        totals = self._counter_totals()
        started, completed, orphan, replaced = self._seen.of("counters", tuple(totals))
        inflight = len(self.bpf[b"inflight"].items())
        # The table holds every packet started and not completed or replaced, until the LRU
        # pushes it out to make room: what is missing from it was pushed out.
        evicted = max(0, totals[0] - totals[1] - totals[3] - inflight)
        pairs = []
        for (a, b), h in sorted(hists.items(), key=lambda kv: (kv[0][1] == TOTAL, kv[0])):
            pairs.append({"from": self._label(a) if b != TOTAL else self._label(0),
                          "to": self._label(b) if b != TOTAL else self._label(len(self.stages) - 1),
                          "total": b == TOTAL, "unit": "us", **h.summary()})
        record = {
            "type": f"{self.family}_latency_summary",
            "direction": self.options.direction,
            "stages": [s.label for s in self.stages],
            "packets_started": started,
            "packets_completed": completed,
            "stage_without_start": orphan,
            "replaced_unfinished": replaced,
            "evicted_unfinished": self._seen.rise("evicted", evicted),
            "in_flight": inflight,
            "pairs": pairs,
            **self.hooks.record(),
        }
        return record

    # details ------------------------------------------------------------------
    def _event(self, st: PktState) -> dict:
        stages = []
        prev = None
        for i in range(len(self.stages)):
            if not st.stages_seen & (1 << i):
                continue
            t = st.stage_ns[i]
            stages.append({
                "stage": self.stages[i].label, "ktime_ns": t, "time": iso(t),
                "delta_us": round((t - prev) / 1000, 1) if prev is not None else 0.0,
                "cpu": st.stage_cpu[i], "device": _text(st.stage_dev, i) or None,
                "ifindex": st.stage_ifindex[i] or None, "skb_len": st.stage_len[i],
                "tid": st.stage_pid[i], "comm": _text(st.stage_comm, i),
            })
            prev = t
        stages.sort(key=lambda s: s["ktime_ns"])
        slowest = max(stages, key=lambda s: s["delta_us"]) if stages else None
        return {
            "type": f"{self.family}_latency_event",
            "direction": self.options.direction,
            "ktime_ns": st.first_ns,
            "total_us": round((st.last_ns - st.first_ns) / 1000, 1),
            "ip_len": st.ip_len,
            "stages": stages,
            "slowest_stage": slowest["stage"] if slowest else None,
            "slowest_comm": slowest["comm"] if slowest else None,
            "slowest_tid": slowest["tid"] if slowest else None,  # e.g. the handler that answered the upcall
        }

    def wait(self, timeout: float) -> None:
        if self.details:
            self.poll_events(timeout)
        else:
            super().wait(timeout)

    def read(self) -> list[dict]:
        if not self.details:
            return [self.summary_record()]
        out = self.take_events()
        now = time.monotonic()
        if now - self._last_summary >= self.options.interval:
            out.append(self.summary_record())
            self._last_summary = now
        return out

    def format_text(self, r: dict) -> str:
        from vocab.hist import render_text

        if r["type"].endswith("_summary"):
            lines = [f"=== {self.title}: {r['direction'].upper()} ({' -> '.join(r['stages'])}) ===",
                     f"packets: {r['packets_completed']} completed, {r['in_flight']} in flight, "
                     f"{r['stage_without_start']} stage hits without a start, unfinished: "
                     f"{r['replaced_unfinished']} replaced by a packet with the same identity, "
                     f"{r['evicted_unfinished']} pushed out of the full table"]
            for p in r["pairs"]:
                name = "TOTAL" if p["total"] else f"{p['from']} -> {p['to']}"
                lines.append(f"\n{name}: count {p['count']}, p50 {p['p50']} us, p99 {p['p99']} us, max {p['max']} us")
                lines.append(render_text(Log2Hist.from_buckets(p["buckets"])))
            return "\n".join(lines)
        if r["type"] == "lost_events":
            return self.lost_text(r)
        if r["type"] == "error":
            return f"error decoding an event: {r['message']}"
        lines = [f"packet {r['direction'].upper()} total {r['total_us']} us, slowest stage {r['slowest_stage']} ({r['slowest_comm']})"]
        for s in r["stages"]:
            lines.append(f"  {s['time'][11:26]} {s['stage']:<16} +{s['delta_us']:>10} us  cpu {s['cpu']:<3} "
                         f"{s['device'] or '-'}({s['ifindex'] or '-'}) len {s['skb_len']:<5} {s['comm']}({s['tid']})")
        return "\n".join(lines)




def device(flag_value: int) -> tuple[int, int]:
    """(ifindex, netns) of a validated interface flag (0 = any)."""
    return (flag_value, current_netns() if flag_value else 0)
