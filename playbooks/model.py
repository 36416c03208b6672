"""What a loaded playbook library is made of (built and validated by loader.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .expr import Condition, Template
from .merge import MergeSpec, ProbeChart  # noqa: F401 - ProbeChart: part of the model

LEVELS = ("info", "notice", "warning", "critical")


def level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


@dataclass(frozen=True)
class ContextField:
    """One thing the wizard asks the user (or discovers), also a `diagnose` flag."""

    name: str
    kind: str  # ipv4 | port | protocol | interface | choice | int | pid | internal
    label: str
    help: str = ""
    choices: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0
    discover: str | None = None  # hint for the app: interfaces, vm-interfaces, process:NAME, ...

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    title: str
    tier: int
    cost: str
    duration: float
    flags: tuple[str, ...]
    merge: MergeSpec
    description: str = ""
    guide: str = ""
    columns: tuple[tuple[str, Template], ...] = ()  # table of entries: (title, template over evidence)
    evidence: tuple[Template, ...] = ()  # default evidence lines of a finding on this probe
    chart: ProbeChart | None = None


@dataclass(frozen=True)
class Param:
    flag: str
    template: Template
    when: Condition | None = None

    def value(self, scope: dict) -> Any:
        if self.when is not None and not self.when(scope):
            return None
        v = self.template.value(scope)
        return None if v == "" else v

    @property
    def context_fields(self) -> list[str]:
        """The context fields this param's template reads (``{context.vm_pid}``)."""
        return re.findall(r"context\.(\w+)", str(self.template.source))


def resolve_params(params: tuple[Param, ...], scope: dict) -> dict[str, Any]:
    """Flag -> value for every param whose template has a value (missing ones are left out)."""
    out = {}
    for p in params:
        v = p.value(scope)
        if v is not None:
            out[p.flag] = v
    return out


@dataclass(frozen=True)
class Fallback:
    """A step offered instead when a step's probe cannot run here (when its condition holds)."""

    ref: str
    when: Condition | None = None


@dataclass(frozen=True)
class Step:
    ref: str  # "playbook/step"
    probe: str
    title: str
    why: str  # also what this step would add, said when it cannot run here
    duration: float
    params: tuple[Param, ...]
    fallbacks: tuple[Fallback, ...] = ()  # in order of preference

    @property
    def fallback(self) -> str | None:
        """The first step offered instead (the others come after it)."""
        return self.fallbacks[0].ref if self.fallbacks else None


@dataclass(frozen=True)
class Answer:
    say: str
    goto: str  # ref of a question or step
    default: bool = False


@dataclass(frozen=True)
class Question:
    ref: str
    ask: str
    help: str
    answers: tuple[Answer, ...]

    @property
    def default_index(self) -> int:
        return next((i for i, a in enumerate(self.answers) if a.default), 0)


@dataclass(frozen=True)
class Playbook:
    id: str
    title: str
    summary: str
    asks: tuple[str, ...]
    start: str
    file: str


@dataclass(frozen=True)
class NextStep:
    ref: str
    params: tuple[Param, ...] = ()
    when: Condition | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    level: str
    title: Template
    say: Template
    cause: Template | None
    advice: tuple[Template, ...]
    when: Condition | None
    let: tuple[tuple[str, Callable[[dict], Any]], ...] = ()
    evidence: tuple[Template, ...] = ()  # extra lines after the probe's default ones
    next: tuple[NextStep, ...] = ()
    explains: bool = False
    priority: int = 0
    # The guide's first lesson: this finding splits the symptom in two — the part the
    # probe's own causes account for, and the rest that other steps must explain.
    split: tuple[tuple[str, Template], ...] = ()  # (("part", ...), ("rest", ...))


@dataclass(frozen=True)
class RuleGroup:
    """Rules evaluated together: per entry (``each: entries``) or once on the whole result;
    with ``first_match`` only the first matching rule fires (per entry)."""

    id: str
    file: str
    probes: tuple[str, ...]
    rules: tuple[Rule, ...]
    each: str | None = None
    top: int = 5
    only: Condition | None = None
    first_match: bool = True


@dataclass(frozen=True)
class QuickRow:
    problem: str
    summary: str
    details: str | None
    looks_at: str


@dataclass(frozen=True)
class ChainLink:
    """One link of a chain: what to say when one of these rules found something
    (rules in order of preference, each with its sentence over that finding)."""

    id: str
    title: str
    say: tuple[tuple[str, Template], ...]  # (rule id, template over the finding's evidence)


@dataclass(frozen=True)
class Chain:
    """How findings of different steps connect (the guide's case: lock holder → waiting
    threads → late upcalls → packets late in OVS → "loss" that is latency), root first."""

    id: str
    title: str
    links: tuple[ChainLink, ...]


@dataclass
class Library:
    context: dict[str, ContextField]
    probes: dict[str, ProbeSpec]
    playbooks: dict[str, Playbook]
    questions: dict[str, Question]
    steps: dict[str, Step]
    groups: list[RuleGroup]
    quick_reference: list[QuickRow] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)

    def node(self, ref: str) -> Question | Step:
        if ref in self.questions:
            return self.questions[ref]
        if ref in self.steps:
            return self.steps[ref]
        raise KeyError(f"no question or step {ref!r} in the playbooks")

    def groups_for(self, probe: str) -> list[RuleGroup]:
        return [g for g in self.groups if probe in g.probes]

    def group(self, group_id: str) -> RuleGroup | None:
        return next((g for g in self.groups if g.id == group_id), None)

    def playbook_of(self, ref: str) -> Playbook:
        return self.playbooks[ref.split("/", 1)[0]]
