"""Cumulative counters (BPF maps, summed over CPUs) -> what each grew by since the last read."""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence, Union

Total = Union[int, Sequence[int]]  # one counter, or several kept together (added field by field)


class Deltas:
    """The last total read per key; ``of`` answers the growth since then (all of it the first time)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, Total] = {}

    def of(self, key: Hashable, total: Total):
        """``total`` minus the one read last for ``key`` (a tuple for several counters); remembers ``total``."""
        prev = self._last.get(key)
        self._last[key] = total
        if isinstance(total, int):
            return total - (prev or 0)
        return tuple(t - p for t, p in zip(total, prev or (0,) * len(total)))

    def rise(self, key: Hashable, value: int) -> int:
        """How far ``value`` rose above the highest read for ``key`` (0 when it did not)."""
        highest = max(self._last.get(key, 0), value)
        return self.of(key, highest)

    def last(self, key: Hashable) -> Total | None:
        return self._last.get(key)

    def forget(self, key: Hashable) -> None:
        """Drop what was read for ``key`` (its entry left the map: a reused key starts afresh)."""
        self._last.pop(key, None)


def per_cpu_total(per_cpu: Iterable) -> int:
    """A per-CPU map value summed over the CPUs (plain counters, or structs with a ``count``)."""
    return sum(v if isinstance(v, int) else v.count for v in per_cpu)
