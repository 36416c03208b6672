"""Accumulate a probe's records over a run into one result the rules (and the live view) read.

The wizard reads a probe every second; each read gives records covering only
that second.  An :class:`Accumulator` folds them together the way the probe's
catalogue entry says (``results.merge`` in probes.yaml):

* ``sum-entries``    records with an ``entries`` list (drop_summary): entries with the
                     same key are summed, top-level counters too.
* ``group-events``   one record per event (drop, upcall, wait): events with the same key
                     are counted; the first event is kept as the sample.  Records of a
                     ``totalled`` type stand for many events already totalled (offcpu
                     --aggregate): they add their counts and totals to the same groups.
* ``sum-histograms`` records with a ``histograms`` list of log2 buckets: buckets with the
                     same key are summed (and ``sum`` fields beside them); percentiles are
                     computed on the sum.
* ``last``           snapshots (counters already cumulative): the last record wins.

Every result has the same outer shape: ``probe``, ``records``, ``duration_s``, the
summed ``totals`` fields at top level, ``entries`` (sorted, each with ``rank`` and,
where it has a ``count``, ``share``) and ``samples`` (first raw events).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vocab.hist import Log2Hist, slot_of
from vocab.stacks import function_of

MERGE_KINDS = ("sum-entries", "group-events", "sum-histograms", "last")
MAX_SAMPLES = 20
MAX_DISTINCT = 32
MAX_CHART_POINTS = 3600  # an hour of cpu-burst's 1 s samples; older points give way


@dataclass(frozen=True)
class MergeSpec:
    kind: str
    record: str | None = None  # the record "type" carrying results; others are counted apart
    entries: str = "entries"  # sum-entries: the list field holding the entries (futex: "threads")
    key: tuple[str, ...] = ()
    sum: tuple[str, ...] = ("count",)
    totals: tuple[str, ...] = ()
    distinct: tuple[str, ...] = ()
    max: tuple[str, ...] = ()
    sort_by: str = "count"
    # group-events: record type -> ((group field, record field), ...) for records that total
    # many events already: ``max_*`` group fields keep the largest value, the others add up.
    totalled: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    # Entries that are no loss (a normal free the kernel reports like a drop): (name, condition
    # over {"evidence": entry}, why). They leave ``entries`` and ``total`` for ``not_a_loss``.
    apart: tuple[tuple[str, Any, str], ...] = ()


@dataclass(frozen=True)
class ProbeChart:
    """A time series drawn from records beside the result's (cpu-burst: the process's CPU
    each second, the samples of a burst marked): live in the TUI, and in the report."""

    record: str  # record type carrying one point
    value: str  # its field plotted
    title: str
    mark: str | None = None  # a true field marks the point (drawn apart)

    def point(self, r: dict) -> tuple[float, bool] | None:
        """(value, marked) of a record that is one of this chart's points, else None."""
        if r.get("type") != self.record or not _is_num(r.get(self.value)):
            return None
        return r[self.value], bool(self.mark and r.get(self.mark))


def _apart_row(name: str, why: str, e: dict) -> dict:
    keep = ("count", "device", "netns", "reason", "location", "flow")
    return {"pattern": name, "why": why, **{k: e[k] for k in keep if k in e}}


def _at(item: Any, path: str) -> Any:
    """The value at a dotted path of nested dicts (None where absent)."""
    for part in path.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def _key(item: dict, fields: tuple[str, ...]) -> str:
    return json.dumps([_at(item, f) for f in fields], sort_keys=True, default=str)


def _values_name(path: str) -> str:
    """``cpu`` -> ``cpu_values``; ``threads.tid`` -> ``threads_tid_values``."""
    return path.replace(".", "_") + "_values"


def _values_at(item: Any, parts: list[str]) -> list:
    """The values at a dotted path, going through lists (``threads.tid`` of a burst:
    every thread's tid)."""
    if isinstance(item, list):
        return [v for x in item for v in _values_at(x, parts)]
    if not parts:
        return [] if item is None else [item]
    if not isinstance(item, dict):
        return []
    return _values_at(item.get(parts[0]), parts[1:])


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _added(total: Any, v: Any) -> Any:
    """``total`` plus ``v``: numbers add; ``{name: count}`` maps add per name (qdisc-drops'
    reasons); ``[{..., count}]`` lists add per item (its flows), most first."""
    if _is_num(v):
        return (total if _is_num(total) else 0) + v
    if isinstance(v, dict):
        out = dict(total) if isinstance(total, dict) else {}
        for name, n in v.items():
            if _is_num(n):
                out[name] = out.get(name, 0) + n
        return out
    if isinstance(v, list):
        out = [dict(x) for x in total] if isinstance(total, list) else []
        for x in v:
            if not (isinstance(x, dict) and _is_num(x.get("count"))):
                continue
            what = {k: w for k, w in x.items() if k != "count"}
            same = next((y for y in out if {k: w for k, w in y.items() if k != "count"} == what), None)
            if same is not None:
                same["count"] += x["count"]
            elif len(out) < MAX_DISTINCT:
                out.append(dict(x))
        return sorted(out, key=lambda y: -y["count"])
    return total


def histogram_summary(buckets: list[dict]) -> dict:
    """count, buckets, p50/p95/p99/p99_9, max and the tail threshold (low bound of the
    P99.9 bucket: a Details threshold that catches the slowest 0.1 %)."""
    summary = Log2Hist.from_buckets(buckets).summary()
    p = summary.get("p99_9")
    summary["tail_threshold_us"] = (1 << slot_of(p)) if p else None
    return summary


@dataclass
class Accumulator:
    probe: str
    spec: MergeSpec
    chart: ProbeChart | None = None
    records: int = 0
    other: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    last: dict | None = None
    first_time: str | None = None
    last_time: str | None = None
    points: list[list] = field(default_factory=list)  # the chart's [ts, value, marked]
    points_dropped: int = 0

    def add(self, records: list[dict]) -> None:
        for r in records:
            self.add_one(r)

    def add_one(self, r: dict) -> None:
        rtype = r.get("type")
        point = self.chart.point(r) if self.chart is not None else None
        if point is not None:
            self._add_point(r.get("ts"), *point)
        totalled = dict(self.spec.totalled).get(rtype)
        if self.spec.record and rtype != self.spec.record and totalled is None:
            # lost-event and error records: counted, never mixed into results
            count = r.get("count") if _is_num(r.get("count")) else 1
            self.other[str(rtype)] = self.other.get(str(rtype), 0) + count
            return
        self.records += 1
        self.first_time = self.first_time or r.get("time")
        self.last_time = r.get("time") or self.last_time
        for name in self.spec.totals:
            if _is_num(r.get(name)):
                self.totals[name] = self.totals.get(name, 0) + r[name]
        kind = self.spec.kind
        if kind == "sum-entries":
            for e in self._items(r):
                self._fold(e)
        elif kind == "group-events":
            self._fold(r, event=True, totalled=totalled)
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(r)
        elif kind == "sum-histograms":
            for h in self._items(r):
                self._fold_hist(h)
        elif kind == "last":
            self.last = r

    def _items(self, r: dict) -> list[dict]:
        """The record's entries (or histograms), each seeing the record's own fields too
        (a latency record's ``direction``, an upcall record's ``handlers``); the entry's win."""
        items = r.get(self.spec.entries)
        if isinstance(items, dict):  # one histogram per record
            items = [items]
        outer = {k: v for k, v in r.items() if k not in (self.spec.entries, "type")}
        return [{**outer, **item} for item in items or [] if isinstance(item, dict)]

    def _fold(self, item: dict, event: bool = False, totalled: tuple[tuple[str, str], ...] | None = None) -> None:
        k = _key(item, self.spec.key)
        g = self.groups.get(k)
        if g is None:
            g = self.groups[k] = dict(item)
            if event:
                g["count"] = 0
                g["first_time"] = item.get("time")
            for _, target in self._sums(event):
                g[target] = 0
            for d in self.spec.distinct:
                g[_values_name(d)] = []
        if totalled is not None:
            g["last_time"] = item.get("time")
            for target, source in totalled:
                v = item.get(source)
                if not _is_num(v):
                    continue
                if not target.startswith("max_"):
                    g[target] = (g.get(target) or 0) + v
                elif g.get(target) is None or v > g[target]:
                    g[target] = v
            self._collect(g, item)
            return
        if event:
            g["count"] += 1
            g["last_time"] = item.get("time")
        for source, target in self._sums(event):
            g[target] = _added(g[target], item.get(source))
        self._collect(g, item)

    def _add_point(self, ts: Any, value: float, marked: bool) -> None:
        self.points.append([ts, value, marked])
        if len(self.points) > MAX_CHART_POINTS:
            del self.points[0]
            self.points_dropped += 1

    def _collect(self, g: dict, item: dict) -> None:
        """Distinct values and maxima of one item into its group."""
        for d in self.spec.distinct:
            seen = g[_values_name(d)]
            for v in _values_at(item, d.split(".")):
                if v not in seen and len(seen) < MAX_DISTINCT:
                    seen.append(v)
        for m in self.spec.max:
            v = item.get(m)
            if _is_num(v) and (g.get("max_" + m) is None or v > g["max_" + m]):
                g["max_" + m] = v

    def _sums(self, event: bool) -> list[tuple[str, str]]:
        """(field, where its sum goes): in place for entries; ``total_<field>`` for events,
        whose own fields keep the first event's values (the sample) and whose count is counted."""
        if not event:
            return [(f, f) for f in self.spec.sum]
        return [(f, "total_" + f) for f in self.spec.sum if f != "count"]

    def _hist_sums(self) -> tuple[str, ...]:
        """Counters a histogram entry carries beside its buckets (its count comes from them)."""
        return tuple(f for f in self.spec.sum if f != "count")

    def _fold_hist(self, h: dict) -> None:
        k = _key(h, self.spec.key)
        g = self.groups.get(k)
        if g is None:
            g = self.groups[k] = {f: h.get(f) for f in self.spec.key}
            g["unit"] = h.get("unit", "us")
            g["_counts"] = {}
            for d in self.spec.distinct:
                g[_values_name(d)] = []
            for f in self._hist_sums():
                g[f] = 0
        for f in self._hist_sums():
            if _is_num(h.get(f)):
                g[f] += h[f]
        for b in h.get("buckets") or []:
            low = int(b.get("low", 0))
            g["_counts"][low] = g["_counts"].get(low, 0) + int(b.get("count", 0))
        self._collect(g, h)

    def _set_apart(self, entries: list[dict], out: dict) -> list[dict]:
        """Move the entries that are no loss to ``out["not_a_loss"]`` (with the pattern and why),
        out of the entries the rules judge; ``total`` (a probe's own counter) loses their count."""
        keep, apart = [], []
        for e in entries:
            scope = {"evidence": e, "context": {}, "result": {}, "step": {}, "let": {}}
            match = next(((name, why) for name, when, why in self.spec.apart if when(scope)), None)
            (keep if match is None else apart).append(e if match is None else _apart_row(*match, e))
        apart.sort(key=lambda a: -(a.get("count") or 0))
        out["not_a_loss"] = apart
        out["not_a_loss_total"] = sum(a.get("count") or 0 for a in apart)
        if "total" in self.spec.totals and _is_num(out.get("total")):
            out["total"] = max(0, out["total"] - out["not_a_loss_total"])
        return keep

    # the merged view ------------------------------------------------------------
    def result(self, duration_s: float | None = None) -> dict:
        out: dict[str, Any] = {"probe": self.probe, "records": self.records, "duration_s": duration_s,
                               "first_time": self.first_time, "last_time": self.last_time}
        for name in self.spec.totals:
            out[name] = self.totals.get(name, 0)
        if self.other:
            out["other_records"] = dict(self.other)
        if self.chart is not None:
            out["chart"] = {"title": self.chart.title, "value": self.chart.value, "mark": self.chart.mark,
                            "points": [list(p) for p in self.points], "points_dropped": self.points_dropped}
        if self.spec.kind == "last":
            entries = list((self.last or {}).get(self.spec.entries) or [])
            for k, v in (self.last or {}).items():
                if k not in (self.spec.entries, "type"):
                    out.setdefault(k, v)
        elif self.spec.kind == "sum-histograms":
            entries = []
            for g in self.groups.values():
                e = {k: v for k, v in g.items() if k != "_counts"}
                buckets = [{"low": low, "count": c} for low, c in sorted(g["_counts"].items())]
                e.update(histogram_summary(buckets))
                entries.append(e)
        else:
            entries = [dict(g) for g in self.groups.values()]
        if self.spec.apart:
            entries = self._set_apart(entries, out)
        if self.spec.kind == "group-events":
            out["total"] = sum(e["count"] for e in entries)
        # Ties in a stable order whatever order the records came in: the same counts give the
        # same headline on every run.
        entries.sort(key=lambda e: (-(e.get(self.spec.sort_by) or 0), _key(e, self.spec.key)))
        counted = sum(e.get("count") or 0 for e in entries if _is_num(e.get("count")))
        for i, e in enumerate(entries, 1):
            e["rank"] = i
            if counted and _is_num(e.get("count")):
                e["share"] = e["count"] / counted
            if _is_num(e.get("count")) and _is_num(duration_s) and duration_s > 0:
                e["rate"] = e["count"] / duration_s  # per second: runs of different lengths compare
            if isinstance(e.get("location"), str):
                e["function"] = function_of(e["location"])
            # A group that merged flows from many source ports has no single source port.
            if isinstance(e.get("flow"), dict) and len(e.get("flow_src_port_values") or ()) > 1:
                e["flow"] = {**e["flow"], "src_port": None}
        out["entries"] = entries
        out["samples"] = list(self.samples)
        return out
