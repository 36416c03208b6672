"""What each tier-1 probe's records add up to, kept cumulative in the exporter.

The probes' read() returns what happened since the previous read; these classes add
those deltas up for ever (a scrape never clears anything), so every counter and
histogram bucket only grows while the exporter runs.  One class per probe, chosen
by name in SERIES; a probe without one runs nowhere (it shows as down, and why).
"""

from __future__ import annotations

from probes.runtime.hist import slot_of
from probes.runtime.stacks import function_of

from .families import Families

OTHER = "other"


class ProbeSeries:
    """Base: records in, samples out.  ``lost`` counts what the probe could not attribute."""

    def __init__(self, probe, max_series: int) -> None:
        self.probe = probe
        self.max_series = max_series
        self.lost = 0

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

    def add(self, key: tuple[str, ...], count: int) -> None:
        if key not in self.counts and len(self.counts) >= self.limit:
            if len(self._folded) < self.FOLDED_MEMORY:
                self._folded.add(hash(key))
            key = (OTHER,) * len(self.labels)
        self.counts[key] = self.counts.get(key, 0) + count

    @property
    def folded(self) -> int:
        return len(self._folded)

    def samples(self):
        for key, count in self.counts.items():
            yield dict(zip(self.labels, key)), count


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
        fams.gauge("netsleuth_series_limit", "Most label sets a metric keeps; past it new ones are folded into "
                   "one whose labels are all 'other'.", {"metric": self.METRIC + "_total"}, self.max_series)
        fams.counter("netsleuth_series_folded", "Distinct label sets folded into the 'other' series "
                     "(a lower bound past 65536).", {"metric": self.METRIC + "_total"}, self.drops.folded)


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

    def __init__(self, probe, max_series: int) -> None:
        super().__init__(probe, max_series)
        o = probe.options
        device = o.raw.get("vm_interface") or o.raw.get("phy_interface") or ""
        self.labels = {"path": probe.family, "direction": o.direction, "device": str(device)}
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


SERIES: dict[str, type[ProbeSeries]] = {
    "drop-summary": DropSeries,
    "ovs-upcall-summary": UpcallSeries,
    "system-latency-summary": StageSeries,
    "vm-latency-summary": StageSeries,
}
