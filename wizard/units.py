"""Short labels of measured values, the same in the live charts and the report's SVG."""

from __future__ import annotations


def short_us(v: float) -> str:
    """Microseconds as a short label: 512µs, 1.024ms, 2.1s."""
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}s"
    if v >= 1000:
        return f"{v / 1000:g}ms"
    return f"{v:g}µs" if v else "0"
