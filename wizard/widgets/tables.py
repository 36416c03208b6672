"""Tables of the live views: the ranked entries of a Summary, the event stream of a Details."""

from __future__ import annotations

from typing import Callable

from textual.widgets import DataTable

from probes.flows import flow_text
from probes.runtime.stacks import function_of

Column = tuple[str, Callable[[dict], str]]


def entry_site(e: dict) -> str:
    """Where it happened, short: the function of the drop location (or of the stack's first frame)."""
    loc = e.get("function") or e.get("location") or ((e.get("stack") or [None])[0])
    return function_of(loc) if isinstance(loc, str) else "-"


def entry_flow(e: dict) -> str:
    flow = e.get("flow")
    return flow_text(flow) if isinstance(flow, dict) else "-"


def playbook_columns(spec, context: dict) -> list[Column]:
    """The probe's `columns` from probes.yaml (templates over one entry) as table columns."""
    def cell(template):
        return lambda e: template.render({"evidence": e, "context": context, "result": {}, "step": {}, "let": {}},
                                         missing="-")
    return [(title, cell(t)) for title, t in spec.columns]


EVENT_COLUMNS: list[Column] = [
    ("time", lambda e: str(e.get("time", ""))[11:23]),
    ("flow", entry_flow),
    ("reason", lambda e: e.get("reason") or "-"),
    ("site", entry_site),
    ("device", lambda e: e.get("device") or "-"),
    ("cpu", lambda e: str(e.get("cpu", "-"))),
    ("comm", lambda e: e.get("comm") or "-"),
]


# Measurements worth a column in an event stream, when a record has them.
MEASURES = ("duration_us", "wait_us", "latency_us", "total_us", "length_s", "peak_pct", "count")


def event_columns(record_type: str | None, key: tuple[str, ...], distinct: tuple[str, ...] = (),
                  sample: dict | None = None) -> list[Column]:
    """Columns of a Details stream: the drop fields for drops; otherwise time, the probe's
    grouping key and distinct fields (from probes.yaml), and the measurements ``sample`` has."""
    if record_type == "drop":
        return EVENT_COLUMNS
    fields = [f for f in (*key, *distinct) if f != "time"]
    cols: list[Column] = [EVENT_COLUMNS[0]]
    cols += [(f, _field(f)) for f in dict.fromkeys(fields)]
    cols += [(m, _field(m)) for m in MEASURES if m not in fields and m in (sample or {})]
    return cols


def _field(name: str) -> Callable[[dict], str]:
    def get(e: dict) -> str:
        v = e.get(name)
        if isinstance(v, dict) and name == "flow":
            return entry_flow(e)
        return "-" if v is None else str(v)
    return get


class EntryTable(DataTable):
    """Rows built from dicts by column functions; keeps the cursor on refresh."""

    def __init__(self, columns: list[Column], limit: int = 200, **kw):
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.columns_spec = columns
        self.limit = limit
        self.items: list[dict] = []

    def on_mount(self) -> None:
        self.add_columns(*[title for title, _ in self.columns_spec])

    def set_columns(self, columns: list[Column]) -> None:
        """Replace the columns (and the rows)."""
        self.columns_spec = columns
        self.items = []
        self.clear(columns=True)
        self.add_columns(*[title for title, _ in columns])

    def show(self, items: list[dict]) -> None:
        """Replace the rows (a Summary's ranked entries)."""
        self.items = list(items[: self.limit])
        row = self.cursor_row
        self.clear()
        for item in self.items:
            self.add_row(*[_safe(fn, item) for _, fn in self.columns_spec])
        if self.items:
            self.move_cursor(row=min(max(row, 0), len(self.items) - 1))

    def append(self, items: list[dict]) -> None:
        """Add rows at the end (a Details event stream), keeping at most ``limit``."""
        follow = not self.items or self.cursor_row >= len(self.items) - 1
        for item in items:
            self.items.append(item)
            self.add_row(*[_safe(fn, item) for _, fn in self.columns_spec])
        if len(self.items) > self.limit:
            self.show(self.items[-self.limit:])
        if follow and self.items:
            self.move_cursor(row=len(self.items) - 1)

    def selected(self) -> dict | None:
        if not self.items:
            return None
        return self.items[min(max(self.cursor_row, 0), len(self.items) - 1)]


def _safe(fn, item) -> str:
    try:
        return str(fn(item))
    except Exception:  # noqa: BLE001 - one odd record must not break the table
        return "?"
