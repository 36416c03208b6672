"""drop-summary (guide tool 1): where the kernel drops packets, counted in the kernel."""

from __future__ import annotations

import ctypes as ct
import time
from datetime import datetime

from vocab.flows import flow_text

from . import drop_hook
from .base import ATTACH, DST_IP, DST_PORT, DURATION, L4_PROTOCOL, SRC_IP, SRC_PORT, Flag, interval_flag
from .flows import NsFlow, flow_dict
from .runtime.netns import ns_dict
from .runtime.kernel import kernel_hz, kernel_version
from .runtime.attach import attach_or_unload
from .runtime.counters import Deltas
from .runtime.loader import recursion_misses
from .runtime.params import CDefines
from .runtime.stacks import kernel_stack, ksym

# How the BPF side decides which drops to break down by flow (NS_SAMPLE_MODE in the C).
EVERY_DROP, SAMPLED, GROUPS_ONLY = 0, 1, 2
# drops' stack_id of a group's drops not broken down by flow, where its slot was taken.
GROUP_ONLY = -2

class DropSummary(drop_hook.DropHookProbe):
    name = "drop-summary"
    title = "Drop-stack Summary"
    tier = 1
    cost = "low: in-kernel counting, one map update per dropped packet"
    description = "Counts dropped packets by kernel stack, flow, device and drop reason."
    flags = (
        SRC_IP, DST_IP, SRC_PORT, DST_PORT, L4_PROTOCOL,
        Flag("device", "interface", "only drops whose skb->dev is this interface", short="n", label="Interface"),
        drop_hook.NETNS,
        interval_flag(10.0),
        DURATION,
        Flag("top", "int", "entries shown per report", short="t", default=5, lo=1, hi=1000, label="Entries per report"),
        Flag("group-by", "choice", "aggregate by stack, fivetuple or all", default="all",
             choices=("stack", "fivetuple", "all"), label="Group drops by"),
        Flag("exact-stacks", "bool", "key by full stack id as well as drop location (costlier: unwinds every drop)",
             label="Tell stacks apart"),
        ATTACH,
        drop_hook.NO_OVS_ACTIONS,
    )

    DIRECT_READS = True
    MAX_KEYS = 10240
    EVICT_AT = 0.75  # of MAX_KEYS
    IDLE_READS = 2
    # Under a flood (no flow filter): a CPU breaks down by flow its first DETAIL_PER_SECOND
    # drops of each second, then one in DETAIL_ONE_IN; the rest count by group only
    # (docs/output-drops.md, figures in docs/performance.md).
    DETAIL_PER_SECOND = 1000
    DETAIL_ONE_IN = 64  # a power of two
    GROUP_SLOTS = 256   # per CPU, a power of two

    def load(self):
        bpf = self.load_with_hook("drop_summary.bpf.c", drop_hook.FIELDS)
        if self._dev_gen(self.hook):
            attach_or_unload(bpf, "raw tracepoint notifier_run",
                             lambda: bpf.attach_raw_tracepoint(tp=b"notifier_run", fn_name=b"ns_raw_notifier"))
        self._seen = Deltas()  # flow keys
        self._group_seen = Deltas()  # group-only slots
        self._idle: dict[bytes, int] = {}  # key -> reads in a row without new drops
        self._popped: list[bytes] = []
        self._evicted = 0
        self._can_pop = True
        self._lost_seen = Deltas()  # table overflow, nested runs the kernel skipped
        self._last_read = time.monotonic()
        return bpf

    def sample_mode(self) -> int:
        """Every drop is parsed where a flow filter decides what counts or the stack is part of
        the key; --group-by stack needs no flow; else the flow breakdown is sampled in a flood."""
        o = self.options
        if o.exact_stacks or any((o.src_ip, o.dst_ip, o.src_port, o.dst_port, o.values["l4_protocol"])):
            return EVERY_DROP
        return GROUPS_ONLY if o.group_by == "stack" else SAMPLED

    def _dev_gen(self, hook: drop_hook.DropHook) -> bool:
        """Can group slots trust a device's address between notifier runs (bpf.c)?  Not needed
        where the program reads the device's identity itself (direct reads)."""
        return (self.sample_mode() != EVERY_DROP and not hook.direct_reads and self.caps.raw_tracepoints
                and bool(self.caps.tracefs) and self.caps.tracepoint("notifier", "notifier_run"))

    def c_defines(self, hook: drop_hook.DropHook) -> CDefines:
        o = self.options
        d = CDefines()
        hook.defines(d)
        drop_hook.filter_defines(d, o)
        d.set("NS_GROUP_STACK", o.group_by in ("stack", "all"))
        d.set("NS_GROUP_FLOW", o.group_by in ("fivetuple", "all"))
        d.set("NS_EXACT_STACKS", o.exact_stacks)
        d.set("NS_STACK_ENTRIES", 4096).set("NS_MAX_KEYS", self.MAX_KEYS)
        d.set("NS_SAMPLE_MODE", self.sample_mode()).set("NS_GROUP_SLOTS", self.GROUP_SLOTS)
        d.set("NS_GROUP_ONLY", GROUP_ONLY).set("NS_DEV_GEN", self._dev_gen(hook))
        d.set("NS_DETAIL_PER_SECOND", self.DETAIL_PER_SECOND).set("NS_DETAIL_ONE_IN", self.DETAIL_ONE_IN)
        # The sampling window: jiffies cost nothing to read (bpf_jiffies64, 5.5+), the
        # clock a clock read each time; older kernels pay that.
        d.set("NS_HZ", kernel_hz()).set("NS_HAVE_JIFFIES64", kernel_version(self.caps.release) >= (5, 5))
        return d

    @staticmethod
    def _fold(key, per_cpu) -> tuple[object, int, int, bytes, int] | None:
        """(key, count summed over CPUs, a stack id, device name, netns inode), None for an
        empty key."""
        seen = [v for v in per_cpu if v.count]
        if not seen:
            return None
        stack_id = next((v.stack_id1 - 1 for v in seen if v.stack_id1 > 0), -1)
        dev = next((v.dev for v in seen if v.dev), b"")
        netns = next((v.netns for v in seen if v.netns), 0)
        return key, sum(v.count for v in seen), stack_id, dev, netns

    def _pop(self, key):
        """Remove a key and return its per-CPU values as they were at that instant (so no
        count is lost), or None where the kernel cannot (lookup-and-delete on hash maps: 5.14+)."""
        from bcc.libbcc import lib

        table = self.bpf[b"drops"]
        leaf = table.Leaf()
        if lib.bpf_lookup_and_delete(table.map_fd, ct.byref(key), ct.byref(leaf)) < 0:
            return None
        return leaf

    def _slots(self) -> dict[bytes, tuple[object, int, int, bytes, int]]:
        """Drops counted by group only (location, reason, device) in the per-CPU slots (a slot
        keeps its group for the run), cumulative, as _fold gives them."""
        if self.sample_mode() == EVERY_DROP:
            return {}
        per_key: dict[bytes, tuple[object, list]] = {}
        for cpus in self.bpf[b"group_slots"].values():
            for slot in cpus:
                if slot.val.count:
                    per_key.setdefault(bytes(slot.key), (slot.key, []))[1].append(slot.val)
        out = {}
        for raw, (key, vals) in per_key.items():
            folded = self._fold(key, vals)
            if folded:
                out[raw] = folded
        return out

    def _totals(self) -> dict[bytes, tuple[object, int, int, bytes, int]]:
        """key bytes -> folded values.  Counts are cumulative (deltas are taken here), so keys
        would stay forever: once the table is EVICT_AT full, keys idle for IDLE_READS reads
        are popped, leaving room for new flows (a port scan fills it with one-packet flows)."""
        out, popped = {}, []
        items = list(self.bpf[b"drops"].items())
        crowded = len(items) >= self.EVICT_AT * self.MAX_KEYS and self._can_pop
        for key, per_cpu in items:
            raw = bytes(key)
            folded = self._fold(key, per_cpu)
            unchanged = folded is not None and folded[1] == self._seen.last(raw)
            if crowded and unchanged and self._idle.get(raw, 0) + 1 >= self.IDLE_READS:
                final = self._pop(key)
                if final is None:
                    self._can_pop = crowded = False
                else:  # a drop that came in since the snapshot is in the final values
                    folded = self._fold(key, final)
                    popped.append(raw)
            if folded:
                out[raw] = folded
        self._evicted += len(popped)
        self._popped = popped
        return out

    def _entry(self, key, count: int, stack_id: int, dev: bytes, netns: int, flow: dict | None,
               sampled: bool) -> dict:
        stack = kernel_stack(self.bpf[b"stacks"], stack_id)
        location = ksym(key.location) if key.location else None
        return {
            "count": count,
            "device": dev.decode("utf-8", "replace") or None,
            "ifindex": key.ifindex or None,
            "netns": netns or None,
            "namespace": ns_dict(netns),
            "reason": self.hook.reason_name(key.reason, self.caps.drop_reasons),
            "reason_code": key.reason if self.hook.has_reason or self.hook.ovs_action_range else None,
            "location": drop_hook.drop_location(location, stack),
            "stack_id": stack_id if stack_id >= 0 else None,
            "stack": stack,
            # Keyed by drop location, one entry can come from several stacks: this is the
            # first one seen (--exact-stacks keys by stack, at a cost).
            "stack_sample": bool(stack) and not self.options.exact_stacks,
            "flow": flow,
            "sampled": sampled,
        }

    @staticmethod
    def _deltas(totals: dict, seen: Deltas, idle: dict[bytes, int] | None = None) -> list[tuple]:
        """The keys with new drops since the last read, with those drops as their count."""
        out = []
        for raw, (key, total, stack_id, dev, netns) in totals.items():
            delta = seen.of(raw, total)
            if idle is not None:
                idle[raw] = 0 if delta > 0 else idle.get(raw, 0) + 1
            if delta > 0:
                out.append((key, delta, stack_id, dev, netns))
        return out

    @staticmethod
    def _group_of(key) -> tuple:
        return key.location, key.net, key.ifindex, key.reason

    def read(self) -> list[dict]:
        """One drop_summary record covering the time since the previous read.  Each drop was
        counted once, either under its flow or (sampled out of the flow breakdown) under its
        group only: the entries add up to the exact total."""
        now = time.monotonic()
        interval = now - self._last_read
        self._last_read = now
        in_table = self._deltas(self._totals(), self._seen, self._idle)
        for raw in self._popped:  # counted above with their final values: forget them
            self._seen.forget(raw)
            self._idle.pop(raw, None)
        detailed = [d for d in in_table if d[0].stack_id != GROUP_ONLY]
        groups: dict[tuple, list] = {}  # group -> [key, count, stack_id, dev, netns]
        for key, count, stack_id, dev, netns in self._deltas(self._slots(), self._group_seen) + \
                [d for d in in_table if d[0].stack_id == GROUP_ONLY]:
            g = groups.setdefault(self._group_of(key), [key, 0, stack_id, dev, netns])
            g[1] += count
        mode = self.sample_mode()
        sampled_groups = set(groups) if mode == SAMPLED else set()
        entries, merged = [], {}
        for key, count, stack_id, dev, netns in detailed:
            e = self._entry(key, count, stack_id, dev, netns, flow_dict(key.flow),
                            self._group_of(key) in sampled_groups)
            entries.append(e)
            merged[self._group_of(key)] = e
        broken_down = sum(e["count"] for e in entries if e["sampled"])
        for group, (key, count, stack_id, dev, netns) in groups.items():
            if mode == GROUPS_ONLY and group in merged:  # the same key (OVS drops)
                merged[group]["count"] += count
                continue
            flow = flow_dict(NsFlow()) if mode == GROUPS_ONLY else None
            entries.append(self._entry(key, count, stack_id, dev, netns, flow, mode == SAMPLED))
        entries.sort(key=lambda e: -e["count"])
        lost = self._lost_seen.of("overflow", sum(self.bpf[b"overflow"][0]))
        nested = self._lost_seen.of("nested", recursion_misses(self.bpf, but=(b"ns_raw_notifier",)))
        not_broken_down = sum(g[1] for g in groups.values()) if mode == SAMPLED else 0
        return [{
            "type": "drop_summary",
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
            "interval_s": round(interval, 3),
            "total": sum(e["count"] for e in entries) + lost + nested,
            "uncounted_table_full": lost,
            "uncounted_nested": nested,
            "evicted_idle_keys": self._evicted,  # so far; their counts were all reported
            "attach": self.hook.describe(),
            "group_by": self.options.group_by,
            "sampling": {
                "detail_per_cpu_second": self.DETAIL_PER_SECOND,
                "then_one_in": self.DETAIL_ONE_IN,
                "broken_down": broken_down,
                "not_broken_down": not_broken_down,
            } if not_broken_down else None,
            "entries": entries,
        }]

    def format_text(self, record: dict) -> str:
        top = self.options.top
        entries = record["entries"]
        lines = [f"[{record['time']}] === Drop Stack Statistics (Interval: {record['interval_s']:.1f}s) ===", ""]
        if not entries:
            lines.append("No drops matched.")
        else:
            lines.append(f"Found {len(entries)} unique stack+flow combinations, showing top {min(top, len(entries))}:")
        for i, e in enumerate(entries[:top], 1):
            reason = f" [reason: {e['reason']}]" if e["reason"] else ""
            sid = e["stack_id"] if e["stack_id"] is not None else "-"
            lines.append("")
            lines.append(f"#{i} Count: {e['count']:,} calls [device: {e['device'] or '?'}{' in ' + e['namespace']['label'] if e.get('namespace') else ''}] [stack_id: {sid}]{reason}")
            lines.append(f"   Flow: {flow_text(e['flow'])}")
            lines.append(f"   Location: {e['location'] or '?'}")
            if e["stack"]:
                lines.append("Stack trace (the first one seen at this location):" if e.get("stack_sample")
                             else "Stack trace:")
                lines.extend(f"  {frame}" for frame in e["stack"])
        sampling = record.get("sampling")
        if sampling:
            lines.append(f"\nFlood: {sampling['not_broken_down']:,} drops counted by location, reason and device only; "
                         f"flows from a sample of {sampling['broken_down']:,} (each CPU's first "
                         f"{sampling['detail_per_cpu_second']:,} a second, then 1 in {sampling['then_one_in']})")
        if record.get("uncounted_table_full"):
            lines.append(f"\n{record['uncounted_table_full']} drops not attributed: key table full")
        if record.get("uncounted_nested"):
            lines.append(f"\n{record['uncounted_nested']} drops not attributed: they came while the probe's "
                         "program ran on their CPU, and the kernel does not run it nested")
        lines.append(f"\nTotal drops in {record['interval_s']:.0f}s: {record['total']:,} packets")
        return "\n".join(lines)

