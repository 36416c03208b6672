"""A step to run: why, cost, the probe's filters prefilled (editable), the equivalent command."""

from __future__ import annotations

from rich.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Static

from playbooks.engine import first_sentence
from probes.runtime.params import ParamError

from ..backends import flag_values
from ..contracts import Backend
from ..contextvals import typed
from ..flagnames import names
from ..guestimport import GuestFileError, guest_command, load_guest_file, runs_in_guest
from ..replay import recorded_with, same_filters
from ..discovery import choices_for
from ..widgets.panels import kv_lines
from ..widgets.param_form import ParamForm
from .base import WizardScreen
from .messages import Back, GuestRunImported, RunRequested, StepChosen

TIER_NAMES = {1: "Summary", 2: "Details", 3: "Root cause"}
# Flags that narrow what a Details probe reports to one flow, device or process.
FILTER_KINDS = ("ipv4", "port", "interface", "mac", "pid", "tids")
UNFILTERED = ("[yellow]No filter set[/yellow]: this Details probe reports [b]every[/b] matching event on the host "
              "(each dropped packet, say). Fill in the flow (at least the destination) or run the Summary "
              "first: it finds the flow and fills these fields for you.")


def unfiltered(view, flags, values: dict) -> bool:
    """A Details step (one event each) with none of its flow / device / process filters set."""
    filters = [f for f in flags if f.kind in FILTER_KINDS]
    return view.tier == 2 and bool(filters) and not any(values.get(f.dest) not in (None, "") for f in filters)
# Flags the wizard sets itself: it reads the probe every second and stops it at the duration.
HIDDEN_FLAGS = ("interval",)



def found_here(step, flags, values: dict, context: dict, found: dict[str, str]) -> list[str]:
    """A line per filter prefilled with a value this host found (not one the user gave), saying how."""
    dest = {f.name: f.dest for f in flags}
    out = []
    for p in step.params:
        value = values.get(dest.get(p.flag, ""))
        out += [f"--{p.flag} {value}: {how}, found on this host; change it below if that is not the one"
                for name, how in found.items() if name in p.context_fields and value not in (None, "")
                and str(value) == str(context.get(name))]
    return out


def replay_note(backend: Backend, probe: str, values: dict) -> str:
    """In a replay: the filters of the recorded run this step would show (markup), else ""."""
    run = backend.recorded_run(probe, values)
    if run is None:
        return ""
    if same_filters(run.params, values):
        return f"[b]replay[/b]: {escape(recorded_with(run))}"
    return f"[yellow]A replay shows the run as recorded, not these filters[/yellow]: {escape(recorded_with(run))}"


class StepScreen(WizardScreen):
    HELP = ("The probe this step runs, with its filters already filled in from what you said and "
            "what earlier steps found. Change any field (errors show as you type), then run it.\n"
            "The command line below is the same probe outside the wizard.")
    BINDINGS = [Binding("ctrl+r", "run", "Run probe")]

    def __init__(self, view, depth: int, backend: Backend, library, inventory=None, alternatives: list | tuple = (),
                 context: dict | None = None, found: dict[str, str] | None = None):
        super().__init__()
        self.view = view
        self.depth = depth
        self.backend = backend
        self.library = library  # the playbook library: an imported guest file is checked against it
        self.context = context or {}  # the walk's context
        self.found = found or {}  # context field -> how this host found it (the user did not say)
        self.inventory = inventory  # discovery.Inventory: the pickers' choices (None: none)
        # This step cannot run here: the steps the playbook offers instead that can (its `fallback:`).
        self.alternatives = list(alternatives)
        self.instead = self.alternatives[0] if self.alternatives else None

    def heading(self) -> str:
        return f"Next step: {self.view.title}"

    def body(self):
        v = self.view
        flags = self.backend.flags(v.probe)
        values = flag_values(flags, v.params)
        if "duration" in {f.dest for f in flags} and "duration" not in values:
            values["duration"] = v.duration
        with VerticalScroll(id="step-body"):
            yield Static(kv_lines([
                ("probe", f"{v.probe} (tier {v.tier}: {TIER_NAMES.get(v.tier, '')})"),
                ("cost", v.cost),
                ("runs for", f"{v.duration:g} s (stop any time)"),
                ("because", v.suggested_by),
            ], width=9), id="step-facts")
            yield Static("", id="found-here")  # filled with the form's values (_update_command)
            yield Static(escape(" ".join(v.why.split())), classes="hint")
            if v.unavailable and runs_in_guest(v.probe):
                yield Static(f"[b]Run it inside the VM[/b] (it watches the guest's kernel):\n"
                             f"  {escape(guest_command(v.probe, v.duration))}\n"
                             "then copy the file here and import it: the same rules judge it.", id="guest-how")
                yield Input(placeholder="path of the file it wrote, e.g. /tmp/virtnet-poll-monitor.json",
                            id="guest-file")
            elif v.unavailable:
                yield Static(f"[b]Cannot run on this host:[/b] {escape(v.unavailable)}\n"
                             f"[b]What it would add:[/b] {escape(first_sentence(v.why))}", classes="unavailable")
                if self.alternatives:
                    yield Static("[b]Instead, what can run here[/b] (Ctrl+R: the first):\n" + "\n".join(
                        f"  • {escape(a.title)} ({escape(a.probe)}, tier {a.tier}: {TIER_NAMES.get(a.tier, '')})"
                        for a in self.alternatives), classes="hint", id="instead")
                else:
                    yield Static("Nothing else can stand in for it on this host. Esc goes back to pick another "
                                 "step.", classes="hint", id="instead")
            if flags and not v.unavailable:  # a probe that cannot run has nothing to fill in
                options = {f.dest: choices_for(self.inventory, f.kind, netns=values.get("netns")) for f in flags}
                yield ParamForm(flags, values, options=options, hide=HIDDEN_FLAGS,
                                validator=self.backend.validate, id="step-form")
        yield Static("", id="replay-note")
        yield Static(UNFILTERED, id="unfiltered")
        yield Static("", id="command-line")
        with Horizontal(classes="buttons"):
            if v.unavailable and runs_in_guest(v.probe):
                yield Button("Import the guest's file", id="import", variant="primary", compact=True)
            if not v.unavailable:
                yield Button("Run (Ctrl+R)", id="run", variant="primary", compact=True)
            for i, alt in enumerate(self.alternatives):
                yield Button(f"Instead: {alt.probe}" + (" (Ctrl+R)" if i == 0 else ""), id=f"instead-{i}",
                             variant="primary" if i == 0 else "default", compact=True)

    def on_mount(self) -> None:
        self._update_command()
        fields = self.query("#step-form Input, #step-form Select, #step-form Checkbox")
        buttons = self.query("#run, #instead-0")
        if buttons:
            buttons.first().focus()
        elif fields:
            fields.first().focus()

    def form(self) -> ParamForm | None:
        forms = self.query(ParamForm)
        return forms.first() if forms else None

    def _update_command(self) -> None:
        form = self.form()
        found = found_here(self.library.steps[self.view.ref], form.flags, form.values(), self.context,
                           self.found) if form is not None else []
        note = self.query_one("#found-here", Static)
        note.update("\n".join(f"[b]From this host:[/b] {escape(line)}" for line in found))
        note.display = bool(found)
        self.query_one("#unfiltered", Static).display = form is not None and unfiltered(
            self.view, form.flags, form.values())
        line = self.query_one("#command-line", Static)
        if form is None:
            line.update("")
            return
        errors = form.validate()
        if errors:
            line.update("[b]command:[/b] [dim](fix the fields marked in red)[/dim]")
            return
        try:
            cmd = self.backend.command_line(self.view.probe, form.values())
        except (ParamError, KeyError) as e:
            line.update(f"[b]command:[/b] [dim]{escape(str(e))}[/dim]")
            return
        line.update(f"[b]command:[/b] sudo {escape(cmd)}")
        note = replay_note(self.backend, self.view.probe, form.values())
        self.query_one("#replay-note", Static).update(note)
        self.query_one("#replay-note", Static).display = bool(note)

    def on_param_form_changed(self, event: ParamForm.Changed) -> None:
        self._update_command()
        if not event.form.validate():  # fixed: the error said when Run was pressed is over
            self.clear_error()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "guest-file":
            self.action_import()
        else:
            self.action_run()

    def action_import(self) -> None:
        """The guest's --json file, checked, then judged like a run (a bad file: one line, nothing lost)."""
        path = self.query_one("#guest-file", Input).value.strip()
        if not path:
            self.show_error("give the path of the file the probe wrote inside the VM")
            return
        try:
            run = load_guest_file(path, self.library)
        except GuestFileError as e:
            self.show_error(str(e))
            return
        if run.probe != self.view.probe:
            self.show_error(f"{path}: records of {run.probe}, not of {self.view.probe}")
            return
        self.clear_error()
        self.post_message(GuestRunImported(run, self.view.params, self.depth))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "import":
            self.action_import()
        elif event.button.id == "run":
            self.action_run()
        elif (event.button.id or "").startswith("instead-"):
            self.post_message(StepChosen(self.alternatives[int(event.button.id.split("-", 1)[1])]))

    def action_run(self) -> None:
        if self.instead is not None:
            self.post_message(StepChosen(self.instead))
            return
        if self.view.unavailable:
            self.show_error(f"{self.view.probe} cannot run here: {self.view.unavailable}")
            return
        form = self.form()
        values = form.values() if form else {}
        errors = form.validate() if form else {}
        if errors:
            self.show_error(f"{len(errors)} field(s) need fixing: " + "; ".join(errors.values()))
            return
        try:
            self.backend.check(self.view.probe, values)  # the whole set, as the probe will see it
        except ParamError as e:
            self.show_error(form.explain(e) if form else str(e))
            return
        self.clear_error()
        kinds = {f.name: f.kind for f in self.backend.flags(self.view.probe)}
        # The walk keeps filters, typed as the prefilled ones are (a port stays a number, so an
        # unchanged form is no edit); how long the probe runs is the run's, not the step's
        # identity (as in the autopilot), so an unchanged step is recognised as already run.
        params = {k: typed(kinds.get(k, ""), v) for k, v in names(values).items() if k != "duration"}
        self.post_message(RunRequested(params, values, self.depth))

    def go_back(self) -> None:
        self.post_message(Back(self.depth))
