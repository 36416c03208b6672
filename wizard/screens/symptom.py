"""Symptom: what is wrong?  The guide's four symptoms, and its quick-reference rows as shortcuts."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.binding import Binding
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from playbooks.engine import first_sentence

from .base import WizardScreen
from .dialogs import GuideScreen
from .messages import SymptomChosen


class SymptomScreen(WizardScreen):
    HEADING = "What is the problem?"
    # Said in the footer (the list's own keys are not): how to move and choose.
    BINDINGS = [Binding("up", "move('up')", "Move", key_display="↑↓", priority=True),
                Binding("down", "move('down')", "Move", show=False, priority=True),
                Binding("enter", "choose", "Choose", key_display="⏎", priority=True),
                Binding("g", "guide", "The guide")]
    HELP = ("Pick the symptom you see. netsleuth then asks for what it needs to know (addresses, "
            "interface…) and runs the cheap Summary probe first.\n"
            "The rows under 'Jump straight to' are the guide's quick-reference table: they start at "
            "that problem's Summary step.")

    def __init__(self, lib, recorded: str | None = None):
        super().__init__()
        self.lib = lib
        self.recorded = recorded  # a replay's symptom: the one to pick

    def body(self):
        lib, recorded = self.lib, self.recorded
        options: list[Option | None] = []
        for pb in sorted(lib.playbooks.values(), key=_guide_order):
            mark = "  [green](the recording's: replays it)[/green]" if pb.id == recorded else ""
            label = Text.from_markup(f"[b]{escape(pb.title)}[/b]{mark}\n  "
                                     f"[dim]{escape(first_sentence(pb.summary))}[/dim]")
            options.append(Option(label, id="symptom:" + pb.id))
        if lib.quick_reference:
            options.append(None)
            options.append(Option(Text.from_markup("[dim]Jump straight to (quick reference):[/dim]"), disabled=True))
            for i, row in enumerate(lib.quick_reference):
                options.append(Option(Text.from_markup(f"  {escape(row.problem)} [dim]— {escape(row.looks_at)}[/dim]"),
                                      id=f"quick:{i}"))
        yield OptionList(*options, id="symptoms")

    def on_mount(self) -> None:
        symptoms = self.query_one("#symptoms", OptionList)
        symptoms.focus()
        if self.recorded is not None:
            symptoms.highlighted = symptoms.get_option_index("symptom:" + self.recorded)

    def action_move(self, way: str) -> None:
        getattr(self.query_one("#symptoms", OptionList), f"action_cursor_{way}")()

    def action_choose(self) -> None:
        self.query_one("#symptoms", OptionList).action_select()

    def action_guide(self) -> None:
        self.app.push_screen(GuideScreen())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        kind, _, key = (event.option.id or "").partition(":")
        lib = self.lib
        if kind == "symptom":
            self.post_message(SymptomChosen(key, lib.playbooks[key].start))
        elif kind == "quick":
            row = lib.quick_reference[int(key)]
            self.post_message(SymptomChosen(lib.playbook_of(row.summary).id, row.summary))


# The guide's decision tree order; playbooks it does not name come after.
GUIDE_ORDER = ("packet-loss", "high-latency", "ovs-slow", "vm-network")


def _guide_order(pb) -> tuple[int, str]:
    return (GUIDE_ORDER.index(pb.id) if pb.id in GUIDE_ORDER else len(GUIDE_ORDER), pb.title)
