"""Wall-clock time of BPF timestamps.

``bpf_ktime_get_ns()`` counts CLOCK_MONOTONIC, as does ``time.monotonic_ns()``;
the offset between that clock and the wall clock is taken at each conversion,
so a clock step during a long run moves later stamps with it.
"""

from __future__ import annotations

import time
from datetime import datetime


def wall_seconds(ktime_ns: int) -> float:
    return (time.time_ns() - time.monotonic_ns() + ktime_ns) / 1e9


def iso(ktime_ns: int) -> str:
    """ISO 8601 local time with microseconds of a ``bpf_ktime_get_ns()`` stamp."""
    return datetime.fromtimestamp(wall_seconds(ktime_ns)).astimezone().isoformat(timespec="microseconds")


def iso_wall(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="microseconds")
