"""What the screens ask of the app: one message each, handled with @on in wizard/app.py.

The screens get what they show when they are made (the app composes them); they
never reach into the app: they post one of these, and it bubbles up to the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from textual.message import Message


@dataclass
class PreflightDone(Message):
    """The host is checked: its capabilities (doctor report) and inventory, None if it failed."""

    doctor: Optional[dict]
    inventory: Any  # discovery.Inventory


@dataclass
class PreflightAccepted(Message):
    """Continue pressed on the preflight screen."""


@dataclass
class SymptomChosen(Message):
    playbook_id: str
    start: str  # the playbook's start, or a quick-reference row's step


@dataclass
class ContextGiven(Message):
    """The context form is filled in: start the walk (and its session)."""

    playbook_id: str
    start: str
    context: dict


@dataclass
class Answered(Message):
    choice: int


@dataclass
class StepChosen(Message):
    view: Any  # playbooks.engine.StepView


@dataclass
class Back(Message):
    """Esc on a question or step: undo the walk's move that showed the screen, if it is the last."""

    depth: int


@dataclass
class RunRequested(Message):
    params: dict  # the walk's (flag names, typed)
    values: dict  # the probe's options (dests), validated
    depth: int


@dataclass
class GuestRunImported(Message):
    """A guest probe's --json file, checked: the step runs from its records."""

    run: Any  # guestimport.RecordedRun
    params: dict
    depth: int


@dataclass
class RunEnded(Message):
    """A live view's run is over: ``outcome`` when it ran, else ``failure`` (a ProbeFinished)."""

    screen: Any  # LiveScreen
    outcome: Any = None  # steprun.StepOutcome
    failure: Any = None


@dataclass
class NextStepsWanted(Message):
    pass


@dataclass
class ConclusionWanted(Message):
    pass


@dataclass
class ReportWanted(Message):
    """Write the report to ``directory`` (None: where it went before, or the session's)."""

    screen: Any  # ConclusionScreen: shown where the report went
    directory: Optional[str]


@dataclass
class NewDiagnosis(Message):
    pass

