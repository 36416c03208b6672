"""Metric families built at each scrape, one per name whatever the number of instances,
and the log2 slots as a Prometheus histogram."""

from __future__ import annotations

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

# The kernel's log2 slots are in microseconds; slot i holds the whole microseconds
# [2^i, 2^(i+1)) (slot 0: 0 and 1), i.e. the real delays [2^i us, 2^(i+1) us) since
# the kernel truncates ns to us: le = 2^(i+1) us is the slot's exact upper bound.
# Slots 0..24 get a bucket (2 us .. 33.554432 s); later ones count in +Inf only.
FINITE_SLOTS = 25


def slot_le(slot: int) -> str:
    """The `le` of a log2 microsecond slot, in seconds, formatted as Go does (stable)."""
    return floatToGoString((1 << (slot + 1)) / 1e6)


class Families:
    """name -> Metric, so two instances of one probe add samples to one family."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def get(self, name: str, doc: str, kind: str) -> Metric:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = Metric(name, doc, kind)
        return fam

    def counter(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        """``name`` without ``_total``; the sample is ``name_total``."""
        self.get(name, doc, "counter").add_sample(name + "_total", labels, value)

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        self.get(name, doc, "gauge").add_sample(name, labels, value)

    def log2_histogram(self, name: str, doc: str, labels: dict[str, str], slots: dict[int, int]) -> None:
        """Cumulative buckets from per-slot counts; every bucket on every scrape (stable
        series), `_count` = +Inf.  No `_sum`: the probes keep no exact sum of delays."""
        fam = self.get(name, doc, "histogram")
        seen = 0
        for slot in range(FINITE_SLOTS):
            seen += slots.get(slot, 0)
            fam.add_sample(name + "_bucket", {**labels, "le": slot_le(slot)}, seen)
        total = sum(slots.values())
        fam.add_sample(name + "_bucket", {**labels, "le": "+Inf"}, total)
        fam.add_sample(name + "_count", labels, total)

    def __iter__(self):
        return iter(self._by_name.values())
