"""Conclusion: the cause (or what is still open), what to do, and the saved report."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Static

from ..report import CONCLUSION_HEADS
from .base import WizardScreen
from .findings import finding_markup
from .messages import NewDiagnosis, ReportWanted

HEAD_STYLE = {"cause": "green", "open": "yellow", "nothing-ran": "red"}


class ConclusionScreen(WizardScreen):
    HELP = ("The diagnosis so far: the cause when one was found, the fixes the guide suggests, and "
            "what is still open. w writes the report (Markdown, JSON and HTML; to the directory in the "
            "field beside the button, Enter there writes it too) with every step, "
            "its parameters, results and the commands to reproduce it. Esc goes back to pick "
            "another step.")
    BINDINGS = [Binding("w", "save", "Write report"), Binding("n", "new", "New diagnosis")]

    def __init__(self, conclusion, fixes: list[str], report_dir: Path):
        super().__init__()
        self.conclusion = conclusion  # playbooks.engine.Conclusion
        self.fixes = fixes  # read from the host first, then the playbooks' advice
        self.report_dir = report_dir

    def heading(self) -> str:
        return "Conclusion"

    def body(self):
        c = self.conclusion
        with VerticalScroll(id="conclusion-body"):
            style = HEAD_STYLE[c.state]
            yield Static(f"[{style}]{CONCLUSION_HEADS[c.state]}[/{style}] {escape(c.summary)}", id="conclusion-summary")
            if c.chain:
                yield Static(f"[b]{escape(c.chain_title)}[/b]\n" + "\n".join(
                    f"  {'→ ' if i else '  '}{escape(link)}" for i, link in enumerate(c.chain)), id="conclusion-chain")
            for f in c.causes:
                yield Static(finding_markup(f), classes=f"finding level-{f.level}")
            if self.fixes:
                yield Static("[b]Suggested fixes[/b]\n" + "\n".join(f"  • {escape(x)}" for x in self.fixes))
            if c.not_measured:
                yield Static("[b]Not measured on this host[/b]\n" + "\n".join(f"  • {escape(x)}" for x in c.not_measured),
                             id="not-measured")
            others = [f for f in c.findings if f not in c.causes]
            if others:
                yield Static("[b]Other findings[/b]\n" + "\n".join(f"  • {escape(f.title)}" for f in others))
            if c.open_steps:
                yield Static("[b]Still open[/b]\n" + "\n".join(
                    f"  • {escape(s.title)} ({escape(s.probe)})" + (f" — not possible here: {escape(s.unavailable)}"
                                                                    if s.unavailable else "")
                    for s in c.open_steps[:5]))
        yield Static("", id="report-paths")
        with Horizontal(classes="buttons"):
            yield Input(str(self.report_dir), id="report-dir", compact=True,
                        tooltip="Report directory: report.md, report.json and report.html go there")
            yield Button("Write report (w)", id="save", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#conclusion-body").focus()  # ↑↓ / PgUp PgDn scroll it at once; w writes the report

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "report-dir":
            self.action_save()

    def action_save(self) -> None:
        directory = self.query_one("#report-dir", Input).value.strip()
        changed = directory and directory != str(self.report_dir)
        self.post_message(ReportWanted(self, directory if changed else None))

    def show_report(self, paths: list[str], directory: Path) -> None:
        """The report is written: where (the directory stays the session's for its rewrites)."""
        self.report_dir = directory
        self.clear_error()
        self.query_one("#report-paths", Static).update(
            "[b]Report written[/b]\n" + "\n".join(f"  {escape(str(p))}" for p in paths))

    def action_new(self) -> None:
        self.post_message(NewDiagnosis())
