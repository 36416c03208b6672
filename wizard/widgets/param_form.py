"""A probe's flags as a typed form: pickers for discovered things, inputs validated inline.

Validation is the probe's own: each field's value goes through ``Flag.parse``,
and the ParamError message (which names the flag and the accepted form) is
shown under the field as the user types.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from probes.base import Flag, MissingFlag
from probes.runtime.params import ParamError

from .panels import Guarded

PLACEHOLDERS = {
    "ipv4": "any (e.g. 10.0.0.1)", "port": "any (1-65535)", "pid": "process id", "tids": "thread ids: 12,13",
    "vlan": "any (0-4094)", "int": "number", "seconds": "seconds",
}


def yes_no(checked: bool) -> str:
    return "yes" if checked else "no"


class YesNo(Checkbox):
    """A checkbox whose box is empty when off (Textual's shows a dimmed X either way, which
    reads as "checked" on a terminal without colours), labelled yes / no."""

    def __init__(self, checked: bool, **kw):
        super().__init__(yes_no(checked), value=checked, **kw)
        self.BUTTON_INNER = "X" if checked else " "

    def watch_value(self) -> None:
        self.BUTTON_INNER = "X" if self.value else " "
        self.label = yes_no(self.value)


def in_words(error: ParamError, label: str) -> str:
    """A flag's error said with the form's name of the field (the flag is for the command line)."""
    if isinstance(error, MissingFlag):
        return f"{label} is required"
    return f"{label}: {error.value!r} is not valid; expected {error.accepted}"


def field_id(flag: Flag) -> str:
    return "f-" + flag.dest


def choice_options(flag: Flag) -> list[tuple[str, str]]:
    return [(c, c) for c in flag.choices]


Validator = Callable[[Flag, Any], Any]


def parse_with_flag(flag: Flag, value: Any) -> Any:
    return flag.parse(value)


class ParamField(Vertical):
    """One flag: label, typed input (a picker when there are discovered options), error line."""

    def __init__(self, flag: Flag, value: Any, options: Iterable[tuple[str, Any]] = (),
                 validator: Validator = parse_with_flag, label: str | None = None):
        super().__init__(classes="param-field")
        self.flag = flag
        self.label = label or flag.title
        self.initial = value
        self.options = list(options)  # (label, value): discovered choices
        self.validator = validator
        self.error: str | None = None

    def compose(self):
        f = self.flag
        label = self.label + (" *" if f.required else "")
        with Horizontal(classes="param-row"):
            yield Label(label, classes="param-label")
            yield self._editor()
        yield Static("", classes="param-error")
        yield Static(f.help, classes="param-help")

    def _editor(self) -> Widget:
        f, v = self.flag, self.initial
        fid = field_id(f)
        if f.kind == "bool":
            checked = str(v).strip().lower() in ("1", "true", "yes", "on") if v not in (None, "") else bool(f.default)
            return YesNo(checked, id=fid, compact=True)
        if self.options or f.kind == "interface":
            options = [(label, str(value)) for label, value in self.options]
            if v not in (None, "") and str(v) not in [value for _, value in options]:
                options.insert(0, (f"{v} (not found on this host)", str(v)))
            prompt = "any interface" if f.kind == "interface" else "(none)"
            return Select(options, value=str(v) if v not in (None, "") else Select.NULL, allow_blank=True,
                          prompt=prompt, id=fid, compact=True)
        if f.kind in ("choice", "protocol"):
            options = choice_options(f)
            value = str(v).lower() if v not in (None, "") else f.default
            if value not in f.choices:
                value = Select.NULL
            return Select(options, value=value, allow_blank=f.default is None, id=fid, compact=True,
                          prompt="any" if f.kind == "protocol" else "(not set)")
        return Input("" if v is None else str(v), placeholder=PLACEHOLDERS.get(f.kind, ""), id=fid, compact=True)

    # The help line shows while the field has the focus, and under an error (it says what the
    # field wants).  Set here, not with :focus-within in CSS: Textual restyles the field, not its children.
    def on_descendant_focus(self, _event) -> None:
        self.query_one(".param-help", Static).display = True

    def on_descendant_blur(self, _event) -> None:
        self.query_one(".param-help", Static).display = self.error is not None

    def raw(self) -> Any:
        w = self.query_one("#" + field_id(self.flag))
        if isinstance(w, Checkbox):
            return w.value
        if isinstance(w, Select):
            return None if w.is_blank() else w.value
        return w.value.strip() or None

    def validate(self) -> str | None:
        try:
            self.validator(self.flag, self.raw())
            self.error = None
        except ParamError as e:
            self.error = in_words(e, self.label)
        err = self.query_one(".param-error", Static)
        err.update(self.error or "")
        err.display = self.error is not None
        self.set_class(self.error is not None, "-invalid")
        self.query_one(".param-help", Static).display = self.error is not None or self.has_focus_within
        return self.error


class ParamForm(Guarded, Vertical):
    """All flags of one probe.  ``values()`` gives raw values to build the probe with."""

    class Changed(Message):
        def __init__(self, form: "ParamForm"):
            super().__init__()
            self.form = form

    def __init__(self, flags: Iterable[Flag], values: dict[str, Any] | None = None,
                 options: dict[str, list[tuple[str, Any]]] | None = None, hide: Iterable[str] = (),
                 validator: Validator = parse_with_flag, labels: dict[str, str] | None = None,
                 id: str | None = None):
        super().__init__(id=id, classes="param-form")
        hidden = set(hide)
        self.flags = [f for f in flags if f.dest not in hidden and f.name not in hidden]
        self.initial = values or {}
        self.options = options or {}  # dest -> discovered (label, value) choices
        self.validator = validator
        self.labels = labels or {}

    def compose(self):
        for f in self.flags:
            yield ParamField(f, self.initial.get(f.dest), self.options.get(f.dest, ()), self.validator,
                             self.labels.get(f.dest))

    def on_mount(self) -> None:
        self.validate()

    def fields(self) -> list[ParamField]:
        return list(self.query(ParamField))

    def values(self) -> dict[str, Any]:
        """Raw values by dest, only those set and different from the flag's default
        (what the probe, the walk and the command line get)."""
        out = {}
        for field in self.fields():
            v = field.raw()
            default = field.flag.default
            if v in (None, "", False) or (default is not None and str(v) == str(default)):
                continue
            out[field.flag.dest] = v
        return out

    def validate(self) -> dict[str, str]:
        """Errors by flag dest; also shown under each field."""
        return {f.flag.dest: e for f in self.fields() if (e := f.validate())}

    def explain(self, error: ParamError) -> str:
        """An error about one of this form's flags (the probe's check of the whole set), in
        the form's words."""
        field = next((f for f in self.fields() if "--" + f.flag.name == error.flag), None)
        return in_words(error, field.label) if field is not None else str(error)

    def set_value(self, dest: str, value: Any) -> None:
        w = self.query_one("#f-" + dest)
        if isinstance(w, Select):
            w.value = value if value not in (None, "") else Select.NULL
        elif isinstance(w, Checkbox):
            w.value = bool(value)
        else:
            w.value = "" if value is None else str(value)

    def _changed(self, event) -> None:
        field = next((a for a in event.control.ancestors if isinstance(a, ParamField)), None)
        if field is not None:
            field.validate()
        self.post_message(self.Changed(self))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._changed(event)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._changed(event)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._changed(event)
