"""Context: what the playbook needs to know, from discovered choices, validated as you type."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Select, Static

from probes.base import Flag
from probes.runtime.params import ParamError

from ..contextvals import NAMESPACE, context_flag, split_namespaced, typed
from ..discovery import choices_for, flow_filters
from ..widgets.param_form import ParamForm
from ..contracts import Validator
from .base import WizardScreen
from .messages import ContextGiven


def optional(validate):
    """Context fields are all optional: empty is fine, anything else must parse."""
    def check(flag: Flag, value: Any) -> Any:
        return None if value in (None, "") else validate(flag, value)
    return check


FLOW_FIELDS = ("src_ip", "dst_ip", "src_port", "dst_port", "l4_protocol", NAMESPACE)


class ContextScreen(WizardScreen):
    HELP = ("Tell netsleuth what you know. Everything is optional: empty means 'any'. Interfaces, "
            "processes and connections are picked from what was found on this host.\n"
            "Errors show under the field as you type; Continue needs every field valid.")
    BINDINGS = [Binding("ctrl+n", "next", "Continue")]

    def __init__(self, playbook, start: str, lib, validator: Validator, inventory=None,
                 initial: dict | None = None):
        super().__init__()
        self.playbook = playbook
        self.start = start
        self.lib = lib
        self.validator = validator
        self.inventory = inventory  # discovery.Inventory: the pickers' choices (None: none)
        self.initial = initial or {}
        self.fields = [lib.context[name] for name in playbook.asks if lib.context[name].kind != "internal"]

    def heading(self) -> str:
        return f"{self.playbook.title}: what do you know?"

    def body(self):
        inv = self.inventory
        names = {cf.name for cf in self.fields}
        self.flow_filters = flow_filters(inv.flows) if inv is not None else []
        with VerticalScroll(id="context-body"):
            yield Static(escape(" ".join(self.playbook.summary.split())), classes="hint")
            if self.flow_filters and names & {"src_ip", "dst_ip"}:
                yield Select([(f.label, i) for i, f in enumerate(self.flow_filters)],
                             prompt="Fill from a connection on this host (optional)", id="flow-picker", compact=True)
            flags = [context_flag(cf) for cf in self.fields]
            options = {cf.name: choices_for(inv, cf.kind, cf.discover) for cf in self.fields}
            yield ParamForm(flags, values=dict(self.initial), options=options,
                            validator=optional(self.validator), labels={cf.name: cf.label for cf in self.fields},
                            id="context-form")
        with Horizontal(classes="buttons"):
            yield Button("Continue (Ctrl+N)", id="continue", variant="primary", compact=True)

    def on_mount(self) -> None:
        first = self.query("#flow-picker") or self.query("#context-form Input, #context-form Select")
        if first:
            first.first().focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "flow-picker" or event.select.is_blank():
            return
        fill = self.flow_filters[int(event.value)].fill
        form = self.query_one(ParamForm)
        present = {f.dest for f in form.flags}
        for dest in FLOW_FIELDS:  # a field this choice leaves out is cleared, not kept from an earlier one
            if dest in present:
                form.set_value(dest, fill.get(dest))

    def on_param_form_changed(self, event: ParamForm.Changed) -> None:
        if not event.form.validate():  # fixed: the error said on Continue is over
            self.clear_error()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.action_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "continue":
            self.action_next()

    def action_next(self) -> None:
        form = self.query_one(ParamForm)
        errors = form.validate()
        if errors:
            self.show_error(f"{len(errors)} field(s) need fixing: " + "; ".join(errors.values()))
            return
        self.clear_error()
        kinds = {cf.name: cf.kind for cf in self.fields}
        try:  # an interface picked in another namespace sets the namespace too
            values = split_namespaced(self.lib, form.values())
        except ParamError as e:
            self.show_error(str(e))
            return
        context = {k: typed(kinds.get(k, ""), v) for k, v in values.items()}
        self.post_message(ContextGiven(self.playbook.id, self.start, context))
