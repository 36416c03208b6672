"""A playbook question ("do you know where it drops?"): pick an answer."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from .base import WizardScreen
from .messages import Answered, Back


class QuestionScreen(WizardScreen):
    HELP = "Pick the answer that fits; the recommended one is highlighted. Esc goes back."

    def __init__(self, question, depth: int):
        super().__init__()
        self.question = question
        self.depth = depth  # walk frames when this screen was shown: Esc undoes only our move

    def heading(self) -> str:
        return self.question.ask

    def body(self):
        q = self.question
        yield OptionList(*[Option(Text(("→ " if a.default else "  ") + a.say), id=str(i))
                           for i, a in enumerate(q.answers)], id="answers")
        if q.help:
            yield Static(escape(" ".join(q.help.split())), classes="hint")

    def on_mount(self) -> None:
        answers = self.query_one("#answers", OptionList)
        answers.highlighted = self.question.default_index
        answers.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.post_message(Answered(int(event.option.id)))

    def go_back(self) -> None:
        self.post_message(Back(self.depth))
