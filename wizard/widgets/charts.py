"""Charts of the live views, drawn with textual-plotext.

* RatePlot: events per interval over time (drops/s while the Summary runs).
* Log2Plot: a log2 histogram (latency probes' ``histograms`` buckets).
* TimelinePlot: a value per sample over time, marked samples apart (cpu-burst: the
  process's CPU each second, bursts in red).
"""

from __future__ import annotations

from collections import deque

from textual_plotext import PlotextPlot

from ..units import short_us


def bucket_label(low: int, unit: str) -> str:
    return short_us(low) if unit == "us" else f"{low:g}"


def with_empty_buckets(buckets: list[dict]) -> list[dict]:
    """Sorted log2 buckets with the empty ones in between filled in: the gap before a tail shows."""
    by_low = {int(b.get("low", 0)): int(b.get("count", 0)) for b in buckets}
    if not by_low:
        return []
    lows = sorted(by_low)
    out, low = [], lows[0]
    while low <= lows[-1]:
        out.append({"low": low, "count": by_low.get(low, 0)})
        low = low * 2 if low >= 2 else 2
    return out


class _Chart(PlotextPlot):
    """Redraws from its own state when mounted and whenever that state changes."""

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def _fresh(self, title: str):
        """The plot, emptied, with its title: what every _draw starts from."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        return plt

    def _draw(self) -> None:  # pragma: no cover - each chart draws itself
        raise NotImplementedError


class RatePlot(_Chart):
    """Bars of a count per interval, newest at the right."""

    def __init__(self, title: str, unit: str = "per s", keep: int = 60, **kw):
        super().__init__(**kw)
        self.title = title
        self.unit = unit
        self.samples: deque[float] = deque(maxlen=keep)

    def push(self, value: float) -> None:
        self.samples.append(value)
        self._draw()

    def _draw(self) -> None:
        plt = self._fresh(f"{self.title} ({self.unit})")
        values = list(self.samples) or [0]
        plt.bar(list(range(1, len(values) + 1)), values, marker="sd", width=0.8)
        plt.xlim(0.5, max(self.samples.maxlen or len(values), len(values)) + 0.5)
        plt.xticks([])
        plt.ylim(0, max(max(values), 1) * 1.15)
        self.refresh()


class Log2Plot(_Chart):
    """A log2 histogram: one bar per bucket, labelled with its low bound."""

    def __init__(self, title: str = "", **kw):
        super().__init__(**kw)
        self.title = title
        self.buckets: list[dict] = []
        self.unit = "us"

    def show(self, buckets: list[dict], unit: str = "us", title: str | None = None) -> None:
        self.buckets = with_empty_buckets(buckets)
        self.unit = unit
        if title is not None:
            self.title = title
        self._draw()

    def _draw(self) -> None:
        plt = self._fresh(self.title)
        if not self.buckets:
            plt.bar(["no samples"], [0])
        else:
            labels = [bucket_label(int(b.get("low", 0)), self.unit) for b in self.buckets]
            plt.bar(labels, [int(b.get("count", 0)) for b in self.buckets], marker="sd", width=0.6)
        self.refresh()


class TimelinePlot(_Chart):
    """One bar per sample, newest at the right; marked samples (a burst) in red."""

    def __init__(self, title: str, keep: int = 120, **kw):
        super().__init__(**kw)
        self.title = title
        self.points: deque[tuple[float, bool]] = deque(maxlen=keep)
        self.seen = 0  # samples pushed in all (the x axis counts them)

    def push(self, value: float, marked: bool = False) -> None:
        self.points.append((float(value), bool(marked)))
        self.seen += 1
        self._draw()

    def _draw(self) -> None:
        plt = self._fresh(self.title + ("" if not any(m for _, m in self.points) else "  (red: burst)"))
        first = self.seen - len(self.points) + 1
        for marked, color in ((False, "blue"), (True, "red")):
            xs = [first + i for i, (_, m) in enumerate(self.points) if m == marked]
            ys = [v for v, m in self.points if m == marked]
            if xs:
                plt.bar(xs, ys, marker="sd", width=0.8, color=color)
        peak = max((v for v, _ in self.points), default=0.0)
        plt.xlim(first - 0.5, first + max(len(self.points), 10) - 0.5)
        plt.ylim(0, max(peak, 1) * 1.15)
        self.refresh()
