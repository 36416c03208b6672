"""Findings of the step just run (sentences + evidence), then the suggested next steps."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from playbooks.engine import rank

from .base import WizardScreen
from .messages import ConclusionWanted, NextStepsWanted, StepChosen
from .step import TIER_NAMES

LEVEL_STYLE = {"critical": "bold red", "warning": "yellow", "notice": "cyan", "info": "dim"}


def finding_markup(f) -> str:
    style = LEVEL_STYLE.get(f.level, "")
    lines = [f"[{style}]{f.level.upper()}[/{style}] [b]{escape(f.title)}[/b]" if style else f"[b]{escape(f.title)}[/b]",
             escape(f.say)]
    if f.evidence_lines:
        lines.append("[b]evidence[/b]")
        lines += [f"  • {escape(e)}" for e in f.evidence_lines]
    if f.cause:
        lines.append(f"[b]likely cause[/b]: {escape(f.cause)}")
    if f.advice:
        lines.append("[b]what to do[/b]")
        lines += [f"  • {escape(a)}" for a in f.advice]
    return "\n".join(lines)


def result_line(view, result) -> str:
    """One sentence about the run itself."""
    if result is None:
        return ""
    r = result.result or {}
    bits = [f"{view.probe} ran {result.duration_s or 0:.0f} s ({result.status})"]
    if "total" in r:
        bits.append(f"{r['total']:,} counted")
    if r.get("entries") is not None:
        bits.append(f"{len(r['entries'])} distinct")
    return ", ".join(bits) + "."


class FindingsScreen(WizardScreen):
    HELP = ("What the probe's results mean, in sentences, with the numbers behind them. "
            "Enter shows the next steps these findings suggest; c goes to the conclusion and report. "
            "Esc goes back to the step's form to run it again.")
    BINDINGS = [Binding("enter", "next", "Next steps", priority=True), Binding("c", "conclude", "Conclusion")]

    def __init__(self, view, result, findings, depth: int):
        super().__init__()
        self.view = view
        self.result = result
        self.findings = rank(findings)  # the most important first, as the conclusion ranks them
        self.depth = depth

    def heading(self) -> str:
        return f"Findings: {self.view.title}"

    def body(self):
        with VerticalScroll(id="findings-body"):
            yield Static(escape(result_line(self.view, self.result)), classes="hint")
            if not self.findings:
                yield Static("Nothing abnormal: no rule matched what this probe saw.", classes="finding")
            for f in self.findings:
                yield Static(finding_markup(f), classes=f"finding level-{f.level}")

    def on_mount(self) -> None:
        self.query_one("#findings-body").focus()

    def action_next(self) -> None:
        self.post_message(NextStepsWanted())

    def action_conclude(self) -> None:
        self.post_message(ConclusionWanted())

    def go_back(self) -> None:
        self.dismiss()  # to the step's form: the result stays until the step runs again


def suggestion_label(v) -> Text:
    tier = TIER_NAMES.get(v.tier, f"tier {v.tier}")
    text = Text()
    text.append(f"{v.title}", style="bold" if not v.unavailable else "dim")
    text.append(f"  [{tier}: {v.probe}]", style="dim")
    if v.suggested_by:
        text.append(f"\n    because: {v.suggested_by}", style="dim")
    if v.unavailable:
        text.append(f"\n    not possible here: {v.unavailable}", style="red")
    return text


class NextStepScreen(WizardScreen):
    HELP = ("Steps the findings so far suggest, most important first. Picking one opens its form "
            "with the filters filled in from the evidence (you can change them). "
            "Steps that cannot run on this host say why. The last entry concludes the diagnosis.")
    BINDINGS = [Binding("c", "conclude", "Conclusion")]

    def __init__(self, suggestions: list):
        super().__init__()
        self.suggestions = suggestions  # StepViews, the most important first

    def heading(self) -> str:
        return "Next step"

    def body(self):
        options = [Option(suggestion_label(v), id=f"s{i}") for i, v in enumerate(self.suggestions)]
        if options:
            options.append(None)
        options.append(Option(Text("Conclude: what was found, what to do, save the report", style="bold"),
                              id="conclude"))
        yield OptionList(*options, id="suggestions")
        yield Static("", id="suggestion-why", classes="hint")

    def on_mount(self) -> None:
        ol = self.query_one("#suggestions", OptionList)
        ol.highlighted = 0
        ol.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        oid = event.option.id or ""
        why = self.query_one("#suggestion-why", Static)
        if oid.startswith("s"):
            v = self.suggestions[int(oid[1:])]
            params = ", ".join(f"{k}={val}" for k, val in v.params.items())
            why.update(escape(" ".join(v.why.split())) + (f"\n[b]filters[/b]: {escape(params)}" if params else "")
                       + f"\n[b]cost[/b]: {escape(v.cost)}")
        else:
            why.update("")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id or ""
        if oid == "conclude":
            self.post_message(ConclusionWanted())
        elif oid.startswith("s"):
            self.post_message(StepChosen(self.suggestions[int(oid[1:])]))

    def action_conclude(self) -> None:
        self.post_message(ConclusionWanted())
