"""virtio-rx-path-monitor (guide: virtionet-rx-path-monitor.bt), run inside a guest: per received
packet, the time from its virtio-net RX queue's interrupt through GRO, netif_receive_skb, IP and
the L4 receive; per-stage histograms every --interval, events past --latency-threshold.

Tracepoints for the interrupt, GRO and netif_receive_skb (no kprobes needed); hooks for IP and
L4 (trampolines, or kprobes) where the kernel has kprobes, else the stages end at netif_receive_skb.  Design and record:
docs/output-virt.md#virtio-rx-path-monitor.
"""

from __future__ import annotations

import ctypes as ct
import platform
import socket
import time
from pathlib import Path

from vocab.hist import Log2Hist, render_text

from .base import (DST_IP, DST_PORT, HOOK_ATTACH, L4_PROTOCOL, SRC_IP, SRC_PORT, Flag, Probe, Unavailable,
                   btf_reason, tracepoint_reason)
from .events import EventStream
from .flows import NsFlow, flow_dict
from .runtime.attach import FunctionHooks
from .runtime.clock import iso
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.layout import CMirror
from .runtime.loader import load
from .runtime.params import CDefines
from .stage_latency import FIELDS
from .system_latency import DURATION, INTERVAL
from .virtnet_poll import GUEST_HINT, VirtnetPollMonitor, check_device, rx_vectors, virtio_devices

STAGES = ("IRQ", "GRO", "NETIF_RECEIVE", "IP", "L4")
TRACEPOINTS = (("irq", "irq_handler_entry"), ("net", "napi_gro_receive_entry"), ("net", "netif_receive_skb"))
IP_FN = "ip_local_deliver"  # both ip_rcv and the list receive (ip_list_rcv) end here, per skb
L4_FNS = ("udp_rcv", "tcp_v4_rcv", "icmp_rcv")
TOTAL_SLOT = 0xFF
MAX_INFLIGHT = 8192
THRESHOLD = Flag("latency-threshold", "int", "report packets slower than this many microseconds, interrupt "
                 "to the last stage (0: every packet)", default=1000, lo=0, hi=60_000_000,
                 label="Latency threshold (µs)")
NO_KPROBES = "no kprobes on this kernel: the stages end at NETIF_RECEIVE"


class Packet(CMirror):
    """Mirror of struct pkt in virtio_rx_path.bpf.c."""

    _c_struct_ = "pkt"
    _fields_ = [("stage_ns", ct.c_uint64 * len(STAGES)), ("seen", ct.c_uint32), ("cpu", ct.c_uint32),
                ("ifindex", ct.c_uint32), ("queue", ct.c_uint32), ("flow", NsFlow), ("ip_len", ct.c_uint32)]


def ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"ifindex {ifindex}"


class VirtioRxPathMonitor(EventStream, Probe):
    name = "virtio-rx-path-monitor"
    title = "virtio-net RX path (in the guest)"
    tier = 2
    runs_in_guest = True
    streaming = True
    other_records = ("virtio_rx_path_event",)  # a guest file may hold them beside the summaries
    cost = ("medium: tracepoints per received packet (GRO, netif_receive_skb) and per interrupt, hooks on "
            "IP and L4 receive (trampolines or kprobes); one event per packet past the threshold")
    description = ("Inside a VM, per received packet on a virtio-net interface: the time from the RX queue's "
                   "interrupt to GRO, netif_receive_skb, IP and the L4 receive; per-stage histograms every "
                   "--interval and the packets slower than --latency-threshold.")
    flags = (VirtnetPollMonitor.flags[0], SRC_IP, DST_IP, SRC_PORT, DST_PORT, L4_PROTOCOL, THRESHOLD, INTERVAL,
             HOOK_ATTACH, DURATION)

    @classmethod
    def parse_options(cls, raw):
        options = Probe.parse_options.__func__(cls, raw)
        check_device(options.raw.get("device"))
        return options

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        return (Probe.unavailable_reason.__func__(cls, caps)
                or btf_reason(caps, "sk_buff's layout", "use a guest kernel built with BTF")
                or tracepoint_reason(caps, TRACEPOINTS, "CONFIG_TRACEPOINTS"))

    def hooks(self) -> tuple[str | None, list[str]]:
        """(IP function, L4 functions) present here; (None, []) without kprobes."""
        if not (self.caps.kprobes and self.caps.function(IP_FN)):
            return None, []
        return IP_FN, [f for f in L4_FNS if self.caps.function(f)]

    def c_defines(self, last_stage: int) -> CDefines:
        o = self.options
        d = CDefines().set("NS_F_IFINDEX", o.device)
        d.set("NS_F_SADDR", o.src_ip).set("NS_F_DADDR", o.dst_ip).set("NS_F_PROTO", o.l4_protocol)
        d.set("NS_F_SPORT", o.src_port).set("NS_F_DPORT", o.dst_port)
        d.set("NS_THRESHOLD_NS", o.latency_threshold * 1000)
        for i, stage in enumerate(STAGES):
            d.set(f"STAGE_{stage}", i)
        d.set("NSTAGES", len(STAGES))
        return d.set("NS_LAST_STAGE", last_stage).set("NS_MAX_INFLIGHT", MAX_INFLIGHT)

    def load(self):
        devices = [self.options.raw["device"]] if self.options.raw.get("device") else virtio_devices()
        if not devices:
            raise Unavailable(f"{self.name}: no virtio-net interface on this system; {GUEST_HINT}")
        ip_fn, l4_fns = self.hooks()
        self.stages = STAGES if l4_fns else STAGES[:3]
        bpf = load("virtio_rx_path.bpf.c", self.c_defines(len(self.stages) - 1), FIELDS)
        self.attached = ["tracepoints irq:irq_handler_entry (RX queues' vectors), net:napi_gro_receive_entry, "
                         "net:netif_receive_skb"]
        if l4_fns:
            hooks = FunctionHooks(bpf, self.options.values.get("attach", "auto"))
            hooks.entry(ip_fn, "on_ip")
            for fn in l4_fns:
                hooks.entry(fn, "on_l4")
            self.attached.append(hooks.describe())
        else:
            self.attached.append(NO_KPROBES)
        text = Path("/proc/interrupts").read_text()
        table = bpf[b"irq_queues"]
        for dev in devices:
            ifindex = socket.if_nametoindex(dev)
            for irq, queue in rx_vectors(dev, text).items():
                table[ct.c_uint32(irq)] = table.Leaf(ifindex, queue, 0)
        self.bpf = bpf
        self.open_events(bpf, lambda data, _size: self._pending.append(
            self.event_record(ct.cast(data, ct.POINTER(Packet)).contents)))
        self._seen = Deltas()
        self._last_summary = time.monotonic()
        self._ending = False
        return bpf

    def describe_attach(self) -> str:
        return "; ".join(self.attached)

    def finish(self) -> None:
        """The run ends: the next read reports the interval so far."""
        self._ending = True

    def wait(self, timeout: float) -> None:
        self.poll_events(timeout)

    def event_record(self, p: Packet) -> dict:
        reached = [i for i in range(len(self.stages)) if p.seen & (1 << i)]
        first = p.stage_ns[reached[0]]
        stages, prev = [], first
        for i in reached:
            t = p.stage_ns[i]
            stages.append({"stage": STAGES[i], "ktime_ns": t, "time": iso(t), "delta_us": round((t - prev) / 1000, 1)})
            prev = t
        slowest = max(stages[1:], key=lambda s: s["delta_us"], default=stages[0])
        return {
            "type": "virtio_rx_path_event", "hostname": socket.gethostname(), "kernel": platform.release(),
            "device": ifname(p.ifindex), "queue": p.queue, "cpu": p.cpu,
            **flow_dict(p.flow), "ip_len": p.ip_len,
            "total_us": round((prev - first) / 1000, 1), "slowest_stage": slowest["stage"], "stages": stages,
        }

    def read(self) -> list[dict]:
        out = self.take_events()
        now = time.monotonic()
        since = now - self._last_summary
        if since >= self.options.interval or (self._ending and since >= 0.1):
            out += self.summary_records(since)
            self._last_summary = now
        return out

    def summary_records(self, elapsed: float) -> list[dict]:
        counts: dict[tuple[int, int], dict[int, int]] = {}
        for k, per_cpu in self.bpf[b"stage_counts"].items():
            d = self._seen.of(("count", k.ifindex, k.queue, k.stage), sum(per_cpu))
            counts.setdefault((k.ifindex, k.queue), {})[k.stage] = d
        hists: dict[tuple[int, int, int], dict[int, int]] = {}
        for k, per_cpu in self.bpf[b"hists"].items():
            d = self._seen.of(("hist", k.ifindex, k.queue, k.stage, k.slot), sum(per_cpu))
            if d:
                hists.setdefault((k.ifindex, k.queue, k.stage), {})[k.slot] = d
        out = []
        for (ifindex, queue), per_stage in sorted(counts.items()):
            if not any(per_stage.values()):
                continue
            stages = []
            for i, label in enumerate(self.stages):
                h = Log2Hist(hists.get((ifindex, queue, i), {}))
                stages.append({"stage": label, "from": self.stages[i - 1] if i else "IRQ", "to": label,
                               "packets": per_stage.get(i, 0), **h.summary()})
            out.append({
                "type": "virtio_rx_path_summary", "device": ifname(ifindex), "queue": queue,
                "interval_s": round(elapsed, 3), "hostname": socket.gethostname(), "kernel": platform.release(),
                "stages_available": list(self.stages),
                "stages_unavailable_reason": None if len(self.stages) == len(STAGES) else NO_KPROBES,
                "packets": per_stage.get(0, 0), "completed": per_stage.get(len(self.stages) - 1, 0),
                "stages": stages,
                "total": Log2Hist(hists.get((ifindex, queue, TOTAL_SLOT), {})).summary(),
            })
        return out

    def format_text(self, r: dict) -> str:
        if r["type"] == "lost_events":
            return self.lost_text(r)
        if r["type"] == "virtio_rx_path_summary":
            lines = [f"=== {r['device']} rx queue {r['queue']}: {r['packets']} packets, {r['completed']} reached "
                     f"{r['stages_available'][-1]}; total p50 {r['total']['p50']} us p99 {r['total']['p99']} us ==="]
            for s in r["stages"][1:]:
                lines.append(f"{s['from']} -> {s['stage']}: {s['packets']} packets, p50 {s['p50']} us, "
                             f"p99 {s['p99']} us, max {s['max']} us")
                lines.append(render_text(Log2Hist.from_buckets(s["buckets"])))
            return "\n".join(lines)
        path = " ".join(f"{s['stage']}+{s['delta_us']}" for s in r["stages"])
        return (f"{r['stages'][0]['time']} {r['device']}/{r['queue']} cpu {r['cpu']} {r['src_ip']}:{r['src_port']} -> "
                f"{r['dst_ip']}:{r['dst_port']} proto {r['protocol']}: {r['total_us']} us ({path} us), "
                f"slowest {r['slowest_stage']}")
