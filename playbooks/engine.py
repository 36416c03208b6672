"""Walk a playbook: where we are, what was found, what to do next.

The walk is event-sourced: every move (answer, choose, edit, result, back) is
an event dict, applied to the state and handed to ``on_event`` (the session
journal).  Replaying the same events on a fresh Walk gives the same state,
which is how an interrupted session resumes.

The state is a stack of frames, one per question or step visited; ``back()``
pops the top frame and forgets what was found there.  Findings are those of
the frames on the stack; suggestions are the next steps they unlock, ranked.
Nothing here imports BCC or a UI: probes are known only by name, and whether
one can run here is asked of the injected ``availability(probe) -> reason | None``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from .model import Library, Question, Step, level_rank, resolve_params
from .rules import Finding, evaluate

Availability = Callable[[str], "str | None"]
NOT_IMPLEMENTED = "not implemented in this version of netsleuth"


class WalkError(ValueError):
    """A move that makes no sense here (answering a step, choosing an unknown step...)."""


@dataclass
class StepResult:
    status: str  # ok | error | unavailable | stopped
    result: dict | None
    duration_s: float | None = None
    started: str | None = None
    error: str | None = None
    command: str | None = None
    params: dict = field(default_factory=dict)  # what actually ran (after edits)
    attached: str | None = None  # how the probe hooked the kernel, as its start line said


@dataclass
class Frame:
    ref: str
    params: dict = field(default_factory=dict)  # step params (resolved, then edited)
    suggested_by: str | None = None  # rule id of the finding that proposed this step
    result: StepResult | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class StepView:
    """A step as the UI and the autopilot see it."""

    ref: str
    probe: str
    title: str
    why: str
    tier: int
    cost: str
    duration: float
    params: dict
    unavailable: str | None
    suggested_by: str | None = None  # finding title
    level: str | None = None  # level of that finding
    fallback: str | None = None  # when this one cannot run: the step to offer instead (Walk.fallback)

    def __post_init__(self) -> None:
        # A "duration" param (a template over the finding's evidence, e.g. as long as the run
        # that saw the trouble) is how long the step runs, not one of its filters.
        run = self.params.pop("duration", None)
        if isinstance(run, (int, float)) and not isinstance(run, bool) and run > 0:
            self.duration = float(run)


@dataclass
class Conclusion:
    cause_found: bool
    causes: list[Finding]  # deepest tier first: a root cause before the drop sites it lies under
    findings: list[Finding]
    summary: str
    fixes: list[str]
    open_steps: list[StepView]
    state: str = "open"  # cause | open | nothing-ran
    chain: list[str] = field(default_factory=list)  # the links found, root first (see chains.yaml)
    chain_title: str = ""
    # Steps that could not run here: what they would have measured and why they could not.
    not_measured: list[str] = field(default_factory=list)


def rank(findings: list[Finding]) -> list[Finding]:
    """Most important first: level, then the rule's priority, then the order they came in."""
    order = {id(f): i for i, f in enumerate(findings)}
    return sorted(findings, key=lambda f: (-level_rank(f.level), -f.priority, order[id(f)]))


def rank_causes(causes: list[Finding]) -> list[Finding]:
    """Causes found by deeper tiers first (a lock holder explains what the Summary saw)."""
    order = {id(f): i for i, f in enumerate(rank(causes))}
    return sorted(causes, key=lambda f: (-f.tier, order[id(f)]))


def _with_seen(f: Finding, steps: list[str]) -> Finding:
    g = copy.copy(f)
    g.seen_in = list(steps)
    return g


def same_params(a: dict, b: dict) -> bool:
    """The same filters (how long a step runs is the run's, not part of what it looks at)."""
    return ({k: str(v) for k, v in a.items() if k != "duration"} ==
            {k: str(v) for k, v in b.items() if k != "duration"})


class Walk:
    def __init__(self, lib: Library, context: dict | None = None, symptom: str | None = None, start: str | None = None,
                 availability: Availability | None = None, on_event: Callable[[dict], None] | None = None):
        self.lib = lib
        self.context = {k: v for k, v in (context or {}).items() if v not in (None, "")}
        unknown = [k for k in self.context if k not in lib.context]
        if unknown:
            raise WalkError(f"unknown context field(s): {', '.join(unknown)}")
        if start is None:
            if symptom not in lib.playbooks:
                raise WalkError(f"unknown symptom {symptom!r}; known: {', '.join(sorted(lib.playbooks))}")
            start = lib.playbooks[symptom].start
        lib.node(start)  # KeyError early for a bad start
        self.symptom = symptom or start.split("/", 1)[0]
        self._availability = availability or (lambda name: None)
        self.on_event = on_event
        self.events: list[dict] = []
        self.frames: list[Frame] = []
        self._emit({"event": "start", "symptom": self.symptom, "start": start, "context": self.context})

    # construction from a journal ------------------------------------------------------
    @classmethod
    def from_events(cls, lib: Library, events: list[dict], availability: Availability | None = None,
                    on_event: Callable[[dict], None] | None = None) -> "Walk":
        """Rebuild a walk from its journal events (the first one is "start")."""
        if not events or events[0].get("event") != "start":
            raise WalkError("a walk's events begin with a 'start' event")
        first = events[0]
        walk = cls(lib, first.get("context"), first.get("symptom"), first.get("start"), availability, None)
        for e in events[1:]:
            walk.apply(e)
        walk.on_event = on_event
        return walk

    def _emit(self, event: dict) -> None:
        self.apply(event)
        if self.on_event is not None:
            self.on_event(event)

    def apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.frames = [self._frame(event["start"])]
        elif kind == "answer":
            q = self._current_question()
            i = int(event["choice"])
            if not 0 <= i < len(q.answers):
                raise WalkError(f"answer {i} out of range: {q.ask!r} has {len(q.answers)} answers")
            self.frames.append(self._frame(q.answers[i].goto))
        elif kind == "choose":
            frame = self._frame(event["step"], event.get("params"), event.get("suggested_by"))
            self.frames.append(frame)
        elif kind == "params":
            frame = self._current_frame_of_step()
            frame.params = dict(event["params"])
        elif kind == "result":
            self._apply_result(event)
        elif kind == "back":
            if len(self.frames) > 1:
                self.frames.pop()
        elif kind in ("note", "end"):
            pass  # journal-only events
        else:
            raise WalkError(f"unknown event {kind!r}")
        self.events.append(event)

    def _frame(self, ref: str, params: dict | None = None, suggested_by: str | None = None) -> Frame:
        try:
            node = self.lib.node(ref)
        except KeyError as e:
            raise WalkError(str(e.args[0])) from None
        if isinstance(node, Step) and params is None:
            params = resolve_params(node.params, {"context": self.context, "evidence": {}, "result": {},
                                                  "step": {}, "let": {}})
        return Frame(ref, dict(params or {}), suggested_by)

    def _apply_result(self, e: dict) -> None:
        frame = self._current_frame_of_step()
        step = self.lib.steps[frame.ref]
        r = StepResult(e["status"], e.get("result"), e.get("duration_s"), e.get("started"), e.get("error"),
                       e.get("command"), dict(e.get("params", frame.params)), e.get("attached"))
        frame.result = r
        frame.findings = []
        if r.status in ("ok", "stopped") and r.result is not None:
            info = {"ref": step.ref, "probe": step.probe, "params": r.params, "duration_s": r.duration_s,
                    "suggested_by": frame.suggested_by}
            frame.findings = evaluate(self.lib, step.probe, r.result, self.context, info)

    # where we are ----------------------------------------------------------------------
    @property
    def current_ref(self) -> str:
        return self.frames[-1].ref

    @property
    def current(self) -> Question | StepView:
        node = self.lib.node(self.current_ref)
        if isinstance(node, Question):
            return node
        frame = self.frames[-1]
        return self._view(node, frame.params, frame.suggested_by)

    @property
    def current_result(self) -> StepResult | None:
        return self.frames[-1].result

    def _current_question(self) -> Question:
        node = self.lib.node(self.current_ref)
        if not isinstance(node, Question):
            raise WalkError(f"{self.current_ref} is a step, not a question")
        return node

    def _current_frame_of_step(self) -> Frame:
        if self.current_ref not in self.lib.steps:
            raise WalkError(f"{self.current_ref} is a question, not a step")
        return self.frames[-1]

    def availability(self, probe: str) -> str | None:
        try:
            return self._availability(probe)
        except Exception as e:  # a broken capability check must not break the walk
            return f"cannot check availability: {e}"

    def _view(self, step: Step, params: dict, suggested_by: str | None = None, finding: Finding | None = None) -> StepView:
        spec = self.lib.probes[step.probe]
        if finding is None and suggested_by:
            finding = next((f for f in self.findings if f.rule == suggested_by), None)
        unavailable = self.availability(step.probe)
        return StepView(step.ref, step.probe, step.title, step.why, spec.tier, spec.cost, step.duration,
                        dict(params), unavailable, finding.title if finding else None,
                        finding.level if finding else None, step.fallback if unavailable else None)

    def fallbacks(self) -> list[StepView]:
        """The steps offered instead of the current one when it cannot run here (its probe is
        unavailable, or it was skipped for a value the host could not supply): those whose
        condition holds, in the playbook's order of preference."""
        node = self.lib.node(self.current_ref)
        result = self.current_result
        # A step that could not run: its probe is missing here, or a value it needs is unknown.
        could_not_run = self.current.unavailable is not None or (result is not None and result.status == "skipped")
        if not isinstance(node, Step) or not node.fallbacks or not could_not_run:
            return []
        scope = {"context": self.context, "evidence": {}, "result": {}, "step": {}, "let": {}}
        return [self._view(self.lib.steps[fb.ref], self._frame(fb.ref).params) for fb in node.fallbacks
                if fb.when is None or fb.when(scope)]

    def fallback(self) -> StepView | None:
        """The first of those that can run here (else the first one, to say why it cannot)."""
        views = self.fallbacks()
        return next((v for v in views if v.unavailable is None), views[0] if views else None)

    # moves ---------------------------------------------------------------------------
    def answer(self, choice: int) -> None:
        self._emit({"event": "answer", "question": self.current_ref, "choice": int(choice)})

    def choose(self, ref: str | StepView, params: dict | None = None) -> StepView:
        """Go to a step: a suggestion (with its prefilled params, optionally edited) or any step by ref."""
        suggested_by = None
        if isinstance(ref, StepView):
            base = self._prefilled(ref)
            match = self._suggestion_source(ref)
            suggested_by = match.rule if match else None
            ref = ref.ref
        else:
            if ref not in self.lib.steps:
                raise WalkError(f"no step {ref!r}")
            sug = next((s for s in self.suggestions() if s.ref == ref), None)
            if sug is not None:
                base = self._prefilled(sug)
                match = self._suggestion_source(sug)
                suggested_by = match.rule if match else None
            else:
                base = self._frame(ref).params
        if params:
            base.update(params)
        base = {k: v for k, v in base.items() if v not in (None, "")}
        self._emit({"event": "choose", "step": ref, "params": base, "suggested_by": suggested_by})
        return self.current

    def _prefilled(self, view: StepView) -> dict:
        """A suggestion's params, with its run length when a template set one (StepView)."""
        base = dict(view.params)
        if view.duration != self.lib.steps[view.ref].duration:
            base["duration"] = view.duration
        return base

    def edit(self, params: dict) -> StepView:
        """Change the current step's parameters (the prefilled form, edited); None/"" removes one."""
        merged = dict(self._current_frame_of_step().params)
        merged.update(params)
        merged = {k: v for k, v in merged.items() if v not in (None, "")}
        self._emit({"event": "params", "params": merged})
        return self.current

    def complete(self, status: str, result: dict | None = None, duration_s: float | None = None,
                 started: str | None = None, error: str | None = None, command: str | None = None,
                 params: dict | None = None, attached: str | None = None) -> list[Finding]:
        """Record the current step's outcome; returns its findings."""
        frame = self._current_frame_of_step()
        self._emit({"event": "result", "step": frame.ref, "status": status, "params": params or frame.params,
                    "result": result, "duration_s": duration_s, "started": started, "error": error,
                    "command": command, "attached": attached})
        return list(self.frames[-1].findings)

    def back(self) -> None:
        self._emit({"event": "back"})

    def note(self, text: str, **extra: Any) -> None:
        self._emit({"event": "note", "text": text, **extra})

    # what we know ------------------------------------------------------------------------
    @property
    def findings(self) -> list[Finding]:
        return [f for fr in self.frames for f in fr.findings]

    def ranked_findings(self) -> list[Finding]:
        return rank(self.findings)

    def _ran(self, ref: str, params: dict) -> bool:
        return any(fr.ref == ref and fr.result is not None and fr.result.status in ("ok", "stopped")
                   and same_params(fr.result.params, params) for fr in self.frames)

    def suggestions(self) -> list[StepView]:
        """Next steps unlocked by the findings, most important first, available before unavailable
        at the same importance; steps already run with the same parameters are left out."""
        out: list[tuple[tuple, StepView]] = []
        seen: list[tuple[str, dict]] = []
        for i, f in enumerate(self.ranked_findings()):
            for j, n in enumerate(f.next):
                if self._ran(n.ref, n.params) or any(r == n.ref and same_params(p, n.params) for r, p in seen):
                    continue
                if n.instead_of is not None and self.availability(self.lib.steps[n.instead_of].probe) is None:
                    continue  # the step it stands in for can run
                seen.append((n.ref, n.params))
                view = self._view(self.lib.steps[n.ref], n.params, finding=f)
                key = (-level_rank(f.level), -f.priority, view.unavailable is not None, i, j)
                out.append((key, view))
        out.sort(key=lambda kv: kv[0])
        return [v for _, v in out]

    def _suggestion_source(self, view: StepView) -> Finding | None:
        for f in self.ranked_findings():
            if any(n.ref == view.ref and same_params(n.params, view.params) for n in f.next):
                return f
        return None

    def distinct_findings(self) -> list[Finding]:
        """Ranked findings, each said once: a finding repeated by a later step (the Details
        confirming the Summary) keeps its rank and the later evidence, and lists the steps."""
        latest: dict[tuple[str, str], Finding] = {}
        steps: dict[tuple[str, str], list[str]] = {}
        for f in self.findings:
            steps.setdefault(f.identity, []).append(f.step or f.probe)
            latest[f.identity] = f
        out, done = [], set()
        for f in self.ranked_findings():  # ranked where first said, with the latest evidence
            if f.identity not in done:
                done.add(f.identity)
                seen = steps[f.identity]
                last = latest[f.identity]
                out.append(last if len(seen) == 1 else _with_seen(last, seen))
        return out

    def not_measured(self) -> list[str]:
        """The steps of this walk that could not run here, each with why and what it would add."""
        out = []
        for fr in self.frames:
            if fr.result is None or fr.result.status != "unavailable":
                continue
            step = self.lib.steps[fr.ref]
            text = (f"{step.title} ({step.probe}) could not run here: {fr.result.error}. "
                    f"It would have added: {first_sentence(step.why)}")
            if text not in out:
                out.append(text)
        return out

    def conclusion(self) -> Conclusion:
        """What the walk found, said as the guide says it: when a finding splits the symptom
        (of N packets reported lost, X are real drops), the drop sites explain only X, and the
        rest needs its own cause (a deeper tier's) before a cause counts as found."""
        c = self._conclusion()
        c.not_measured = self.not_measured()
        return c

    def _conclusion(self) -> Conclusion:
        findings = self.distinct_findings()
        causes = rank_causes([f for f in findings if f.explains])
        open_steps = self.suggestions()
        chain, chain_title = self._chain(findings)
        split = next((f for f in findings if f.split), None)
        if split is not None:
            own = set(self.lib.group(split.group).probes)
            part = [c for c in causes if c.probe in own]
            rest = [c for c in causes if c.probe not in own]
            summary = split.split["part"]
            if part:
                summary += " (" + "; ".join(c.title for c in part) + ")"
            summary += f"; {split.split['rest']}: "
            if rest:
                summary += _cause_text(rest[0])
                if len(rest) > 1:
                    summary += f" ({len(rest) - 1} more cause(s) below.)"
            else:
                clue = next((f for f in findings if f.probe not in own and not f.split), None)
                summary += f"not pinned down yet ({clue.title})." if clue else "not measured yet."
                nxt = next((s for s in open_steps if s.probe not in own), open_steps[0] if open_steps else None)
                summary += _next_text(nxt)
            fixes = _advice(rest) if rest else _advice([split] + [f for f in findings if f.step == split.step
                                                                 and not f.explains and f is not split])
            fixes += [a for a in _advice(part) if a not in fixes]
            return Conclusion(bool(rest), rest + part, findings, summary, fixes, open_steps,
                              "cause" if rest else "open", chain, chain_title)
        if causes:
            summary = _cause_text(causes[0])
            if len(causes) > 1:
                summary += f" ({len(causes) - 1} more cause(s) below.)"
            return Conclusion(True, causes, findings, summary, _advice(causes), open_steps, "cause", chain,
                              chain_title)
        ran = [fr for fr in self.frames if fr.result is not None]
        if not any(fr.result.status in ("ok", "stopped") for fr in ran):
            state = "nothing-ran"
            summary = ("Nothing could run: " + "; ".join(
                f"{self.lib.steps[fr.ref].probe}: {fr.result.error or fr.result.status}" for fr in ran) + "."
                if ran else "No probe has run yet.")
        else:
            state = "open"
            summary = (f"Most important finding: {findings[0].title}." if findings
                       else "The probes run so far saw nothing abnormal.")
        if open_steps:
            summary += _next_text(open_steps[0])
        return Conclusion(False, [], findings, summary, _advice(findings[:1]), open_steps, state, chain, chain_title)

    def _chain(self, findings: list[Finding]) -> tuple[list[str], str]:
        """The chain with the most links found (at least two; the first in chains.yaml on a
        tie: chains sharing their symptom links differ by their roots), as sentences root
        first; a link not found between two found ones says what was not measured."""
        by_rule: dict[str, Finding] = {}
        for f in rank(findings):
            by_rule.setdefault(f.rule, f)
        best: tuple[int, list[str], str] = (1, [], "")
        for chain in self.lib.chains:
            said: list[str | None] = []
            for link in chain.links:
                text = None
                for rid, template in link.say:
                    f = by_rule.get(rid)
                    if f is not None:
                        text = template.render({"context": self.context, "evidence": f.evidence, "result": {},
                                                "step": {}, "let": f.values})
                        break
                said.append(text)
            found = [i for i, t in enumerate(said) if t]
            if len(found) > best[0]:
                best = (len(found), [said[i] or f"(not measured: {chain.links[i].title})"
                                     for i in range(found[0], found[-1] + 1)], chain.title)
        return best[1], best[2]


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph (a step's why, a playbook's summary), on one line."""
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _cause_text(f: Finding) -> str:
    return f"{f.title}. " + (f.cause or f.say)


def _next_text(step: StepView | None) -> str:
    if step is None:
        return ""
    return f" Next step: {step.title} ({step.probe})" + (
        f", not possible here: {step.unavailable}." if step.unavailable else ".")


def _advice(findings: list[Finding]) -> list[str]:
    out: list[str] = []
    for f in findings:
        out += [a for a in f.advice if a not in out]
    return out
