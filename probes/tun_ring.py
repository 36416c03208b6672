"""tun-ring-monitor (guide: tun_ring_monitor): a tap's drops by queue and reason, its
rings' fill and who reads them.

Drops are exact: the drop hook (as drop-summary's), filtered in the kernel to the tap.
The ring's fill needs a kprobe on tun_net_xmit and the tun module's struct layout
from BTF; without them the record says why and gives the ring's size (the tap's
txqueuelen) alone.  docs/output-virt.md has the record.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from . import drop_hook
from .base import ATTACH, DST_IP, DST_PORT, DURATION, L4_PROTOCOL, SRC_IP, SRC_PORT, Flag, Unavailable, interval_flag
from .runtime.attach import FunctionHooks
from .runtime.counters import Deltas
from .runtime.loader import load
from .runtime.offsets import OffsetsUnavailable, module_offset
from .runtime.params import CDefines, ParamError
from .runtime.vmproc import tap_readers

RING_FIELDS = ["SKB_QUEUE_MAPPING", "NETDEV_SIZE", "TUN_NUMQUEUES", "TUN_TFILES", "TFILE_TX_RING",
               "PTR_RING_PRODUCER", "PTR_RING_CONSUMER_HEAD", "PTR_RING_SIZE", "PTR_RING_QUEUE"]
XMIT_FN = "tun_net_xmit"


def is_tap(device: str) -> bool:
    """tun and tap devices, and only they, have tun_flags in sysfs."""
    return (Path("/sys/class/net") / device / "tun_flags").exists()


class TunRingMonitor(drop_hook.DropHookProbe):
    name = "tun-ring-monitor"
    title = "TUN/tap ring monitor"
    tier = 1
    cost = "low: a map update per packet dropped on the tap, and one per packet sent to it (kprobe)"
    description = ("Drops on a tap by queue and reason (ring full, no reader, filters), its rings' "
                   "fill and who reads them.")
    flags = (
        Flag("device", "interface", "the tap (vnet) device", short="n", required=True, label="Interface"),
        SRC_IP, DST_IP, SRC_PORT, DST_PORT, L4_PROTOCOL,
        interval_flag(10.0),
        DURATION,
        ATTACH,
    )

    def __init__(self, caps=None, **raw):
        super().__init__(caps, **raw)
        device = self.options.raw.get("device")
        if device and not is_tap(str(device)):
            raise ParamError("--device", device, "a tun/tap device (this one is not)")

    def ring_unavailable(self) -> str | None:
        """Why the ring's fill cannot be watched here, or None."""
        if not self.caps.kprobes:
            return "needs kprobes (CONFIG_KPROBES) on tun_net_xmit"
        if not self.caps.function(XMIT_FN):
            return f"{XMIT_FN} is not in /proc/kallsyms (is the tun module loaded?)"
        try:
            for name in RING_FIELDS:
                if name.startswith(("TUN_", "TFILE_")):
                    module_offset(name)
        except OffsetsUnavailable as e:
            return str(e)
        return None

    def load(self):
        hook = drop_hook.choose(self.caps, self.options.attach, ovs_actions=False)
        if isinstance(hook, str):
            raise Unavailable(f"{self.name}: {hook}")
        self.hook = hook
        self.no_ring = self.ring_unavailable()
        d = CDefines()
        hook.defines(d)
        drop_hook.filter_defines(d, self.options)
        d.set("NS_RING", self.no_ring is None)
        fields = drop_hook.FIELDS + ["SKB_QUEUE_MAPPING"]
        if self.no_ring is None:
            fields += RING_FIELDS
        bpf = load("tun_ring.bpf.c", d, sorted(set(fields)))
        hook.attach(bpf)
        self.ring_hook = None
        if self.no_ring is None:  # --attach kprobe: kprobes everywhere; else a trampoline where taken
            hooks = FunctionHooks(bpf, "kprobe" if self.options.attach == "kprobe" else "auto")
            self.ring_hook = hooks.entry(XMIT_FN, "ns_tun_net_xmit")
            self.ring_fentry_refused = hooks.fell_back.get(XMIT_FN)
        self._seen = Deltas()
        self._last_read = time.monotonic()
        return bpf

    def describe_attach(self) -> str:
        if self.no_ring is not None:
            ring = f" (ring fill: {self.no_ring})"
        else:
            refused = f"; no trampoline: {self.ring_fentry_refused}" if self.ring_fentry_refused else ""
            ring = f" + {self.ring_hook} {XMIT_FN} (ring fill{refused})"
        return self.hook.describe() + ring


    def _txqueuelen(self) -> int | None:
        try:
            return int((Path("/sys/class/net") / self.options.raw["device"] / "tx_queue_len").read_text())
        except (OSError, ValueError):
            return None

    def read(self) -> list[dict]:
        """One tun_ring record per queue that dropped or was sent packets since the last read."""
        now = time.monotonic()
        interval, self._last_read = now - self._last_read, now
        device = self.options.raw["device"]
        queues: dict[int, dict] = {}

        def queue(q: int) -> dict:
            return queues.setdefault(q, {"drops": 0, "reasons": {}, "xmits": None, "found_full": None,
                                         "max_pending": None, "size": None})

        for key, per_cpu in self.bpf[b"drops"].items():
            delta = self._seen.of(("drop", key.queue, key.reason), sum(per_cpu))
            if delta > 0:
                entry = queue(key.queue)
                reason = self.hook.reason_name(key.reason, self.caps.drop_reasons) or "NOT_SPECIFIED"
                entry["drops"] += delta
                entry["reasons"][reason] = entry["reasons"].get(reason, 0) + delta
        if self.no_ring is None:
            # The next interval starts before this one is read: every packet counted below has
            # this epoch or the next (one just now may count in both maxima, never in neither).
            epochs = self.bpf[b"ring_epoch"]
            epoch = epochs[0].value
            epochs[0] = epochs.Leaf(epoch + 1)
            for key, per_cpu in self.bpf[b"rings"].items():
                q = key.value
                xmits = self._seen.of(("xmit", q), sum(v.xmits for v in per_cpu))
                full = self._seen.of(("full", q), sum(v.found_full for v in per_cpu))
                if xmits > 0:
                    maxima = [v.max_pending for v in per_cpu if v.epoch >= epoch]
                    queue(q).update(xmits=xmits, found_full=full, size=max(v.size for v in per_cpu),
                                    max_pending=max(maxima, default=None))
        readers = tap_readers(device)
        txqueuelen = self._txqueuelen()
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        records = []
        for q in sorted(queues):
            e = queues[q]
            size = e["size"] or txqueuelen
            fill = (round(100.0 * e["max_pending"] / size, 1) if e["max_pending"] is not None and size else None)
            records.append({
                "type": "tun_ring", "time": stamp, "interval_s": round(interval, 3),
                "device": device, "queue": q, "drops": e["drops"], "reasons": e["reasons"],
                "full_ring_drops": e["reasons"].get("FULL_RING", 0),
                "no_reader_drops": e["reasons"].get("DEV_READY", 0),
                "size": size, "xmits": e["xmits"], "found_full": e["found_full"],
                "max_pending": e["max_pending"], "fill_pct": fill,
                "ring_watched": self.no_ring is None, "ring_unavailable": self.no_ring, "ring_hook": self.ring_hook,
                "readers": readers,
            })
        return records

    def format_text(self, record: dict) -> str:
        reasons = ", ".join(f"{n} {c}" for n, c in sorted(record["reasons"].items(), key=lambda i: -i[1])) or "-"
        if record["ring_watched"]:
            ring = (f"ring {record['size']} slots, fullest {record['fill_pct']}%, "
                    f"{record['found_full']} of {record['xmits']} packets found it full")
        else:
            ring = f"ring {record['size']} slots (fill not watched: {record['ring_unavailable']})"
        readers = "; ".join(f"{r['comm']} ({r['pid']})" + (f" via vhost {r['vhost_tids']}" if r["vhost_tids"] else "")
                            for r in record["readers"]) or "nobody (no process holds the tap open)"
        return (f"[{record['time']}] {record['device']} queue {record['queue']}: {record['drops']} dropped "
                f"({reasons}); {ring}; read by {readers}")
