"""Evaluate findings rules on a probe's merged result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .model import Library, Rule, RuleGroup, resolve_params


@dataclass
class Suggested:
    """A next step a finding unlocks, with its parameters already filled in."""

    ref: str
    params: dict[str, Any]
    instead_of: str | None = None  # offered only when that step cannot run (its fallback)


@dataclass
class Finding:
    rule: str
    group: str
    level: str
    title: str
    say: str
    cause: str | None
    advice: list[str]
    evidence_lines: list[str]
    evidence: dict
    explains: bool
    priority: int
    probe: str
    step: str | None
    next: list[Suggested] = field(default_factory=list)
    seen_in: list[str] = field(default_factory=list)  # later steps where the same finding came back
    tier: int = 1  # of the probe that found it: deeper tiers name deeper causes
    split: dict[str, str] | None = None  # {"part": ..., "rest": ...}: see Rule.split
    values: dict = field(default_factory=dict)  # the rule's let values, for the conclusion's sentences

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        d = dict(d)
        d["next"] = [Suggested(**n) for n in d.get("next", [])]
        return cls(**d)

    @property
    def identity(self) -> tuple[str, str]:
        """Two findings with the same rule and title say the same thing (e.g. Summary then Details)."""
        return self.rule, self.title


def _compact(evidence: Any) -> dict:
    """Evidence kept in a finding: the entry (or result) without bulky sample lists."""
    if not isinstance(evidence, dict):
        return {}
    return {k: v for k, v in evidence.items() if k not in ("samples", "entries")}


def _fire(lib: Library, group: RuleGroup, rule: Rule, scope: dict, probe: str, step_ref: str | None) -> Finding:
    spec = lib.probes[probe]
    lines = [t.render(scope) for t in spec.evidence + rule.evidence if t.complete(scope)] if group.each else \
        [t.render(scope) for t in rule.evidence if t.complete(scope)]
    nexts = []
    for n in rule.next:
        if n.when is not None and not n.when(scope):
            continue
        target = lib.steps[n.ref]
        step_scope = {"context": scope["context"], "evidence": scope["evidence"], "result": scope["result"],
                      "step": scope["step"], "let": scope["let"]}
        params = resolve_params(target.params, step_scope)
        params.update(resolve_params(n.params, scope))
        nexts.append(Suggested(n.ref, params))
        for fb in target.fallbacks:
            if fb.when is None or fb.when(step_scope):
                nexts.append(Suggested(fb.ref, resolve_params(lib.steps[fb.ref].params, step_scope), instead_of=n.ref))
    return Finding(
        rule=rule.id, group=group.id, level=rule.level, title=rule.title.render(scope), say=rule.say.render(scope),
        cause=rule.cause.render(scope) if rule.cause else None, advice=[a.render(scope) for a in rule.advice],
        evidence_lines=lines, evidence=_compact(scope["evidence"]), explains=rule.explains, priority=rule.priority,
        probe=probe, step=step_ref, next=nexts, tier=spec.tier,
        split={part: t.render(scope) for part, t in rule.split} if rule.split else None,
        values=dict(scope["let"]),
    )


def evaluate(lib: Library, probe: str, result: dict, context: dict, step: dict | None = None) -> list[Finding]:
    """Findings of every rule group for ``probe`` on its merged ``result``.

    ``step`` describes the step that ran ({ref, probe, params, duration_s, suggested_by}); rules
    may read it as ``step.*``.
    """
    step = step or {"probe": probe}
    findings: list[Finding] = []
    for group in lib.groups_for(probe):
        if group.each == "entries":
            targets = (result.get("entries") or [])[: group.top]
        else:
            targets = [result]
        for target in targets:
            scope = {"context": context, "result": result, "evidence": target, "step": step, "let": {}}
            if group.only is not None and not group.only(scope):
                continue
            for rule in group.rules:
                scope["let"] = {}
                for name, fn in rule.let:  # let values may be used in `when`
                    scope["let"][name] = fn(scope)
                if rule.when is None or rule.when(scope):
                    findings.append(_fire(lib, group, rule, scope, probe, step.get("ref")))
                    if group.first_match:
                        break
    return findings
