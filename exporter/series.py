"""What each tier-1 probe's records add up to, kept cumulative in the exporter.

The probes' read() returns what happened since the previous read; these classes add
those deltas up for ever (a scrape never clears anything), so every counter and
histogram bucket only grows while the exporter runs.  One class per probe, chosen
by name in SERIES; a probe without one runs nowhere (it shows as down, and why).
"""

from __future__ import annotations

from vocab.hist import slot_of
from vocab.stacks import function_of

from .families import Families

OTHER = "other"


class ProbeSeries:
    """Base: records in, samples out.  ``lost`` counts what the probe could not attribute."""

    def __init__(self, probe, max_series: int) -> None:
        self.probe = probe
        self.max_series = max_series
        self.lost = 0

    @staticmethod
    def instance_key(raw: dict) -> tuple:
        """What tells two instances' series apart (their labels): none by default, so a
        probe whose series carry no instance label runs once."""
        return ()

    def add(self, records: list[dict]) -> None:
        raise NotImplementedError

    def emit(self, fams: Families) -> None:
        raise NotImplementedError


def _add_slots(into: dict[int, int], buckets: list[dict]) -> None:
    for b in buckets:
        slot = slot_of(b["low"])
        into[slot] = into.get(slot, 0) + int(b["count"])


class BoundedCounters:
    """label tuple -> count, at most ``limit`` label sets; past it, new label sets are
    counted in one set whose every label is ``other`` (a hard bound of limit + 1 series),
    and how many distinct label sets were folded so is counted too (remembered up to
    FOLDED_MEMORY of them; past that, the count is a lower bound)."""

    FOLDED_MEMORY = 65536

    def __init__(self, labels: tuple[str, ...], limit: int) -> None:
        self.labels = labels
        self.limit = limit
        self.counts: dict[tuple[str, ...], int] = {}
        self._folded: set[int] = set()

    def admit(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """``key``, or the all-``other`` key once the bound is reached (a new key is counted from 0)."""
        if key not in self.counts and len(self.counts) >= self.limit:
            if len(self._folded) < self.FOLDED_MEMORY:
                self._folded.add(hash(key))
            key = (OTHER,) * len(self.labels)
        self.counts.setdefault(key, 0)
        return key

    def add(self, key: tuple[str, ...], count: int) -> None:
        key = self.admit(key)
        self.counts[key] += count

    @property
    def folded(self) -> int:
        return len(self._folded)

    def samples(self):
        for key, count in self.counts.items():
            yield dict(zip(self.labels, key)), count


def emit_bound(fams: Families, metric: str, bounded: BoundedCounters) -> None:
    """The bound of ``metric``'s label sets, and how many were folded past it."""
    fams.gauge("netsleuth_series_limit", "Most label sets a metric keeps; past it new ones are folded into "
               "one whose labels are all 'other'.", {"metric": metric}, bounded.limit)
    fams.counter("netsleuth_series_folded", "Distinct label sets folded into the 'other' series "
                 "(a lower bound past 65536).", {"metric": metric}, bounded.folded)


class DropSeries(ProbeSeries):
    """drop-summary: netsleuth_drops_total{reason, location, device, netns}."""

    LABELS = ("reason", "location", "device", "netns")
    METRIC = "netsleuth_drops"

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        self.drops = BoundedCounters(self.LABELS, max_series)

    def add(self, records: list[dict]) -> None:
        for r in records:
            if r.get("type") != "drop_summary":
                continue
            self.lost += int(r.get("uncounted_table_full") or 0)
            for e in r["entries"]:
                location = function_of(e["location"]) if e.get("location") else ""
                if location.startswith("0x"):  # no symbol: an address would be a label per address
                    location = "unknown"
                key = (e.get("reason") or "", location, e.get("device") or "", str(e.get("netns") or ""))
                self.drops.add(key, int(e["count"]))

    def emit(self, fams: Families) -> None:
        doc = ("Packets the kernel dropped, by drop reason, the function that dropped them "
               "(no offset), device and network namespace inode.")
        fams.get(self.METRIC, doc, "counter")  # the family exists before the first drop
        for labels, count in self.drops.samples():
            fams.counter(self.METRIC, doc, labels, count)
        emit_bound(fams, self.METRIC + "_total", self.drops)


class UpcallSeries(ProbeSeries):
    """ovs-upcall-summary: netsleuth_ovs_upcall_latency_seconds and the upcall counters."""

    COUNTERS = (("upcalls", "netsleuth_ovs_upcalls", "Upcalls (datapath misses sent to ovs-vswitchd)."),
                ("answered", "netsleuth_ovs_upcalls_answered", "Upcalls ovs-vswitchd answered (timed)."),
                ("executes_without_upcall", "netsleuth_ovs_executes_without_upcall",
                 "Packets ovs-vswitchd executed that match no upcall seen (packet-outs, ...)."))

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        self.slots: dict[int, int] = {}
        self.totals = {field: 0 for field, _, _ in self.COUNTERS}

    def add(self, records: list[dict]) -> None:
        for r in records:
            if r.get("type") != "ovs_upcall_summary":
                continue
            _add_slots(self.slots, r["histogram"]["buckets"])
            for field in self.totals:
                self.totals[field] += int(r.get(field) or 0)

    def emit(self, fams: Families) -> None:
        fams.log2_histogram("netsleuth_ovs_upcall_latency_seconds",
                            "Upcall latency: datapath miss to ovs-vswitchd's answer.", {}, self.slots)
        for field, name, doc in self.COUNTERS:
            fams.counter(name, doc, {}, self.totals[field])


class StageSeries(ProbeSeries):
    """system/vm-latency-summary: netsleuth_stage_latency_seconds{path, direction, device, stage}
    (stage: FROM->TO between two stages a packet passed, or TOTAL; at most 8 stages)."""

    @staticmethod
    def instance_key(raw: dict) -> tuple:
        return str(raw.get("direction")), str(raw.get("vm_interface") or raw.get("phy_interface") or "")

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        direction, device = self.instance_key(probe.options.raw)
        self.labels = {"path": probe.family, "direction": direction, "device": device}
        self.stages: dict[str, dict[int, int]] = {}

    def add(self, records: list[dict]) -> None:
        for r in records:
            if not r.get("type", "").endswith("_latency_summary"):
                continue
            self.lost += int(r.get("evicted_unfinished") or 0)
            for p in r["pairs"]:
                stage = "TOTAL" if p["total"] else f"{p['from']}->{p['to']}"
                _add_slots(self.stages.setdefault(stage, {}), p["buckets"])

    def emit(self, fams: Families) -> None:
        name = "netsleuth_stage_latency_seconds"
        doc = "Time between two stages of a packet's path (TOTAL: first to last)."
        fams.get(name, doc, "histogram")
        for stage, slots in sorted(self.stages.items()):
            fams.log2_histogram(name, doc, {**self.labels, "stage": stage}, slots)


class TapRingSeries(ProbeSeries):
    """tun-ring-monitor (one instance per tap): drops by queue and reason, and the ring's
    traffic and fill.  Labels device, queue, reason: bounded by the taps configured, their
    queues and the kernel's drop reasons."""

    COUNTERS = (("xmits", "netsleuth_tap_ring_packets", "Packets given to a tap queue's ring (tun_net_xmit)."),
                ("found_full", "netsleuth_tap_ring_found_full", "Packets that found the tap queue's ring full."))

    @staticmethod
    def instance_key(raw: dict) -> tuple:
        return (str(raw.get("device")),)

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        self.drops: dict[tuple[str, str, str], int] = {}
        self.counts: dict[tuple[str, str, str], int] = {}
        self.fill: dict[tuple[str, str], float] = {}  # the last read's fullest ring, 0-1
        self.size: dict[tuple[str, str], int] = {}

    def add(self, records: list[dict]) -> None:
        self.fill = {}  # a maximum over the interval since the previous read, not a running one
        for r in records:
            if r.get("type") != "tun_ring":
                continue
            tap = (str(r["device"]), str(r["queue"]))
            for reason, count in r["reasons"].items():
                self.drops[tap + (reason,)] = self.drops.get(tap + (reason,), 0) + int(count)
            for field, _, _ in self.COUNTERS:
                if r.get(field) is not None:
                    self.counts[tap + (field,)] = self.counts.get(tap + (field,), 0) + int(r[field])
            if r.get("fill_pct") is not None:
                self.fill[tap] = r["fill_pct"] / 100
            if r.get("size"):
                self.size[tap] = int(r["size"])

    def emit(self, fams: Families) -> None:
        doc = "Packets dropped on a tap, by queue and drop reason (FULL_RING: the ring was full; DEV_READY: no reader)."
        fams.get("netsleuth_tap_drops", doc, "counter")
        for (device, queue, reason), count in sorted(self.drops.items()):
            fams.counter("netsleuth_tap_drops", doc, {"device": device, "queue": queue, "reason": reason}, count)
        for field, name, fdoc in self.COUNTERS:
            for (device, queue, f), count in sorted(self.counts.items()):
                if f == field:
                    fams.counter(name, fdoc, {"device": device, "queue": queue}, count)
        for (device, queue), ratio in sorted(self.fill.items()):
            fams.gauge("netsleuth_tap_ring_fill_ratio", "The fullest a tap queue's ring was since the previous "
                       "scrape, 0-1.", {"device": device, "queue": queue}, ratio)
        for (device, queue), slots in sorted(self.size.items()):
            fams.gauge("netsleuth_tap_ring_size", "Slots of a tap queue's ring.", {"device": device, "queue": queue},
                       slots)


def vm_name(pid: int) -> str:
    """A QEMU process's VM name (`-name guest=NAME` or `-name NAME`), "" when it has none or is gone:
    a label that outlives the pid (a VM restarted keeps its series; pids are never labels)."""
    from wizard.discovery import qemu_vm_name

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return ""
    return qemu_vm_name(cmdline) or ""


class IrqfdSeries(ProbeSeries):
    """kvm-irqfd-stats-summary: per VM (its name), the injection latency histogram and the
    signal/interrupt counts.  At most ``max_series`` VMs; past it, new ones are folded into
    vm="other" (netsleuth_series_folded_total says how many)."""

    # (record field, metric without _total, help); docs/output-virt.md has each field.
    COUNTERS = (
        ("signals", "netsleuth_kvm_irqfd_signals", "irqfd signals (an eventfd write KVM turns into an interrupt)."),
        ("fast_path", "netsleuth_kvm_irqfd_fast_path_signals", "Signals delivered from the signaller's context."),
        ("slow_path", "netsleuth_kvm_irqfd_slow_path_signals", "Signals handed to a kworker (irqfd_inject)."),
        ("no_target", "netsleuth_kvm_irqfd_no_target_signals", "Signals that made no interrupt pending in any vCPU."),
        ("accepted", "netsleuth_kvm_irqfd_accepted_interrupts", "Interrupts made pending in a vCPU."),
        ("coalesced", "netsleuth_kvm_irqfd_coalesced_interrupts",
         "Accepted interrupts merged into the same vector still pending."),
        ("posted", "netsleuth_kvm_irqfd_posted_interrupts", "Interrupts posted by APICv/AVIC (not timed)."),
        ("injected", "netsleuth_kvm_irqfd_injected_interrupts", "Interrupts injected into a vCPU (timed)."),
        ("untracked", "netsleuth_kvm_irqfd_untracked_interrupts",
         "Accepted interrupts for a vCPU thread not seen yet (not timed)."),
    )
    LATENCY = "netsleuth_kvm_irqfd_injection_latency_seconds"

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        self.names: dict[int, str] = {}  # pid -> VM name, looked up once (a VM gone keeps its name)
        self.vms = BoundedCounters(("vm",), max_series)  # which VMs get series of their own
        self.counts: dict[str, dict[tuple[str, ...], int]] = {field: {} for field, _, _ in self.COUNTERS}
        self.slots: dict[tuple[str, ...], dict[int, int]] = {}

    def add(self, records: list[dict]) -> None:
        for r in records:
            if r.get("type") != "irqfd_summary":
                continue
            for e in r["entries"]:
                pid = int(e["pid"])
                if pid not in self.names:
                    self.names[pid] = vm_name(pid)
                vm = self.vms.admit((self.names[pid],))
                for field, counts in self.counts.items():
                    counts[vm] = counts.get(vm, 0) + int(e.get(field) or 0)
                _add_slots(self.slots.setdefault(vm, {}), e.get("buckets") or [])

    def emit(self, fams: Families) -> None:
        doc = "Time from an irqfd signal to the interrupt injected into the vCPU (posted interrupts are not timed)."
        fams.get(self.LATENCY, doc, "histogram")
        for (vm,), slots in sorted(self.slots.items()):
            fams.log2_histogram(self.LATENCY, doc, {"vm": vm}, slots)
        for field, name, fdoc in self.COUNTERS:
            fams.get(name, fdoc, "counter")
            for (vm,), count in sorted(self.counts[field].items()):
                fams.counter(name, fdoc, {"vm": vm}, count)
        emit_bound(fams, self.LATENCY, self.vms)


class VhostSeries(ProbeSeries):
    """vhost-eventfd-count: per tap device, queue and virtqueue (rx/tx), the kicks, wakeups,
    runs and signals of vhost-net.  At most ``max_series`` virtqueues; past it, new ones are
    folded into device/queue/vq "other"."""

    # (record field, metric without _total, help); docs/output-virt.md has each field.
    COUNTERS = (
        ("kicks", "netsleuth_vhost_kicks", "Guest kicks: the guest notified vhost of new buffers."),
        ("net_wakeups", "netsleuth_vhost_socket_wakeups",
         "Tap socket wakeups: packets for the VM arrived (rx) or room to send again (tx)."),
        ("runs", "netsleuth_vhost_runs", "vhost work function runs."),
        ("weight_exhausted", "netsleuth_vhost_weight_exhausted_runs",
         "Runs stopped at the weight limit and requeued."),
        ("signal_attempts", "netsleuth_vhost_signal_attempts",
         "Used-ring batches after which vhost may interrupt the guest."),
        ("eventfd_signals", "netsleuth_vhost_eventfd_signals",
         "Signal attempts that wrote the virtqueue's call eventfd."),
        ("suppressed", "netsleuth_vhost_suppressed_signals",
         "Signal attempts the guest asked to skip (no eventfd write)."),
        ("signals", "netsleuth_vhost_irqfd_signals",
         "Eventfd signals KVM received through an irqfd (absent where kvm is not loaded)."),
        ("signals_no_irqfd", "netsleuth_vhost_signals_without_irqfd",
         "Eventfd signals with no KVM irqfd behind them (QEMU reads the eventfd itself)."),
    )
    LABELS = ("device", "queue", "vq")

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        self.vqs = BoundedCounters(self.LABELS, max_series)  # decides which virtqueues get their own series
        self.counts: dict[str, dict[tuple[str, ...], int]] = {field: {} for field, _, _ in self.COUNTERS}

    def add(self, records: list[dict]) -> None:
        for r in records:
            if r.get("type") != "vhost_eventfd":
                continue
            for v in r["vqs"]:
                key = self.vqs.admit((v.get("device") or "", "" if v.get("queue") is None else str(v["queue"]),
                                      v["vq"]))
                for field, counts in self.counts.items():
                    if v.get(field) is not None:  # signals: null without kvm; the series is then absent
                        counts[key] = counts.get(key, 0) + int(v[field])

    def emit(self, fams: Families) -> None:
        for field, name, doc in self.COUNTERS:
            fams.get(name, doc, "counter")
            for key, count in sorted(self.counts[field].items()):
                fams.counter(name, doc, dict(zip(self.LABELS, key)), count)
        emit_bound(fams, "netsleuth_vhost_kicks_total", self.vqs)


SERIES: dict[str, type[ProbeSeries]] = {
    "tun-ring-monitor": TapRingSeries,
    "drop-summary": DropSeries,
    "ovs-upcall-summary": UpcallSeries,
    "system-latency-summary": StageSeries,
    "vm-latency-summary": StageSeries,
    "kvm-irqfd-stats-summary": IrqfdSeries,
    "vhost-eventfd-count": VhostSeries,
}
