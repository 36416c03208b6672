"""drop-details (guide tool 2, `eth_drop`): every dropped packet, with its headers and stack."""

from __future__ import annotations

import ctypes as ct

from vocab.stacks import function_of

from . import drop_hook
from .base import ATTACH, DST_IP, DST_PORT, DURATION, L4_PROTOCOL, SRC_IP, SRC_PORT, Flag
from .events import EventStream
from .flows import NsPkt, flow_dict
from .runtime.clock import iso
from .runtime.layout import CMirror
from .runtime.netns import ns_dict
from .runtime.params import CDefines
from .runtime.stacks import kernel_stack, ksym

FIELDS = drop_hook.FIELDS + ["SKB_LEN"]

ETH_TYPES = {"arp": 0x0806, "rarp": 0x8035, "ipv4": 0x0800, "ipv6": 0x86DD, "lldp": 0x88CC, "all": 0}
ETH_TYPE_NAMES = {v: k.upper() if k != "ipv4" else "IPv4" for k, v in ETH_TYPES.items() if v}
ETH_TYPE_NAMES[0x86DD] = "IPv6"

# The guide's "normal free" patterns: a stack holding every function of one
# pattern is a free after normal processing, not a drop.  They are for kernels
# that give no drop reason (4.19) and for the reason NOT_SPECIFIED: any other
# reason is the kernel itself saying "dropped" (normal frees go to consume_skb
# there), e.g. ICMP_CSUM in icmp_rcv, which the "icmp-handled" pattern would hide.
UNJUDGED_REASONS = (None, "NOT_SPECIFIED")
NORMAL_PATTERNS = {
    "tcp-read-done": ("skb_release_data", "__kfree_skb", "tcp_recvmsg"),
    "socket-close": ("sk_stream_kill_queues",),
    "icmp-handled": ("icmp_rcv",),
}

TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"),
                  (0x40, "ECE"), (0x80, "CWR"))


def normal_pattern(reason: str | None, functions: set[str]) -> str | None:
    """The normal-free pattern a free with this drop reason and these stack functions
    matches, or None: a drop to show."""
    if reason not in UNJUDGED_REASONS:
        return None
    for name, needed in NORMAL_PATTERNS.items():
        if all(f in functions for f in needed):
            return name
    return None


class DropEvent(CMirror):
    """Mirror of struct drop_event in drop_details.bpf.c."""

    _c_struct_ = "drop_event"
    _fields_ = [
        ("ts_ns", ct.c_uint64), ("location", ct.c_uint64), ("pid", ct.c_uint32), ("tgid", ct.c_uint32),
        ("cpu", ct.c_uint32), ("reason", ct.c_uint32), ("stack_id", ct.c_int32), ("ifindex", ct.c_uint32),
        ("netns", ct.c_uint32), ("skb_len", ct.c_uint32), ("comm", ct.c_char * 16), ("dev", ct.c_char * 16),
        ("pkt", NsPkt),
    ]


def _mac(raw) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


class DropDetails(EventStream, drop_hook.DropHookProbe):
    name = "drop-details"
    title = "Drop Details (eth_drop)"
    tier = 2
    cost = "medium: one event per dropped packet to user space; filter tightly"
    description = "Reports every dropped packet: headers, device, process, CPU, reason and kernel stack."
    streaming = True
    flags = (
        Flag("type", "choice", "EtherType: arp, rarp, ipv4, ipv6, lldp or all", default="all",
             choices=tuple(ETH_TYPES), label="EtherType"),
        L4_PROTOCOL, SRC_IP, DST_IP, SRC_PORT, DST_PORT,
        Flag("vlan-id", "vlan", "only packets with this VLAN id", label="VLAN"),
        Flag("interface", "interface", "only drops whose skb->dev is this interface", label="Interface"),
        drop_hook.NETNS,
        Flag("verbose", "bool", "also print IP id/TTL/length and the skb length", label="IP id, TTL, lengths"),
        Flag("no-stack-trace", "bool", "do not collect stacks (cuts the cost by about a third)",
             label="Skip kernel stacks"),
        Flag("disable-normal-filter", "bool", "also show frees that the guide calls normal (TCP read done, socket "
             "close, ICMP handled; judged by stack, for drops without a specific kernel drop reason)",
             label="Show normal frees too"),
        DURATION,
        ATTACH,
        drop_hook.NO_OVS_ACTIONS,
    )

    def load(self):
        bpf = self.load_with_hook("drop_details.bpf.c", FIELDS)
        self.hidden_normal: dict[str, int] = {}  # pattern -> frees hidden since the last read
        self.open_events(bpf, lambda data, _size: self._handle(ct.cast(data, ct.POINTER(DropEvent)).contents))
        return bpf

    def c_defines(self, hook: drop_hook.DropHook) -> CDefines:
        o = self.options
        d = CDefines()
        hook.defines(d)
        drop_hook.filter_defines(d, o, device_flag="interface")
        d.set("NS_F_ETHTYPE", ETH_TYPES[o.type])
        d.set("NS_F_VLAN", o.vlan_id)
        d.set("NS_WANT_STACK", not o.no_stack_trace)
        d.set("NS_STACK_ENTRIES", 4096)
        return d

    def _handle(self, e: DropEvent) -> None:
        stack = kernel_stack(self.bpf[b"stacks"], e.stack_id)
        location = drop_hook.drop_location(ksym(e.location) if e.location else None, stack)
        reason = self.hook.reason_name(e.reason, self.caps.drop_reasons)
        if not self.options.disable_normal_filter:
            functions = {function_of(f) for f in stack} | ({function_of(location)} if location else set())
            pattern = normal_pattern(reason, functions)
            if pattern:
                self.hidden_normal[pattern] = self.hidden_normal.get(pattern, 0) + 1
                return
        self._pending.append(self._record(e, stack, location, reason))

    def _record(self, e, stack: list[str], location: str | None, reason: str | None) -> dict:
        p = e.pkt
        flow = flow_dict(p.flow)
        rec = {
            "type": "drop",
            "time": iso(e.ts_ns),
            "ktime_ns": e.ts_ns,
            "pid": e.pid,
            "tgid": e.tgid,
            "comm": e.comm.decode("utf-8", "replace"),
            "cpu": e.cpu,
            "device": e.dev.decode("utf-8", "replace") or None,
            "ifindex": e.ifindex or None,
            "netns": e.netns or None,
            "namespace": ns_dict(e.netns),
            "reason": reason,
            "location": location,
            "skb_len": e.skb_len,
            "eth": {  # the type may come from skb->protocol alone: no MACs were read then
                "src": _mac(p.eth_src) if any(p.eth_src) else None,
                "dst": _mac(p.eth_dst) if any(p.eth_dst) else None,
                "type": p.eth_type or None,
                "type_name": ETH_TYPE_NAMES.get(p.eth_type),
            },
            "vlan": p.vlan_id if p.has_vlan else None,
            "flow": flow,
            "ip": {"id": p.ip_id, "ttl": p.ttl, "len": p.ip_len} if p.has_ip else None,
            "tcp": None,
            "icmp": None,
            "payload_len": p.payload_len if p.has_ip else None,
            "stack": stack,
        }
        if flow["protocol"] == "tcp":
            rec["tcp"] = {"seq": p.tcp_seq, "flags": [n for bit, n in TCP_FLAG_NAMES if p.tcp_flags & bit]}
        elif flow["protocol"] == "icmp":
            rec["icmp"] = {"type": p.icmp_type, "code": p.icmp_code, "id": p.icmp_id, "seq": p.icmp_seq}
        return rec

    def wait(self, timeout: float) -> None:
        self.poll_events(timeout)

    def read(self) -> list[dict]:
        out = self.take_events()
        if self.hidden_normal:
            # Said in the stream, so that nobody takes "no event" for "no free".
            out.append({"type": "normal_frees_hidden", "count": sum(self.hidden_normal.values()),
                        "by_pattern": self.hidden_normal})
            self.hidden_normal = {}
        return out

    def format_text(self, r: dict) -> str:
        if r["type"] == "lost_events":
            return self.lost_text(r)
        if r["type"] == "normal_frees_hidden":
            patterns = ", ".join(f"{n} {name}" for name, n in r["by_pattern"].items())
            return f"({r['count']} normal frees not shown: {patterns}; --disable-normal-filter shows them)"
        lines = [f"[{r['time'][11:26]}] PID: {r['pid']} TGID: {r['tgid']} COMM: {r['comm']} CPU: {r['cpu']}"]
        eth = r["eth"]
        if eth["src"]:
            lines += ["Ethernet Header:", f"  Source MAC: {eth['src']}", f"  Dest MAC:   {eth['dst']}",
                      f"  EtherType:  {eth['type']:#06x} ({eth['type_name'] or '?'})"]
        if r["vlan"] is not None:
            lines.append(f"VLAN: {r['vlan']}")
        flow = r["flow"]
        if flow["protocol"]:
            lines.append(f"{flow['protocol'].upper()} PACKET")
            lines.append(f"  Source IP:      {flow['src_ip']}")
            lines.append(f"  Dest IP:        {flow['dst_ip']}")
            if flow["src_port"] is not None:
                lines.append(f"  Source Port:    {flow['src_port']}")
                lines.append(f"  Dest Port:      {flow['dst_port']}")
            if r["tcp"]:
                lines.append(f"  TCP Sequence:   {r['tcp']['seq']}")
                lines.append(f"  TCP Flags:      [{','.join(r['tcp']['flags'])}]")
            if r["icmp"]:
                i = r["icmp"]
                lines.append(f"  ICMP:           type {i['type']} code {i['code']} id {i['id']} seq {i['seq']}")
            lines.append(f"  Data Length:    {r['payload_len']} bytes")
            if self.options.verbose and r["ip"]:
                lines.append(f"  IP id/TTL/len:  {r['ip']['id']} / {r['ip']['ttl']} / {r['ip']['len']}; skb len {r['skb_len']}")
        ns = f" (namespace {r['namespace']['label']})" if r.get("namespace") else ""
        lines.append(f"Interface: {r['device'] or '?'}{ns}" + (f"  Reason: {r['reason']}" if r["reason"] else ""))
        lines.append(f"Location: {r['location'] or '?'}")
        if r["stack"]:
            lines.append("Stack trace:")
            lines += [f"  {f}" for f in r["stack"]]
        return "\n".join(lines) + "\n"

