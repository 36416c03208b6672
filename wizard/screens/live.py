"""Live views: a probe (live or recorded) pumped in a thread worker, its records shown as they come.

* LiveSummaryScreen: chart (rate, or the log2 histogram), ranked entries, counters.
* LiveDetailsScreen: the event stream, and the selected event's fields and stack.

The worker owns the probe: it starts it, reads it every second, and closes it
(detaches the BPF programs) on every way out — duration reached, stop, Esc,
quit, error.  The UI only receives messages, so it never blocks on BPF.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

from rich.markup import escape
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from ..contracts import EventStream, ProbeSource, RecordedSource
from ..replay import same_filters
from ..report import hist_title
from ..steprun import READ_EVERY_S, run_source
from ..widgets.charts import Log2Plot, RatePlot, TimelinePlot
from ..widgets.tables import EVENT_COLUMNS, EntryTable, entry_flow, event_columns, playbook_columns
from .base import WizardScreen
from .dialogs import ConfirmDiscard
from .messages import RunEnded


# The share of the time an event stream may spend decoding: under a flood the rest is counted
# as lost in the kernel, and the UI keeps the GIL most of the time (keys within 200 ms).
DECODE_SHARE = 0.1


class ProbeRun:
    """One run of a source in a thread worker, through the step loop the autopilot uses too
    (wizard.steprun.run_source: start, read every second, stop at the duration or on request,
    close on every way out).  Progress goes to the screen as messages (thread-safe)."""

    def __init__(self, source, probe: str, spec, duration: float, post, on_records=None,
                 read_every: float = READ_EVERY_S):
        self.source = source
        if isinstance(source, EventStream):  # it shares the GIL with the UI
            source.decode_share = DECODE_SHARE
        self.probe = probe
        self.spec = spec  # playbooks.model.ProbeSpec
        self.duration = duration
        self.post = post
        self.on_records = on_records  # e.g. a Recorder (--record)
        self.read_every = read_every
        self.stop_requested = threading.Event()
        self.closed = threading.Event()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.outcome = None  # StepOutcome

    def stop(self) -> None:
        self.stop_requested.set()
        if isinstance(self.source, EventStream):  # end its poll now
            self.source.interrupt()

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def __call__(self) -> None:
        try:
            self.outcome = run_source(_Announced(self.source, self._started), self.probe, self.spec,
                                      self.duration, stop=self.stop_requested, on_records=self._records,
                                      on_update=lambda result: self.post(ProbeUpdate(result)),
                                      read_every=self.read_every)
            self.post(ProbeFinished(self.outcome.status, self.outcome.error))
        except Exception as exc:  # noqa: BLE001 - a bug below run_source: shown in the panel, logged
            self.post(ProbeFinished("error", f"{type(exc).__name__}: {exc}", exc))
        finally:
            self.ended_at = self.ended_at or time.monotonic()
            self.closed.set()  # run_source closed the source (its finally), or start never succeeded

    def _started(self, attach: str) -> None:
        self.started_at = time.monotonic()
        self.post(ProbeStarted(attach))

    def _records(self, t: float, records: list[dict]) -> None:
        if self.on_records is not None:
            self.on_records(t, records)
        self.post(ProbeRecords(records))


class _Announced:
    """The source, telling the screen when start() returned (compiled and attached)."""

    def __init__(self, source, on_started):
        self._source = source
        self._on_started = on_started

    def start(self) -> None:
        self._source.start()
        self._on_started(self._source.describe_attach())

    def __getattr__(self, name):
        return getattr(self._source, name)


@dataclass
class ProbeStarted(Message):
    attach: str


@dataclass
class ProbeRecords(Message):
    records: list[dict]


@dataclass
class ProbeUpdate(Message):
    """The merged result so far (folded in the worker thread, not in the UI)."""

    result: dict


@dataclass
class ProbeFinished(Message):
    status: str  # ok | stopped | error | unavailable
    error: Optional[str]
    exc: Optional[BaseException] = None


def lost_count(result: dict) -> int:
    """Events the probe could not deliver or count (perf buffer full, key table full)."""
    other = result.get("other_records") or {}
    return int(other.get("lost_events", 0) + other.get("uncounted", 0) + (result.get("uncounted_table_full") or 0))


class LiveRuns:
    """The live views whose run is not yet kept: every way out stops their probes and waits
    until each is closed (thread-safe: the crash path runs outside the event loop)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._screens: set[LiveScreen] = set()
        self.closing = False  # quitting: a run that ends now is kept by the app, not shown

    def add(self, screen: LiveScreen) -> None:
        with self._lock:
            self._screens.add(screen)

    def discard(self, screen: LiveScreen) -> None:
        with self._lock:
            self._screens.discard(screen)

    def screens(self) -> list[LiveScreen]:
        with self._lock:
            return list(self._screens)

    def stop_all(self) -> list[ProbeRun]:
        """Ask every run to stop; the runs, to wait on (run.closed)."""
        runs = [s.run for s in self.screens() if s.run is not None]
        for run in runs:
            run.stop()
        return runs


class LiveScreen(WizardScreen):
    """What both live views share: the run, the status line, the counters, stop and back."""

    BINDINGS = [Binding("s", "stop", "Stop & see findings"), Binding("escape", "back", "Back (discard, asks)")]
    READ_EVERY_S = READ_EVERY_S
    state = reactive("starting", init=False)  # starting | running | stopping | done | failed

    def __init__(self, view, values: dict, spec, depth: int, source: ProbeSource, runs: LiveRuns,
                 on_records=None, context: dict | None = None):
        super().__init__()
        self.view = view
        self.values = values  # probe options (dests), as validated on the step screen
        self.spec = spec  # the probe's ProbeSpec from probes.yaml
        self.depth = depth
        self.source = source
        self.runs = runs
        self.on_records = on_records  # e.g. the --record Recorder's callback
        self.context = context or {}  # the walk's context (the playbook's columns use it)
        self.result: dict = {"entries": [], "records": 0}
        self.run: ProbeRun | None = None
        self.attach = ""
        self.discarded = False
        self._finished: ProbeFinished | None = None  # arrived while a dialog was on top
        self.duration = float(values.get("duration") or view.duration)
        if isinstance(source, RecordedSource) and source.recorded_duration_s and source.speed:
            # a replay lasts as long as the recorded run, at its pace
            self.duration = min(self.duration, source.recorded_duration_s / source.speed)

    def heading(self) -> str:
        return f"{self.view.title} — {self.view.probe}"

    def on_mount(self) -> None:
        source = self.source
        note = self.query_one("#live-note", Static)
        note.display = isinstance(source, RecordedSource)
        if isinstance(source, RecordedSource):  # a replay: say which filters the shown run was recorded with
            differs = not same_filters(source.recorded_params, self.values)
            note.update(("[yellow]A replay shows the run as recorded, not the filters asked for[/yellow]: "
                         if differs else "") + escape(source.describe_recorded()))
        self.run = ProbeRun(source, self.view.probe, self.spec, self.duration, self.post_message,
                            self.on_records, self.READ_EVERY_S)
        self.runs.add(self)
        self.run_worker(self.run, thread=True, group="probe", name=f"probe {self.view.probe}", exit_on_error=False)
        self.set_interval(0.5, self._tick)
        self._tick()

    def watch_state(self) -> None:
        self._tick()

    # run events -----------------------------------------------------------------
    def on_probe_started(self, event: ProbeStarted) -> None:
        self.attach = event.attach
        self.state = "running"

    def on_probe_records(self, event: ProbeRecords) -> None:
        self.show_records(event.records)

    def on_probe_update(self, event: ProbeUpdate) -> None:
        self.result = event.result
        self.show_result(event.result)
        self._tick()

    def on_probe_finished(self, event: ProbeFinished) -> None:
        if self.discarded or self.runs.closing:
            return  # Esc or quit: the run is dropped or kept by the app, not shown
        if not self.is_active:  # help or the quit dialog is open: go on when it closes
            self._finished = event
            self.state = "done"
            return
        self._finish(event)

    def on_screen_resume(self) -> None:
        pending, self._finished = self._finished, None
        if pending is not None and not self.discarded:
            self._finish(pending)

    def _finish(self, event: ProbeFinished) -> None:
        failed = event.status in ("error", "unavailable")
        self.state = "failed" if failed else "done"
        self.post_message(RunEnded(self, failure=event) if failed else RunEnded(self, outcome=self.run.outcome))

    # display --------------------------------------------------------------------
    def _tick(self) -> None:
        run = self.run
        elapsed = run.elapsed if run else 0.0
        left = max(0.0, self.duration - elapsed)
        state = {"starting": "[yellow]starting (compiling and attaching)…[/yellow]",
                 "running": f"[green]running[/green] {elapsed:4.0f} s / {self.duration:.0f} s, {left:.0f} s left",
                 "stopping": "stopping…", "done": f"done after {elapsed:.0f} s",
                 "failed": "[red]failed[/red]"}.get(self.state, self.state)
        attach = f" — {escape(self.attach)}" if self.attach else ""
        _update(self.query_one("#live-status", Static), state + attach)
        _update(self.query_one("#live-counters", Static), self.counters())

    def counters(self) -> str:
        return ""

    def show_records(self, records: list[dict]) -> None:
        """Raw records of one read (before they are merged)."""

    def show_result(self, result: dict) -> None:
        """The merged result after a read."""

    # keys -----------------------------------------------------------------------
    def action_stop(self) -> None:
        if self.run and self.state in ("starting", "running"):
            self.state = "stopping"
            self.run.stop()

    def go_back(self) -> None:
        """Esc: back to the step's form; a run still going is discarded, after asking."""
        if self.state not in ("starting", "running"):
            self._discard()
            return
        detail = (f"{self.view.probe} has run {self.run.elapsed if self.run else 0:.0f} s. Discarding stops it and "
                  "forgets what it saw; s (on the live view) stops it and keeps the findings.")
        self.app.push_screen(ConfirmDiscard(detail), lambda yes: self._discard() if yes else None)

    def _discard(self) -> None:
        self.discarded = True
        if self.run:
            self.run.stop()
        self.runs.discard(self)
        self.dismiss()


def _update(widget: Static, text: str) -> None:
    """Update a line only when it changed: each update lays the screen out again."""
    if getattr(widget, "_shown", None) != text:
        widget._shown = text
        widget.update(text)


DEFAULT_TOP = 10


class LiveSummaryScreen(LiveScreen):
    HELP = ("The Summary probe is running: counts are kept in the kernel and read every second.\n"
            "The chart shows events per second (or the latency histogram); the table ranks what was "
            "seen so far. Press s to stop early and see the findings; it stops by itself at the "
            "duration. Esc discards this run and goes back to the form.")

    def body(self):
        yield Static("", id="live-status")
        yield Static("", id="live-note")
        yield Static("", id="live-counters")
        if self.spec.merge.kind == "sum-histograms":
            yield Log2Plot("latency", id="live-chart")
        else:
            yield RatePlot("events", id="live-chart")
        top = int(self.values.get("top") or DEFAULT_TOP)  # the probe's own --top when it has one
        yield EntryTable(playbook_columns(self.spec, self.context) or EVENT_COLUMNS, limit=top,
                         id="live-table")
        yield Static("", id="live-selected")

    def show_records(self, records: list[dict]) -> None:
        chart = self.query_one("#live-chart")
        if isinstance(chart, RatePlot):
            mine = [r for r in records if r.get("type") == self.spec.merge.record or not self.spec.merge.record]
            chart.push(sum(_record_count(r) for r in mine))

    def show_result(self, result: dict) -> None:
        table = self.query_one("#live-table", EntryTable)
        table.show(result["entries"])
        self._show_selected(table.selected())

    def _show_selected(self, entry: dict | None) -> None:
        """The highlighted entry in full (the table is cut at 80 columns)."""
        if entry is None:
            return
        table = self.query_one("#live-table", EntryTable)
        cells = [fn(entry) for _, fn in table.columns_spec]
        parts = [f"#{entry.get('rank', '?')}"] + [c for c in cells if c not in ("", "-", None)]
        self.query_one("#live-selected", Static).update(escape(" · ".join(str(p) for p in parts)))
        if self.spec.merge.kind == "sum-histograms":
            self._show_hist(entry)

    def _show_hist(self, entry: dict | None) -> None:
        if entry is None:
            return
        title = hist_title(entry, self.spec.merge.key)
        self.query_one("#live-chart", Log2Plot).show(entry.get("buckets") or [], entry.get("unit", "us"), title)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_selected(self.query_one("#live-table", EntryTable).selected())

    def counters(self) -> str:
        r = self.result
        total = r.get("total", sum(e.get("count", 0) or 0 for e in r["entries"]))
        shown = min(len(r["entries"]), self.query_one("#live-table", EntryTable).limit)
        return (f"total [b]{total:,}[/b]  ·  {len(r['entries'])} distinct (top {shown} shown)  ·  "
                f"lost {lost_count(r):,}  ·  {r.get('records', 0)} reads")


def _record_count(r: dict) -> float:
    if isinstance(r.get("total"), (int, float)):
        return r["total"]
    return sum(e.get("count", 0) or 0 for e in r.get("entries") or []) or 1


# What tells one event from the next comes first, then its stacks, then everything else:
# for a packet where and what it was; for a thread's block or lock wait, who and how long.
EVENT_WHERE = ("flow", "reason", "location", "device")
EVENT_WHO = ("comm", "tid", "waiter_comm", "waiter_tid", "holder_comm", "holder_tid", "lock", "duration_us",
             "wait_us", "blocked_in", "state")
EVENT_LATER = ("comm", "pid", "tid", "cpu", "time")  # the rest starts with these


def _stacks(e: dict) -> list[tuple[str, list]]:
    """(title, frames) of each stack an event carries.  offcpu's ``stack`` is its kernel and
    user stacks joined: shown as those two, not three times."""
    stacks = [(k, v) for k, v in e.items() if k.endswith("stack") and isinstance(v, list) and v]
    if any(k in ("kernel_stack", "user_stack") for k, _ in stacks):
        stacks = [(k, v) for k, v in stacks if k != "stack"]
    return stacks


def event_text(e: dict) -> str:
    """One event's fields: the telling ones first, then its stacks frame by frame (right
    after where and what), then the rest; nested dicts flattened, lists joined."""
    stacks = _stacks(e)
    skip = {"type"} | {k for k, v in e.items() if k.endswith("stack") and isinstance(v, list)}
    first = [k for k in EVENT_WHERE if k in e] or [k for k in EVENT_WHO if k in e]
    keys = first + [k for k in EVENT_LATER if k in e and k not in first] + \
        [k for k in e if k not in first and k not in EVENT_LATER]
    head, rest = [], []
    for k in keys:
        v = e[k]
        if k in skip or v is None or v == []:
            continue
        into = head if k in first else rest
        if k == "flow" and isinstance(v, dict):
            into.append(f"[b]flow[/b]: {escape(entry_flow(e))}")
        elif isinstance(v, dict):
            inner = ", ".join(f"{ik}={iv}" for ik, iv in v.items() if iv is not None)
            if inner:
                into.append(f"[b]{escape(k)}[/b]: {escape(inner)}")
        elif isinstance(v, list):
            into.append(f"[b]{escape(k)}[/b]: {escape(', '.join(_short(x) for x in v))}")
        else:
            into.append(f"[b]{escape(k)}[/b]: {escape(str(v))}")
    lines = head
    for key, frames in stacks:
        lines.append(f"[b]{escape(key.replace('_', ' '))}[/b]:")
        lines += [f"  {escape(str(frame))}" for frame in frames]
    return "\n".join(lines + rest)


def _short(v) -> str:
    """A list item on one line: a dict as its k=v pairs (cpu-burst's threads)."""
    if isinstance(v, dict):
        return " ".join(f"{k}={x}" for k, x in v.items() if x is not None)
    return str(v)


EVENT_ROWS = 60  # the newest events listed (the selected one in full below); each read redraws them


class LiveDetailsScreen(LiveScreen):
    READ_EVERY_S = 0.25  # the list's newest rows are at most this old (plus a poll and a redraw)
    HELP = ("The Details probe reports each matching event (here: each dropped packet) as it happens. "
            "Move in the list with ↑/↓: the selected packet's fields and kernel stack show below.\n"
            "While you look at an older row the list stands still; End goes back to the newest. Under a "
            "flood only the newest events are listed and the others counted as 'not listed' (the findings "
            "count every event received); "
            "'lost' are events the kernel held back because the probe fell behind.\n"
            "Press s to stop early and see the findings. Esc discards this run.")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.skipped = 0  # events not listed (more in a read than the list holds)
        self.waiting: deque = deque(maxlen=EVENT_ROWS)  # newest events, while the user looks at older ones

    def body(self):
        yield Static("", id="live-status")
        yield Static("", id="live-note")
        yield Static("", id="live-counters")
        if self.spec.chart is not None:  # e.g. cpu-burst: the CPU each second, bursts marked
            yield TimelinePlot(self.spec.chart.title, id="live-chart")
        with Vertical(id="details-split"):
            m = self.spec.merge
            yield EntryTable(event_columns(m.record, m.key, m.distinct), limit=EVENT_ROWS, id="live-events")
            with VerticalScroll(id="event-detail-box"):
                yield Static("[dim]no event yet[/dim]", id="event-detail")

    def show_records(self, records: list[dict]) -> None:
        m, chart = self.spec.merge, self.spec.chart
        if chart is not None:
            plot = self.query_one("#live-chart", TimelinePlot)
            for point in filter(None, map(chart.point, records)):
                plot.push(*point)
        events = [r for r in records if r.get("type") == m.record]
        if not events:
            return
        table = self.query_one("#live-events", EntryTable)
        if not table.items and not self.waiting and m.record != "drop":  # columns from what the events carry
            table.set_columns(event_columns(m.record, m.key, m.distinct, events[0]))
        # Only the newest rows of a read are listed: a flood's thousands a second are counted
        # (the findings fold every event received), not drawn.  While the user looks at an
        # older row, the list stands still and the newest wait.
        newest = events[-table.limit:]
        self.skipped += len(events) - len(newest)
        if table.following:
            table.append(newest)
            self._show_event(table.selected())
        else:
            self.skipped += max(0, len(self.waiting) + len(newest) - table.limit)
            self.waiting.extend(newest)
        self._tick()

    def _catch_up(self) -> None:
        """Back on the newest row: the rows that waited meanwhile are listed."""
        table = self.query_one("#live-events", EntryTable)
        if self.waiting and table.following:
            waiting, self.waiting = list(self.waiting), deque(maxlen=table.limit)
            table.append(waiting)
            self._tick()  # the "newer: End" note goes at once, not at the next tick

    def _show_event(self, e: dict | None) -> None:
        if e is not None:
            self.query_one("#event-detail", Static).update(event_text(e))

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._catch_up()
        self._show_event(self.query_one("#live-events", EntryTable).selected())

    def counters(self) -> str:
        r = self.result
        listed = ""
        if self.skipped:
            listed = f"  ·  not listed {self.skipped:,}"
        if self.waiting:
            listed += f"  ·  [yellow]{len(self.waiting):,} newer: End[/yellow]"
        return (f"events [b]{r.get('total', 0):,}[/b]  ·  {len(r['entries'])} distinct  ·  "
                f"lost {lost_count(r):,}{listed}")
