"""Modal dialogs: confirm quit, help, error."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Markdown, Static

from .base import WizardModal

GENERAL_HELP = """\
[b]netsleuth[/b] walks you from a symptom to its cause, running the probes for you.

[b]Keys[/b] (also shown in the footer)
  ↑ ↓ / Tab     move between choices and fields
  Enter         choose / confirm
  Esc           go back one step
  ?             this help
  q / Ctrl+Q    quit (asks first; the session is saved and can be resumed)

[b]Tiers[/b]
  1 Summary     cheap in-kernel counting: where does it happen?
  2 Details     one event per packet, with filters: which packets, exactly?
  3 Root cause  stacks, locks, CPU: why?

Every probe the wizard runs is also a plain command (`netsleuth probe …`),
shown on the step screen so you can rerun it by hand."""

# The diagnosis guide shipped with netsleuth (the wizard's help opens it).
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


class Confirm(WizardModal):
    """A yes/no question; dismissed with True (y) or False (n, Esc).  "No" has the focus."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    TITLE, YES, NO = "Are you sure?", "Yes (y)", "No (n)"

    def __init__(self, detail: str):
        super().__init__()
        self.detail = detail

    def compose(self):
        with Vertical(classes="dialog"):
            yield Static(f"[b]{escape(self.TITLE)}[/b]", classes="dialog-title")
            yield Static(escape(self.detail), classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.YES, id="yes", variant="error", compact=True)
                yield Button(self.NO, id="no", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmQuit(Confirm):
    BINDINGS = [Binding("y", "answer(True)", "Quit"), Binding("n,escape", "answer(False)", "Stay")]
    TITLE, YES, NO = "Quit netsleuth?", "Quit (y)", "Stay (n)"


class ConfirmDiscard(Confirm):
    BINDINGS = [Binding("y", "answer(True)", "Discard"), Binding("n,escape", "answer(False)", "Keep running")]
    TITLE, YES, NO = "Discard this run?", "Discard (y)", "Keep running (n)"


class GuideScreen(WizardModal):
    """docs/guide.md, readable inside the wizard (scroll with the arrows, PgUp/PgDn)."""

    BINDINGS = [Binding("escape,q", "dismiss_modal", "Close")]

    def compose(self):
        try:
            text = GUIDE.read_text(encoding="utf-8")
        except OSError as e:
            text = f"# The guide\n\nIt should be at `{GUIDE}` but cannot be read: {e.strerror}."
        with VerticalScroll(classes="dialog help guide", id="guide-scroll"):
            yield Markdown(text, id="guide")
            yield Static(f"[dim]{escape(str(GUIDE))} — Esc closes[/dim]")

    def on_mount(self) -> None:
        self.query_one("#guide-scroll").focus()


class HelpScreen(WizardModal):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss_modal", "Close"), Binding("g", "guide", "The guide")]

    def action_guide(self) -> None:
        self.app.push_screen(GuideScreen())

    def __init__(self, screen_help: str, keys: list[tuple[str, str]]):
        super().__init__()
        self.screen_help = screen_help
        self.keys = keys

    def compose(self):
        with VerticalScroll(classes="dialog help"):
            yield Static("[b]The method[/b] behind the wizard (decision tree, tools, a worked case): "
                         "[b]g[/b] opens the guide, docs/guide.md", classes="dialog-body", id="guide-link")
            if self.screen_help:
                yield Static(self.screen_help, classes="dialog-body")
            if self.keys:
                lines = "\n".join(f"  {escape(k):<12}  {escape(d)}" for k, d in self.keys)
                yield Static("[b]On this screen[/b]\n" + lines, classes="dialog-body")
            yield Static(GENERAL_HELP, classes="dialog-body")
            yield Static("[dim]Esc or ? closes this help[/dim]")


class ErrorDialog(WizardModal):
    BINDINGS = [Binding("escape,enter", "dismiss_modal", "Close")]

    def __init__(self, message: str, log_path: str | None):
        super().__init__()
        self.message = message
        self.log_path = log_path

    def compose(self):
        with Vertical(classes="dialog error-dialog"):
            yield Static("[b]Something went wrong[/b]", classes="dialog-title")
            yield Static(escape(self.message), classes="dialog-body")
            if self.log_path:
                yield Static(f"[dim]details: {escape(self.log_path)}[/dim]")
            yield Button("Close (Esc)", id="close", variant="primary", compact=True)

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)
