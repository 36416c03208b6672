"""ovs-megaflow (guide tool 5, ovs_userspace_megaflow): upcall -> FLOW_CMD_NEW -> FLOW_CMD_DEL."""

from __future__ import annotations

import ctypes as ct
import time
from collections import defaultdict

from .base import Flag, Probe, kprobe_reason
from .events import EventStream
from .flows import NsPkt, flow_dict
from .ovs_netlink import NetlinkDecodeError, decode_flow_msg, significant_key
from .runtime.attach import attach_kprobe
from .runtime.clock import iso
from .runtime.kernel import KernelCaps
from .runtime.loader import load
from .runtime.params import CDefines, ipv4_text
from .stage_latency import FIELDS as STAGE_FIELDS
from .system_latency import DURATION

FIELDS = STAGE_FIELDS + ["SKB_LEN"]
UPCALL_FN, NEW_FN, DEL_FN = "ovs_dp_upcall", "ovs_flow_cmd_new", "ovs_flow_cmd_del"
NL_COPY = 1024
EV_UPCALL, EV_FLOW_NEW, EV_FLOW_DEL = 1, 2, 3

# The guide's install latency bands (microseconds).
BANDS = (("normal (<500us)", 0, 500), ("500us-1ms", 500, 1000), ("large OpenFlow tables (1-10ms)", 1000, 10_000),
         ("ovs-vswitchd CPU-bound (10-100ms)", 10_000, 100_000), ("lock/scheduling trouble (>100ms)", 100_000, None))


class MfEvent(ct.Structure):
    """Mirror of struct mf_event in ovs_megaflow.bpf.c."""

    _fields_ = [("ts_ns", ct.c_uint64), ("kind", ct.c_uint32), ("tid", ct.c_uint32), ("nl_len", ct.c_uint32),
                ("comm", ct.c_char * 16), ("pkt", NsPkt), ("nl", ct.c_uint8 * NL_COPY)]


def band_of(us: float) -> str:
    for name, lo, hi in BANDS:
        if us >= lo and (hi is None or us < hi):
            return name
    return BANDS[-1][0]


def _tuple_of_key(key: dict) -> tuple:
    return (key.get("ip_src"), key.get("ip_dst"), key.get("ip_proto"), key.get("l4_src_port"), key.get("l4_dst_port"))


def _key_matches(sig: dict, up: dict) -> bool:
    """Does an upcall's packet fall under a megaflow's significant key fields?"""
    return all(up.get(k) == v for k, v in sig.items() if k in up)


class OvsMegaflow(EventStream, Probe):
    name = "ovs-megaflow"
    title = "OVS megaflow lifecycle"
    tier = 2
    cost = "medium: one event per upcall and per flow install/delete"
    description = "Follows flows from upcall to FLOW_CMD_NEW (install latency) to FLOW_CMD_DEL; flags storms and repeats."
    streaming = True
    flags = (
        Flag("eth-src", "mac", "source MAC"), Flag("eth-dst", "mac", "destination MAC"),
        Flag("ip-src", "ipv4", "source IPv4 address"), Flag("ip-dst", "ipv4", "destination IPv4 address"),
        Flag("ip-proto", "protocol", "tcp, udp, icmp or all", default="all", choices=("tcp", "udp", "icmp", "all")),
        Flag("l4-src-port", "port", "L4 source port"), Flag("l4-dst-port", "port", "L4 destination port"),
        Flag("interval", "seconds", "seconds between lifecycle summaries", short="i", default=5.0, lo=0.1, hi=86400),
        Flag("storm-threshold", "int", "upcalls per second called a storm", default=1000, lo=1, hi=10_000_000),
        DURATION,
    )

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        return super().unavailable_reason(caps) or kprobe_reason(caps, (UPCALL_FN, NEW_FN), "on the OVS datapath functions")

    def c_defines(self) -> CDefines:
        o = self.options
        d = CDefines().set("NS_F_SADDR", o.ip_src).set("NS_F_DADDR", o.ip_dst).set("NS_F_PROTO", o.ip_proto)
        return d.set("NS_F_SPORT", o.l4_src_port).set("NS_F_DPORT", o.l4_dst_port)

    def load(self):
        bpf = load("ovs_megaflow.bpf.c", self.c_defines(), FIELDS)
        attach_kprobe(bpf, UPCALL_FN, "on_upcall")
        attach_kprobe(bpf, NEW_FN, "on_flow_new")
        if self.caps.function(DEL_FN):
            attach_kprobe(bpf, DEL_FN, "on_flow_del")
        self._waiting: dict[tuple, list[int]] = defaultdict(list)  # 5-tuple -> upcall ktimes not yet installed
        self._installed: set[tuple] = set()
        self._interval = self._new_interval()
        self._last_summary = time.monotonic()
        self._lost_at_summary = 0
        self.open_events(bpf, self._on_event, page_cnt=128)
        return bpf

    def describe_attach(self) -> str:
        return f"kprobes {UPCALL_FN}, {NEW_FN}, {DEL_FN}"

    @staticmethod
    def _new_interval() -> dict:
        return {"upcalls": 0, "installs": 0, "deletes": 0, "repeated_upcalls": defaultdict(int),
                "latencies_us": [], "bands": defaultdict(int)}

    def _on_event(self, data, size) -> None:
        try:
            e = ct.cast(data, ct.POINTER(MfEvent)).contents
            if e.kind == EV_UPCALL:
                self._upcall(e)
            else:
                raw = bytes(e.nl[: min(e.nl_len, NL_COPY)]) if size >= ct.sizeof(MfEvent) else b""
                self._flow_cmd(e, raw)
        except (NetlinkDecodeError, ValueError) as exc:
            self._pending.append({"type": "error", "message": f"could not decode an event: {exc}"})

    def _user_filter(self, key: dict) -> bool:
        """Install/delete events are decoded in user space, so their filters run here."""
        o = self.options
        want = {"eth_src": o.eth_src, "eth_dst": o.eth_dst,
                "ip_src": _ip(o.ip_src), "ip_dst": _ip(o.ip_dst), "ip_proto": o.ip_proto or None,
                "l4_src_port": o.l4_src_port or None, "l4_dst_port": o.l4_dst_port or None}
        return all(key.get(k) == v for k, v in want.items() if v is not None and k in key)

    def _upcall(self, e: MfEvent) -> None:
        flow = flow_dict(e.pkt.flow)
        p = e.pkt
        eth_src = ":".join(f"{b:02x}" for b in p.eth_src)
        eth_dst = ":".join(f"{b:02x}" for b in p.eth_dst)
        o = self.options
        if (o.eth_src and o.eth_src != eth_src) or (o.eth_dst and o.eth_dst != eth_dst):
            return
        proto_num = {"icmp": 1, "tcp": 6, "udp": 17}.get(flow["protocol"] or "", None)
        up = {"ip_src": flow["src_ip"], "ip_dst": flow["dst_ip"], "ip_proto": proto_num,
              "l4_src_port": flow["src_port"], "l4_dst_port": flow["dst_port"], "eth_src": eth_src, "eth_dst": eth_dst}
        t = (up["ip_src"], up["ip_dst"], up["ip_proto"], up["l4_src_port"], up["l4_dst_port"])
        repeated = t in self._installed
        self._waiting[t].append(e.ts_ns)
        self._interval["upcalls"] += 1
        if repeated:
            self._interval["repeated_upcalls"][t] += 1
        self._pending.append({"type": "megaflow_upcall", "time": iso(e.ts_ns), "ktime_ns": e.ts_ns,
                                  "tid": e.tid, "comm": e.comm.decode("utf-8", "replace"), "flow": flow,
                                  "eth_src": eth_src, "eth_dst": eth_dst, "after_install": repeated})

    def _flow_cmd(self, e: MfEvent, raw: bytes) -> None:
        msg = decode_flow_msg(raw)
        sig = significant_key(msg)
        if not self._user_filter(msg["key"]):
            return
        kind = "install" if e.kind == EV_FLOW_NEW else "delete"
        rec = {"type": f"megaflow_{kind}", "time": iso(e.ts_ns), "ktime_ns": e.ts_ns, "tid": e.tid,
               "comm": e.comm.decode("utf-8", "replace"), "key": msg["key"], "match": sig,
               "actions": msg["actions"], "ufid": msg["ufid"], "truncated": msg["truncated"]}
        if kind == "install":
            self._interval["installs"] += 1
            first = None
            for t, stamps in list(self._waiting.items()):
                up = dict(zip(("ip_src", "ip_dst", "ip_proto", "l4_src_port", "l4_dst_port"), t))
                if stamps and _key_matches(sig, up):
                    first = min(first or stamps[0], stamps[0])
                    self._installed.add(t)
                    del self._waiting[t]
            if first is not None and first <= e.ts_ns:
                us = (e.ts_ns - first) / 1000
                rec["install_latency_us"] = round(us, 1)
                rec["band"] = band_of(us)
                self._interval["latencies_us"].append(us)
                self._interval["bands"][rec["band"]] += 1
        else:
            self._interval["deletes"] += 1
            self._installed.discard(_tuple_of_key(msg["key"]))
        self._pending.append(rec)

    def _summary(self, elapsed: float) -> dict:
        iv = self._interval
        rate = iv["upcalls"] / elapsed if elapsed > 0 else 0.0
        lat = sorted(iv["latencies_us"])
        patterns = []
        if rate >= self.options.storm_threshold:
            patterns.append({"pattern": "upcall storm", "detail": f"{rate:.0f} upcalls/s"})
        repeated = {t: n for t, n in iv["repeated_upcalls"].items() if n >= 2}
        if repeated:
            patterns.append({"pattern": "repeated upcalls for one flow",
                             "detail": f"{len(repeated)} flows kept missing after their megaflow was installed"})
        if lat and lat[-1] >= 1000:
            patterns.append({"pattern": "high install latency", "detail": f"max {lat[-1]:.0f} us ({band_of(lat[-1])})"})
        return {
            "type": "megaflow_summary", "interval_s": round(elapsed, 3), "upcalls": iv["upcalls"],
            "upcalls_per_s": round(rate, 1), "installs": iv["installs"], "deletes": iv["deletes"],
            "install_latency_us": {"count": len(lat), "p50": lat[len(lat) // 2] if lat else None,
                                   "max": lat[-1] if lat else None},
            "bands": dict(iv["bands"]),
            "repeated_upcall_flows": [{"flow": list(t), "upcalls": n} for t, n in repeated.items()],
            "patterns": patterns, "lost_events": self.events_lost - self._lost_at_summary,
        }

    def wait(self, timeout: float) -> None:
        self.poll_events(timeout)

    def read(self) -> list[dict]:
        out = self.take_events()
        now = time.monotonic()
        if now - self._last_summary >= self.options.interval:
            out.append(self._summary(now - self._last_summary))
            self._interval = self._new_interval()
            self._last_summary = now
            self._lost_at_summary = self.events_lost
        return out

    def format_text(self, r: dict) -> str:
        t = r["type"]
        if t == "lost_events":
            return self.lost_text(r)
        if t == "megaflow_upcall":
            f = r["flow"]
            return f"[{r['time'][11:26]}] UPCALL  {f['src_ip']} -> {f['dst_ip']} {f['protocol']} {r['comm']}({r['tid']})"
        if t in ("megaflow_install", "megaflow_delete"):
            lat = f"  install latency {r['install_latency_us']} us [{r['band']}]" if "install_latency_us" in r else ""
            return (f"[{r['time'][11:26]}] {'NEW' if t.endswith('install') else 'DEL'}     match {r['match']} "
                    f"actions {','.join(r['actions'] or [])} by {r['comm']}({r['tid']}){lat}")
        if t == "megaflow_summary":
            pats = "; ".join(f"{p['pattern']}: {p['detail']}" for p in r["patterns"]) or "no abnormal pattern"
            return (f"=== {r['interval_s']:.0f}s: {r['upcalls']} upcalls ({r['upcalls_per_s']}/s), {r['installs']} installs, "
                    f"{r['deletes']} deletes; install latency p50 {r['install_latency_us']['p50']} us, "
                    f"max {r['install_latency_us']['max']} us; {pats}")
        return str(r)


def _ip(value: int) -> str | None:
    return ipv4_text(value) if value else None
