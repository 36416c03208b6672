"""Tables of the live views: the ranked entries of a Summary, the event stream of a Details."""

from __future__ import annotations

from typing import Callable

from textual.binding import Binding
from textual.widgets import DataTable

from vocab.flows import flow_text
from vocab.stacks import function_of

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


FULL_WIDTH = ("flow", "time")  # columns never cut: what tells events apart, and when
SCROLLBAR = 2
MIN_WIDTH = 6  # narrower says nothing: the column is left out (the selected row is shown in full)



class EntryTable(DataTable):
    """Rows built from dicts by column functions; keeps the cursor on refresh.

    Columns are fitted to the terminal: the ``keep`` columns (the flow, which tells two
    faults apart) keep their full text; the others share what is left, cut with "…" (the
    selected row is shown in full below the table)."""

    BINDINGS = [Binding("end", "scroll_bottom", "Newest", show=False)]

    def __init__(self, columns: list[Column], limit: int = 200, keep: tuple[str, ...] = FULL_WIDTH, **kw):
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.columns_spec = columns
        self.limit = limit
        self.keep = tuple(k.lower() for k in keep)
        self.items: list[dict] = []
        self._layout: list[tuple[str, int]] | None = None  # the columns shown: (title, width)

    def on_mount(self) -> None:
        self._build(self.cursor_row)

    def on_resize(self) -> None:
        self._build(self.cursor_row)

    def set_columns(self, columns: list[Column]) -> None:
        """Replace the columns (and the rows)."""
        self.columns_spec = columns
        self.items = []
        self._build(0)

    def show(self, items: list[dict]) -> None:
        """Replace the rows (a Summary's ranked entries)."""
        self.items = list(items[: self.limit])
        self._build(self.cursor_row)

    @property
    def following(self) -> bool:
        """The cursor is on the newest row (or there is none): new rows keep it there."""
        return not self.items or self.cursor_row >= len(self.items) - 1

    def append(self, items: list[dict]) -> None:
        """Add rows at the end (a Details event stream), keeping the newest ``limit``."""
        follow = self.following
        self.items = (self.items + list(items))[-self.limit:]
        self._build(len(self.items) - 1 if follow else self.cursor_row)

    def selected(self) -> dict | None:
        if not self.items:
            return None
        return self.items[min(max(self.cursor_row, 0), len(self.items) - 1)]

    def _build(self, cursor: int) -> None:
        """Columns (fitted to the width) and rows from ``items``; the cursor on row ``cursor``."""
        titles = [title for title, _ in self.columns_spec]
        rows = [[_safe(fn, item) for _, fn in self.columns_spec] for item in self.items]
        width = self.size.width or self.app.size.width
        widths = fit_widths(titles, rows, width - SCROLLBAR, [t.lower() in self.keep for t in titles],
                            pad=2 * self.cell_padding)
        shown = [i for i, w in enumerate(widths) if w]
        layout = [(titles[i], widths[i]) for i in shown]
        if layout != self._layout:  # new columns only when they change: most refreshes only swap rows
            self.clear(columns=True)
            for title, w in layout:
                self.add_column(cut(title, w), width=w)
            self._layout = layout
        else:
            self.clear()
        self.add_rows([[cut(row[i], widths[i]) for i in shown] for row in rows])
        if self.items:
            self.move_cursor(row=min(max(cursor, 0), len(self.items) - 1), animate=False)


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fit_widths(titles: list[str], rows: list[list[str]], room: int, keep: list[bool], pad: int = 0) -> list[int]:
    """Each column's width (0: left out): its longest cell (or title) when everything fits in
    ``room`` (``pad`` more per column shown); otherwise the kept columns stay whole and the
    others share the rest, the narrow ones whole first (water-filling), none under MIN_WIDTH:
    the last ones are left out when even that does not fit."""
    natural = [max([len(t)] + [len(r[i]) for r in rows]) for i, t in enumerate(titles)]
    if sum(natural) + pad * len(titles) <= room:
        return natural
    shown = list(range(len(titles)))
    while True:
        cuttable = [i for i in shown if not keep[i]]
        left = room - sum(natural[i] + pad for i in shown if keep[i]) - pad * len(cuttable)
        if not cuttable or left >= sum(min(natural[i], MIN_WIDTH) for i in cuttable):
            break
        shown.remove(cuttable[-1])
    widths = [natural[i] if i in shown and keep[i] else 0 for i in range(len(titles))]
    cuttable.sort(key=lambda i: natural[i])
    for n, i in enumerate(cuttable):
        widths[i] = min(natural[i], max(left // (len(cuttable) - n), MIN_WIDTH))  # the narrow first: whole
        left -= widths[i]
    return widths


def _safe(fn, item) -> str:
    try:
        return str(fn(item))
    except Exception:  # noqa: BLE001 - one odd record must not break the table
        return "?"
