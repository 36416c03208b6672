"""ovs-megaflow (guide tool 5, ovs_userspace_megaflow): upcall -> FLOW_CMD_NEW -> FLOW_CMD_DEL."""

from __future__ import annotations

import ctypes as ct
import time

from .base import DURATION, HOOK_ATTACH, Flag, Probe, interval_flag, kprobe_reason
from .events import EventStream
from .flows import NsPkt, flow_dict
from .ovs_flow_match import WAIT_S, MegaflowTracker, flow_fields
from .ovs_netlink import NetlinkDecodeError, decode_flow_msg, significant_key
from .runtime.attach import FunctionHooks
from .runtime.clock import iso
from .runtime.kernel import KernelCaps
from .runtime.layout import CMirror
from .runtime.loader import load
from .runtime.params import CDefines
from .stage_latency import FIELDS as STAGE_FIELDS

FIELDS = STAGE_FIELDS
UPCALL_FN, NEW_FN, DEL_FN = "ovs_dp_upcall", "ovs_flow_cmd_new", "ovs_flow_cmd_del"
EXECUTE_FN = "ovs_flow_key_extract_userspace"  # runs only in OVS_PACKET_CMD_EXECUTE
NL_COPY, NL_SLACK = 1024, 16
EV_UPCALL, EV_FLOW_NEW, EV_FLOW_DEL, EV_EXECUTE = 1, 2, 3, 4

# The guide's install latency bands (microseconds).
BANDS = (("normal (<500us)", 0, 500), ("500us-1ms", 500, 1000), ("large OpenFlow tables (1-10ms)", 1000, 10_000),
         ("ovs-vswitchd CPU-bound (10-100ms)", 10_000, 100_000), ("lock/scheduling trouble (>100ms)", 100_000, None))
# Upcalls per second from which an interval is an upcall storm.  The one value: the
# playbook's upcall-storm rule fires on this probe's megaflow_upcall_storm records.
STORM_PER_S = 1000
REPEATS_PER_FLOW = 2  # upcalls of one flow after its install, in one interval, that make the pattern
TOP_FLOWS = 10  # flows listed in a pattern record


class MfEvent(CMirror):
    """Mirror of struct mf_event in ovs_megaflow.bpf.c."""

    _c_struct_ = "mf_event"
    _fields_ = [("ts_ns", ct.c_uint64), ("kind", ct.c_uint32), ("tid", ct.c_uint32), ("nl_len", ct.c_uint32),
                ("comm", ct.c_char * 16), ("pkt", NsPkt), ("nl", ct.c_uint8 * (NL_COPY + NL_SLACK))]


def band_of(us: float) -> str:
    for name, lo, hi in BANDS:
        if us >= lo and (hi is None or us < hi):
            return name
    return BANDS[-1][0]


def _mac_text(raw) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _mac_number(mac: str | None) -> int:
    """A validated MAC (params.mac) as the 48-bit constant the BPF filter compares."""
    return int(mac.replace(":", ""), 16) if mac else 0


def upcall_fields(p: NsPkt) -> dict:
    """What an upcalled packet says about its flow, in the names of a decoded flow key."""
    flow = flow_dict(p.flow)
    fields = {"eth_src": _mac_text(p.eth_src), "eth_dst": _mac_text(p.eth_dst), "eth_type": p.eth_type or None}
    if p.has_ip:
        fields.update(ip_src=flow["src_ip"], ip_dst=flow["dst_ip"], ip_proto=p.flow.proto,
                      l4_src_port=flow["src_port"], l4_dst_port=flow["dst_port"])
        if p.flow.proto == 1:
            fields.update(icmp_type=p.icmp_type, icmp_code=p.icmp_code)
    return fields


class OvsMegaflow(EventStream, Probe):
    name = "ovs-megaflow"
    title = "OVS megaflow lifecycle"
    tier = 2
    cost = "medium: one event per upcall, per packet ovs-vswitchd executes and per flow install/delete"
    description = "Follows flows from upcall to FLOW_CMD_NEW (install latency) to FLOW_CMD_DEL; flags storms and repeats."
    streaming = True
    flags = (
        Flag("eth-src", "mac", "source MAC", label="Source MAC"),
        Flag("eth-dst", "mac", "destination MAC", label="Destination MAC"),
        Flag("ip-src", "ipv4", "source IPv4 address", label="Source IP"),
        Flag("ip-dst", "ipv4", "destination IPv4 address", label="Destination IP"),
        Flag("ip-proto", "protocol", "tcp, udp, icmp or all", default="all", choices=("tcp", "udp", "icmp", "all"),
             label="Protocol"),
        Flag("l4-src-port", "port", "L4 source port", label="Source port"),
        Flag("l4-dst-port", "port", "L4 destination port", label="Destination port"),
        interval_flag(5.0, "seconds between lifecycle summaries", "Summary every (s)"),
        Flag("storm-threshold", "int", "upcalls per second called a storm", default=STORM_PER_S, lo=1, hi=10_000_000,
             label="Storm above (upcalls/s)"),
        HOOK_ATTACH,
        DURATION,
    )

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        return super().unavailable_reason(caps) or kprobe_reason(caps, (UPCALL_FN, NEW_FN, EXECUTE_FN),
                                                                 "on the OVS datapath functions")

    def c_defines(self) -> CDefines:
        o = self.options
        d = CDefines().set("NS_F_SADDR", o.ip_src).set("NS_F_DADDR", o.ip_dst).set("NS_F_PROTO", o.ip_proto)
        d.set("NS_F_SPORT", o.l4_src_port).set("NS_F_DPORT", o.l4_dst_port)
        return d.set("NS_F_ETH_SRC", _mac_number(o.eth_src)).set("NS_F_ETH_DST", _mac_number(o.eth_dst))

    @property
    def _filtered(self) -> bool:
        o = self.options
        return any((o.eth_src, o.eth_dst, o.ip_src, o.ip_dst, o.ip_proto, o.l4_src_port, o.l4_dst_port))

    def load(self):
        bpf = load("ovs_megaflow.bpf.c", self.c_defines(), FIELDS)
        self.hooks = FunctionHooks(bpf, self.options.values.get("attach", "auto"))
        self.hooks.entry(UPCALL_FN, "on_upcall")
        self.hooks.entry(NEW_FN, "on_flow_new")
        self.hooks.entry(EXECUTE_FN, "on_execute")
        if self.caps.function(DEL_FN):
            self.hooks.entry(DEL_FN, "on_flow_del")
        self.open_events(bpf, self._on_event, page_cnt=128)
        self.start_tracking()
        return bpf

    def start_tracking(self) -> None:
        """The user-space state of a run: what follows upcalls to installs, the interval."""
        self.tracker = MegaflowTracker()
        self._batch: list[tuple] = []
        self._bands: dict[str, int] = {}
        self._last_summary = time.monotonic()
        self._lost_at_summary = 0

    def describe_attach(self) -> str:
        return self.hooks.describe()

    def _on_event(self, data, size) -> None:
        """Copy the event out of the perf buffer; events are matched in time order after the poll
        (each CPU's buffer is drained in turn: an install can come before its upcall)."""
        e = ct.cast(data, ct.POINTER(MfEvent)).contents
        comm = e.comm.decode("utf-8", "replace")
        if e.kind in (EV_UPCALL, EV_EXECUTE):
            self._batch.append((e.ts_ns, e.kind, e.tid, comm, upcall_fields(e.pkt), flow_dict(e.pkt.flow)))
        else:
            complete = size >= ct.sizeof(MfEvent) - NL_SLACK
            raw = bytes(e.nl[: min(e.nl_len, NL_COPY)]) if complete else b""
            self._batch.append((e.ts_ns, e.kind, e.tid, comm, raw, None))

    def _process_batch(self) -> None:
        batch, self._batch = sorted(self._batch, key=lambda ev: ev[0]), []
        for ts, kind, tid, comm, payload, flow in batch:
            try:
                if kind == EV_UPCALL:
                    self._upcall(ts, tid, comm, payload, flow)
                elif kind == EV_EXECUTE:
                    self.tracker.executed(ts, payload)
                else:
                    self._flow_cmd(ts, kind, tid, comm, payload)
            except (NetlinkDecodeError, ValueError) as exc:
                self._pending.append({"type": "error", "message": f"could not decode an event: {exc}"})

    def _upcall(self, ts: int, tid: int, comm: str, fields: dict, flow: dict) -> None:
        repeated = self.tracker.upcall(ts, fields)
        self._pending.append({"type": "megaflow_upcall", "time": iso(ts), "ktime_ns": ts, "tid": tid, "comm": comm,
                              "flow": flow, "eth_src": fields["eth_src"], "eth_dst": fields["eth_dst"],
                              "after_install": repeated})

    def _flow_cmd(self, ts: int, kind: int, tid: int, comm: str, raw: bytes) -> None:
        msg = decode_flow_msg(raw)
        rec = {"type": "megaflow_install" if kind == EV_FLOW_NEW else "megaflow_delete", "time": iso(ts),
               "ktime_ns": ts, "tid": tid, "comm": comm, "key": msg["key"], "match": significant_key(msg),
               "actions": msg["actions"], "ufid": msg["ufid"], "truncated": msg["truncated"]}
        if kind == EV_FLOW_NEW:
            us, upcall_flow = self.tracker.install(ts, msg["key"], msg["ufid"])
            if us is not None:
                rec["install_latency_us"] = round(us, 1)
                rec["band"] = band_of(us)
                rec["upcall_flow"] = upcall_flow
                self._bands[rec["band"]] = self._bands.get(rec["band"], 0) + 1
        else:
            known = self.tracker.delete(msg["key"], msg["ufid"])
            # The kernel filtered on the key; a delete by UFID alone is ours only if we saw its install.
            if self._filtered and not msg["key"] and not known:
                return
        self._pending.append(rec)

    def _summary(self, elapsed: float) -> list[dict]:
        """The interval's summary, and a record per pattern found (what the playbook's rules count)."""
        iv = self.tracker.take_interval()
        bands, self._bands = self._bands, {}
        rate = iv.upcalls / elapsed if elapsed > 0 else 0.0
        lat = sorted(iv.latencies_us)
        repeated = sorted(((k, n) for k, n in iv.repeated.items() if n >= REPEATS_PER_FLOW), key=lambda kv: -kv[1])
        unanswered = sorted(iv.unanswered.items(), key=lambda kv: -kv[1])
        patterns, out = [], []
        if rate >= self.options.storm_threshold:
            patterns.append({"pattern": "upcall storm", "detail": f"{rate:.0f} upcalls/s"})
            out.append({"type": "megaflow_upcall_storm", "interval_s": round(elapsed, 3), "upcalls": iv.upcalls,
                        "upcalls_per_s": round(rate, 1), "threshold_per_s": self.options.storm_threshold})
        if repeated:
            patterns.append({"pattern": "repeated upcalls for one flow",
                             "detail": f"{len(repeated)} flows kept missing after their megaflow was installed"})
            out += [{"type": "megaflow_repeated_upcalls", "flow": flow_fields(k), "count": n}
                    for k, n in repeated[:TOP_FLOWS]]
        if unanswered:
            n = sum(c for _, c in unanswered)
            patterns.append({"pattern": "unanswered upcalls",
                             "detail": f"{n} upcalls got no megaflow install within {WAIT_S:.0f} s"})
            out.append({"type": "megaflow_unanswered_upcalls", "count": n, "wait_s": WAIT_S,
                        "flows": [{"flow": flow_fields(k), "upcalls": c} for k, c in unanswered[:TOP_FLOWS]]})
        if lat and lat[-1] >= 1000:
            patterns.append({"pattern": "high install latency", "detail": f"max {lat[-1]:.0f} us ({band_of(lat[-1])})"})
        summary = {
            "type": "megaflow_summary", "interval_s": round(elapsed, 3), "upcalls": iv.upcalls,
            "upcalls_per_s": round(rate, 1), "installs": iv.installs, "deletes": iv.deletes,
            "install_latency_us": {"count": len(lat), "p50": lat[len(lat) // 2] if lat else None,
                                   "max": lat[-1] if lat else None},
            "bands": bands,
            "repeated_upcall_flows": [{"flow": flow_fields(k), "upcalls": n} for k, n in repeated],
            "executed_without_install": iv.executed_only,
            "unanswered_upcalls": sum(iv.unanswered.values()),
            "waiting_upcalls": self.tracker.waiting,
            "patterns": patterns, "lost_events": self.events_lost - self._lost_at_summary,
        }
        return [summary] + out

    def wait(self, timeout: float) -> None:
        self.poll_events(timeout)
        self._process_batch()

    def read(self) -> list[dict]:
        self._process_batch()
        self.tracker.expire(time.monotonic_ns())  # bpf_ktime_get_ns() is CLOCK_MONOTONIC too
        out = self.take_events()
        now = time.monotonic()
        if now - self._last_summary >= self.options.interval:
            out += self._summary(now - self._last_summary)
            self._last_summary = now
            self._lost_at_summary = self.events_lost
        return out

    def format_text(self, r: dict) -> str:
        t = r["type"]
        if t == "lost_events":
            return self.lost_text(r)
        if t == "megaflow_upcall":
            f = r["flow"]
            again = "  (again after its install)" if r["after_install"] else ""
            return f"[{r['time'][11:26]}] UPCALL  {f['src_ip']} -> {f['dst_ip']} {f['protocol']} {r['comm']}({r['tid']}){again}"
        if t in ("megaflow_install", "megaflow_delete"):
            lat = f"  install latency {r['install_latency_us']} us [{r['band']}]" if "install_latency_us" in r else ""
            return (f"[{r['time'][11:26]}] {'NEW' if t.endswith('install') else 'DEL'}     match {r['match']} "
                    f"actions {','.join(r['actions'] or [])} by {r['comm']}({r['tid']}){lat}")
        if t == "megaflow_summary":
            pats = "; ".join(f"{p['pattern']}: {p['detail']}" for p in r["patterns"]) or "no abnormal pattern"
            return (f"=== {r['interval_s']:.0f}s: {r['upcalls']} upcalls ({r['upcalls_per_s']}/s), {r['installs']} installs, "
                    f"{r['deletes']} deletes; install latency p50 {r['install_latency_us']['p50']} us, "
                    f"max {r['install_latency_us']['max']} us; {pats}")
        if t == "megaflow_upcall_storm":
            return f"    upcall storm: {r['upcalls_per_s']}/s (threshold {r['threshold_per_s']}/s)"
        if t == "megaflow_repeated_upcalls":
            return f"    repeated upcalls: {r['count']} after the install of {_flow_text(r['flow'])}"
        if t == "megaflow_unanswered_upcalls":
            flows = "; ".join(f"{_flow_text(f['flow'])} x{f['upcalls']}" for f in r["flows"])
            return f"    {r['count']} upcalls without an install within {r['wait_s']:.0f} s: {flows}"
        return str(r)


def _flow_text(fields: dict) -> str:
    ports = f":{fields['l4_src_port']} -> " if fields.get("l4_src_port") is not None else " -> "
    if "ip_src" in fields:
        dport = f":{fields['l4_dst_port']}" if fields.get("l4_dst_port") is not None else ""
        return f"{fields['ip_src']}{ports}{fields['ip_dst']}{dport} (proto {fields.get('ip_proto')})"
    return f"{fields.get('eth_src')} -> {fields.get('eth_dst')} (ethertype {fields.get('eth_type')})"
