"""log2 histograms as the kernel keeps them (bucket i holds values in [2^i, 2^(i+1)))."""

from __future__ import annotations

from dataclasses import dataclass

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def slot_of(value: float) -> int:
    """The log2 slot a value falls in (0 and 1 share slot 0)."""
    return max(int(value), 1).bit_length() - 1


def bucket_bounds(slot: int) -> tuple[int, int]:
    """Inclusive low, exclusive high of a log2 slot (slot 0 holds 0 and 1)."""
    if slot == 0:
        return 0, 2
    return 1 << slot, 1 << (slot + 1)


@dataclass(frozen=True)
class Log2Hist:
    counts: dict[int, int]  # slot -> count

    @classmethod
    def from_values(cls, values) -> "Log2Hist":
        counts: dict[int, int] = {}
        for v in values:
            slot = slot_of(v)
            counts[slot] = counts.get(slot, 0) + 1
        return cls(counts)

    @classmethod
    def from_buckets(cls, buckets) -> "Log2Hist":
        """Back from the ``summary()`` form ({low, high, count} per bucket), summing repeats."""
        counts: dict[int, int] = {}
        for b in buckets:
            slot = slot_of(b.get("low", 0))
            counts[slot] = counts.get(slot, 0) + int(b.get("count", 0))
        return cls(counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merged(self, other: "Log2Hist") -> "Log2Hist":
        out = dict(self.counts)
        for k, v in other.counts.items():
            out[k] = out.get(k, 0) + v
        return Log2Hist(out)

    def percentile(self, p: float) -> int | None:
        """Upper bound of the bucket holding the p-th percentile (never under-reports)."""
        total = self.total
        if total == 0:
            return None
        rank = p / 100.0 * total
        seen = 0
        for slot in sorted(self.counts):
            seen += self.counts[slot]
            if seen >= rank:
                return bucket_bounds(slot)[1] - 1
        return bucket_bounds(max(self.counts))[1] - 1

    def max_bound(self) -> int | None:
        if not self.total:
            return None
        return bucket_bounds(max(s for s, c in self.counts.items() if c))[1] - 1

    def summary(self) -> dict:
        return {
            "count": self.total,
            "buckets": [
                {"low": bucket_bounds(s)[0], "high": bucket_bounds(s)[1], "count": self.counts[s]}
                for s in sorted(self.counts) if self.counts[s]
            ],
            **{f"p{str(p).replace('.0', '').replace('.', '_')}": self.percentile(p) for p in PERCENTILES},
            "max": self.max_bound(),
        }


def render_text(hist: Log2Hist, unit: str = "us", width: int = 40) -> str:
    """The classic BCC-style text histogram."""
    if not hist.total:
        return "  (no samples)"
    peak = max(hist.counts.values())
    lines = [f"  {unit:>19} : count     distribution"]
    for slot in range(min(hist.counts), max(hist.counts) + 1):
        lo, hi = bucket_bounds(slot)
        c = hist.counts.get(slot, 0)
        bar = "*" * (round(c * width / peak) if peak else 0)
        lines.append(f"  {lo:>8} -> {hi - 1:<8} : {c:<9} |{bar:<{width}}|")
    return "\n".join(lines)
