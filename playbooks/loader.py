"""Load and validate the playbook files (playbooks/data/*.yaml) into a Library.

Every file says what it is with ``kind:`` (context, probes, playbook, rules,
quick-reference).  Anything wrong — an unknown key, a missing one, a step
naming a probe or flag that does not exist, a ``goto`` or ``next`` pointing
nowhere, a path into an undeclared context field — raises PlaybookError
naming the file and the key, so the data cannot rot silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import yaml

from .errors import PlaybookError
from .expr import Where, compile_condition, compile_let, Template
from .merge import MERGE_KINDS, MergeSpec
from .model import (LEVELS, Answer, Chain, ChainLink, ContextField, Library, NextStep, Param, Playbook,
                    ProbeChart, ProbeSpec, Question, QuickRow, Rule, RuleGroup, Step, Fallback)

SPLIT_PARTS = ("part", "rest")

DATA_DIR = Path(__file__).resolve().parent / "data"
KINDS = ("context", "probes", "playbook", "rules", "quick-reference", "chains")
CONTEXT_KINDS = ("ipv4", "port", "protocol", "interface", "netns", "choice", "int", "pid", "internal")


def _fields(raw: Any, where: Where, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
    """A mapping with exactly these keys (required ones present, nothing unknown)."""
    if not isinstance(raw, dict):
        raise where.error(f"expected a mapping, got {type(raw).__name__}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise where.error(f"missing key(s): {', '.join(missing)}")
    unknown = [k for k in raw if k not in required and k not in optional]
    if unknown:
        raise where.error(f"unknown key(s): {', '.join(map(str, unknown))} "
                          f"(allowed: {', '.join(required + optional)})")
    return raw


def _totalled(raw: Any, where: Where) -> tuple:
    """``{record type: {group field: record field}}`` (MergeSpec.totalled)."""
    out = []
    for rtype, fields in _fields(raw or {}, where, (), tuple(raw or {})).items():
        fields = _fields(fields, where.child(rtype), (), tuple(fields or {}))
        if not fields or not all(isinstance(v, str) for v in fields.values()):
            raise where.child(rtype).error("a mapping of group field -> record field, e.g. {count: count}")
        out.append((str(rtype), tuple((str(k), v) for k, v in fields.items())))
    return tuple(out)


def _text(raw: Any, where: Where) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise where.error("expected non-empty text")
    return raw.strip()


def _list(raw: Any, where: Where, allow_empty: bool = False) -> list:
    if not isinstance(raw, list) or (not raw and not allow_empty):
        raise where.error("expected a list" + ("" if allow_empty else " with at least one item"))
    return raw


def _number(raw: Any, where: Where) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise where.error(f"expected a number, got {raw!r}")
    return raw


def _chart(raw: Any, where: Where) -> ProbeChart:
    raw = _fields(raw, where, ("record", "value", "title"), ("mark",))
    return ProbeChart(_text(raw["record"], where.child("record")), _text(raw["value"], where.child("value")),
                      _text(raw["title"], where.child("title")),
                      _text(raw["mark"], where.child("mark")) if "mark" in raw else None)


class ProbeIdentity(Protocol):
    """What an implemented probe says of itself (probes/registry.py's classes): the one declaration."""

    title: str
    tier: int
    cost: str
    description: str
    flags: Sequence[Any]  # each with a .name ("src-ip")


# probes.yaml keys: a planned probe's stub of what implemented probes declare themselves,
# and the playbooks' own (how a step runs it, how its records add up and read).
IDENTITY_REQUIRED = ("title", "tier", "cost", "flags")
IDENTITY_OPTIONAL = ("description",)
PLAYBOOK_REQUIRED = ("duration", "results")
PLAYBOOK_OPTIONAL = ("guide", "columns", "evidence", "chart")


class _Builder:
    def __init__(self, implemented: Mapping[str, ProbeIdentity]) -> None:
        self.implemented = implemented
        self.files: list[tuple[str, dict]] = []
        self.context: dict[str, ContextField] = {}
        self.probes: dict[str, ProbeSpec] = {}
        self.playbooks: dict[str, Playbook] = {}
        self.questions: dict = {}
        self.steps: dict = {}
        self.groups: list[RuleGroup] = []
        self.quick: list[QuickRow] = []
        self.chains: list[Chain] = []
        self.rule_refs: list[tuple[str, Where]] = []  # rule ids named by chains, checked at the end
        self.refs: list[tuple[str, Where]] = []  # every goto/next/quick ref, checked at the end
        self.seen_groups: set[str] = set()
        self.seen_rules: set[str] = set()

    def playbooks_file(self, ref: str) -> str:
        return self.playbooks[ref.split("/", 1)[0]].file

    @property
    def cf(self) -> frozenset[str]:
        return frozenset(self.context)

    def template(self, raw: Any, where: Where) -> Template:
        return Template(raw, where, self.cf)

    # files ----------------------------------------------------------------------
    def read(self, path: Path) -> None:
        name = path.name
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f"line {mark.line + 1}" if mark else "?"
            raise PlaybookError(name, at, f"not valid YAML: {getattr(e, 'problem', e)}") from None
        except OSError as e:
            raise PlaybookError(name, "-", f"cannot read: {e.strerror}") from None
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise PlaybookError(name, "kind", f"the file must start with 'kind:' one of {', '.join(KINDS)}")
        self.files.append((name, raw))

    def build(self) -> Library:
        order = {k: i for i, k in enumerate(KINDS)}  # context first: templates check context names
        for name, raw in sorted(self.files, key=lambda f: (order[f[1]["kind"]], f[0])):
            getattr(self, "_" + raw["kind"].replace("-", "_"))(raw, Where(name, ""))
        for ref, where in self.refs:
            if ref not in self.questions and ref not in self.steps:
                raise where.error(f"{ref!r} is no question or step of any playbook")
        for step in self.steps.values():
            for fb in step.fallbacks:
                if fb.ref not in self.steps:
                    raise PlaybookError(self.playbooks_file(step.ref), f"steps.{step.ref.split('/', 1)[1]}.fallback",
                                        f"{fb.ref!r} is a question: a fallback is a step")
        for rid, where in self.rule_refs:
            if rid not in self.seen_rules:
                raise where.error(f"{rid!r} is no rule of any rules file")
        for p in self.playbooks.values():
            for a in p.asks:
                if a not in self.context:
                    raise PlaybookError(p.file, "asks", f"{a!r} is not declared in context.yaml")
        return Library(self.context, self.probes, self.playbooks, self.questions, self.steps, self.groups,
                       self.quick, [n for n, _ in self.files], self.chains)

    # kind: context ----------------------------------------------------------------
    def _context(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "fields"), ("note",))
        fields = _fields(raw["fields"], where.child("fields"), (), tuple(raw["fields"] or {}))
        for name, spec in fields.items():
            w = where.child(f"fields.{name}")
            spec = _fields(spec, w, ("kind", "label"), ("help", "choices", "lo", "hi", "discover"))
            if spec["kind"] not in CONTEXT_KINDS:
                raise w.child("kind").error(f"{spec['kind']!r} is not one of {', '.join(CONTEXT_KINDS)}")
            self.context[name] = ContextField(
                name, spec["kind"], _text(spec["label"], w.child("label")), str(spec.get("help", "")).strip(),
                tuple(spec.get("choices") or ()), int(spec.get("lo", 0)), int(spec.get("hi", 0)), spec.get("discover"))

    # kind: probes -------------------------------------------------------------------
    def _apart(self, raw: Any, where: Where) -> tuple:
        """``{name: {when: condition on evidence, why: text}}`` (MergeSpec.apart)."""
        out = []
        for name, spec in _fields(raw or {}, where, (), tuple(raw or {})).items():
            spec = _fields(spec, where.child(name), ("when", "why"), ())
            out.append((str(name), compile_condition(spec["when"], where.child(f"{name}.when"), self.cf),
                        _text(spec["why"], where.child(f"{name}.why"))))
        return tuple(out)

    def _identity(self, name: str, spec: dict, w: Where) -> dict:
        """Title, tier, cost, description and flag names: the implemented probe's own
        (``probes``), else the planned probe's stub in probes.yaml."""
        if not isinstance(spec, dict):
            raise w.error(f"expected a mapping, got {type(spec).__name__}")
        probe = self.implemented.get(name)
        if probe is None:
            spec = _fields(spec, w, IDENTITY_REQUIRED + PLAYBOOK_REQUIRED, IDENTITY_OPTIONAL + PLAYBOOK_OPTIONAL)
            if spec["tier"] not in (1, 2, 3):
                raise w.child("tier").error("tier is 1 (Summary), 2 (Details) or 3 (root cause)")
            return {"title": _text(spec["title"], w.child("title")), "tier": spec["tier"],
                    "cost": _text(spec["cost"], w.child("cost")), "description": str(spec.get("description", "")).strip(),
                    "flags": tuple(str(f) for f in _list(spec["flags"], w.child("flags"), allow_empty=True))}
        declared = [k for k in IDENTITY_REQUIRED + IDENTITY_OPTIONAL if k in spec]
        if declared:
            raise w.child(declared[0]).error(f"{name} is implemented: its {', '.join(declared)} come from the "
                                             "probe's class (probes/registry.py); remove them here")
        _fields(spec, w, PLAYBOOK_REQUIRED, PLAYBOOK_OPTIONAL)
        return {"title": probe.title, "tier": probe.tier, "cost": probe.cost, "description": probe.description,
                "flags": tuple(f.name for f in probe.flags)}

    def _probes(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "probes"), ("note",))
        for name, spec in _fields(raw["probes"], where.child("probes"), (), tuple(raw["probes"] or {})).items():
            w = where.child(f"probes.{name}")
            identity = self._identity(name, spec, w)
            res = _fields(spec["results"], w.child("results"), ("merge",),
                          ("record", "entries", "key", "sum", "totals", "distinct", "max", "sort_by", "totalled",
                           "apart"))
            if res["merge"] not in MERGE_KINDS:
                raise w.child("results.merge").error(f"one of {', '.join(MERGE_KINDS)}")
            merge = MergeSpec(res["merge"], res.get("record"), res.get("entries", "entries"), tuple(res.get("key") or ()),
                              tuple(res.get("sum") or ("count",)), tuple(res.get("totals") or ()),
                              tuple(res.get("distinct") or ()), tuple(res.get("max") or ()),
                              res.get("sort_by", "count"), _totalled(res.get("totalled"), w.child("results.totalled")),
                              self._apart(res.get("apart"), w.child("results.apart")))
            cols = spec.get("columns") or {}
            _fields(cols, w.child("columns"), (), tuple(cols))
            self.probes[name] = ProbeSpec(
                name=name, **identity, duration=_number(spec["duration"], w.child("duration")),
                merge=merge, guide=str(spec.get("guide", "")),
                columns=tuple((t, self.template(v, w.child(f"columns.{t}"))) for t, v in cols.items()),
                evidence=tuple(self.template(t, w.child(f"evidence[{i}]"))
                               for i, t in enumerate(_list(spec.get("evidence", []), w, allow_empty=True))),
                chart=_chart(spec["chart"], w.child("chart")) if "chart" in spec else None,
            )
        unlisted = sorted(set(self.implemented) - set(self.probes))
        if unlisted:
            raise where.child("probes").error(f"implemented probe(s) {', '.join(unlisted)} (probes/registry.py) "
                                              "have no entry: add their duration and results")

    # kind: playbook -----------------------------------------------------------------
    def _qualify(self, book: str, ref: Any, where: Where) -> str:
        ref = _text(ref, where)
        full = ref if "/" in ref else f"{book}/{ref}"
        self.refs.append((full, where))
        return full

    def _params(self, raw: Any, where: Where, probe: str) -> tuple[Param, ...]:
        raw = raw or {}
        _fields(raw, where, (), tuple(raw))
        spec = self.probes.get(probe)
        out = []
        for flag, value in raw.items():
            w = where.child(flag)
            if spec is not None and flag not in spec.flags:
                raise w.error(f"{probe} has no flag --{flag} (its flags: {', '.join(spec.flags)})")
            if isinstance(value, dict):
                _fields(value, w, ("value",), ("when",))
                when = compile_condition(value["when"], w.child("when"), self.cf) if "when" in value else None
                out.append(Param(flag, self.template(value["value"], w.child("value")), when))
            else:
                out.append(Param(flag, self.template(value, w)))
        return tuple(out)

    def _playbook(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "id", "title", "summary", "start", "steps"), ("asks", "questions", "note"))
        book = _text(raw["id"], where.child("id"))
        if book in self.playbooks:
            raise where.child("id").error(f"playbook {book!r} is defined twice")
        for qid, q in (raw.get("questions") or {}).items():
            w = where.child(f"questions.{qid}")
            q = _fields(q, w, ("ask", "answers"), ("help",))
            answers = []
            for i, a in enumerate(_list(q["answers"], w.child("answers"))):
                aw = w.child(f"answers[{i}]")
                a = _fields(a, aw, ("say", "goto"), ("default",))
                answers.append(Answer(_text(a["say"], aw.child("say")), self._qualify(book, a["goto"], aw.child("goto")),
                                      bool(a.get("default", False))))
            if sum(a.default for a in answers) > 1:
                raise w.child("answers").error("at most one answer may be the default")
            self.questions[f"{book}/{qid}"] = Question(f"{book}/{qid}", _text(q["ask"], w.child("ask")),
                                                       str(q.get("help", "")).strip(), tuple(answers))
        for sid, s in _fields(raw["steps"], where.child("steps"), (), tuple(raw["steps"] or {})).items():
            w = where.child(f"steps.{sid}")
            s = _fields(s, w, ("probe", "title", "why"), ("duration", "params", "fallback"))
            probe = _text(s["probe"], w.child("probe"))
            if probe not in self.probes:
                raise w.child("probe").error(f"unknown probe {probe!r} (not in probes.yaml)")
            ref = f"{book}/{sid}"
            if ref in self.questions:
                raise w.error(f"{sid!r} is both a question and a step")
            duration = _number(s["duration"], w.child("duration")) if "duration" in s else self.probes[probe].duration
            fallbacks = self._fallbacks(book, s.get("fallback"), w.child("fallback"))
            if any(fb.ref == ref for fb in fallbacks):
                raise w.child("fallback").error("a step cannot be its own fallback")
            self.steps[ref] = Step(ref, probe, _text(s["title"], w.child("title")), _text(s["why"], w.child("why")),
                                   duration, self._params(s.get("params"), w.child("params"), probe), fallbacks)
        self.playbooks[book] = Playbook(
            book, _text(raw["title"], where.child("title")), _text(raw["summary"], where.child("summary")),
            tuple(raw.get("asks") or ()), self._qualify(book, raw["start"], where.child("start")), where.file)

    def _fallbacks(self, book: str, raw: Any, where: Where) -> tuple[Fallback, ...]:
        """``fallback: step`` or a list of ``step`` / ``{step: ..., when: ...}``, in order of preference."""
        if raw is None:
            return ()
        out = []
        for i, item in enumerate([raw] if isinstance(raw, str) else _list(raw, where)):
            iw = where if isinstance(raw, str) else where.child(f"[{i}]")
            if isinstance(item, str):
                item = {"step": item}
            item = _fields(item, iw, ("step",), ("when",))
            out.append(Fallback(self._qualify(book, item["step"], iw.child("step")),
                                compile_condition(item["when"], iw.child("when"), self.cf) if "when" in item else None))
        return tuple(out)

    # kind: rules --------------------------------------------------------------------
    def _rules(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "groups"), ("note",))
        for i, g in enumerate(_list(raw["groups"], where.child("groups"))):
            w = where.child(f"groups[{i}]")
            g = _fields(g, w, ("id", "probes", "rules"), ("each", "top", "only", "first_match", "next", "note"))
            gid = _text(g["id"], w.child("id"))
            w = Where(where.file, f"groups.{gid}")
            if gid in self.seen_groups:
                raise w.error(f"rule group {gid!r} is defined twice")
            self.seen_groups.add(gid)
            probes = tuple(_list(g["probes"], w.child("probes")))
            for p in probes:
                if p not in self.probes:
                    raise w.child("probes").error(f"unknown probe {p!r} (not in probes.yaml)")
            if g.get("each") not in (None, "entries"):
                raise w.child("each").error("'each' is 'entries' (one evaluation per result entry) or absent")
            only = compile_condition(g["only"], w.child("only"), self.cf) if "only" in g else None
            group_next = self._nexts(g.get("next", []), w.child("next"))
            rules = tuple(self._rule(r, w.child(f"rules[{j}]"), group_next)
                          for j, r in enumerate(_list(g["rules"], w.child("rules"))))
            self.groups.append(RuleGroup(gid, where.file, probes, rules, g.get("each"), int(g.get("top", 5)), only,
                                         bool(g.get("first_match", True))))

    def _nexts(self, raw: Any, where: Where) -> tuple[NextStep, ...]:
        nexts = []
        for i, n in enumerate(_list(raw, where, allow_empty=True)):
            nw = where.child(f"[{i}]")
            if isinstance(n, str):
                n = {"step": n}
            n = _fields(n, nw, ("step",), ("params", "when"))
            ref = _text(n["step"], nw.child("step"))
            if "/" not in ref:
                raise nw.child("step").error("a rule's next step is written playbook/step, e.g. packet-loss/drop-details")
            self.refs.append((ref, nw.child("step")))
            probe = self.steps[ref].probe if ref in self.steps else ""
            nexts.append(NextStep(ref, self._params(n.get("params"), nw.child("params"), probe),
                                  compile_condition(n["when"], nw.child("when"), self.cf) if "when" in n else None))
        return tuple(nexts)

    def _rule(self, r: Any, w: Where, group_next: tuple[NextStep, ...]) -> Rule:
        """One rule; without its own ``next`` it unlocks the group's."""
        r = _fields(r, w, ("id", "level", "title", "say"),
                    ("when", "let", "cause", "advice", "evidence", "next", "explains", "priority", "split"))
        rid = _text(r["id"], w.child("id"))
        if rid in self.seen_rules:
            raise w.child("id").error(f"rule id {rid!r} is used twice")
        self.seen_rules.add(rid)
        w = Where(w.file, f"{w.key.rsplit('.rules', 1)[0]}.rules.{rid}")
        if r["level"] not in LEVELS:
            raise w.child("level").error(f"level is one of {', '.join(LEVELS)}")
        lets = []
        for name, expr in (r.get("let") or {}).items():
            lets.append((name, compile_let(expr, w.child(f"let.{name}"), self.cf)))
        nexts = self._nexts(r["next"], w.child("next")) if "next" in r else group_next
        t = self.template
        split = ()
        if "split" in r:
            raw = _fields(r["split"], w.child("split"), SPLIT_PARTS)
            split = tuple((k, t(raw[k], w.child(f"split.{k}"))) for k in SPLIT_PARTS)
        return Rule(
            id=rid, level=r["level"], title=t(r["title"], w.child("title")), say=t(r["say"], w.child("say")),
            cause=t(r["cause"], w.child("cause")) if "cause" in r else None,
            advice=tuple(t(a, w.child(f"advice[{i}]")) for i, a in enumerate(_list(r.get("advice", []), w, True))),
            when=compile_condition(r["when"], w.child("when"), self.cf) if "when" in r else None,
            let=tuple(lets),
            evidence=tuple(t(a, w.child(f"evidence[{i}]")) for i, a in enumerate(_list(r.get("evidence", []), w, True))),
            next=nexts, explains=bool(r.get("explains", False)), priority=int(r.get("priority", 0)), split=split,
        )

    # kind: quick-reference ------------------------------------------------------------
    def _quick_reference(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "rows"), ("note",))
        for i, row in enumerate(_list(raw["rows"], where.child("rows"))):
            w = where.child(f"rows[{i}]")
            row = _fields(row, w, ("problem", "summary", "looks_at"), ("details",))
            summary = _text(row["summary"], w.child("summary"))
            self.refs.append((summary, w.child("summary")))
            details = row.get("details")
            if details:
                self.refs.append((_text(details, w.child("details")), w.child("details")))
            self.quick.append(QuickRow(_text(row["problem"], w.child("problem")), summary, details,
                                       _text(row["looks_at"], w.child("looks_at"))))


    # kind: chains ------------------------------------------------------------------------
    def _chains(self, raw: dict, where: Where) -> None:
        _fields(raw, where, ("kind", "chains"), ("note",))
        for i, c in enumerate(_list(raw["chains"], where.child("chains"))):
            w = where.child(f"chains[{i}]")
            c = _fields(c, w, ("id", "title", "links"), ("note",))
            w = Where(where.file, f"chains.{_text(c['id'], w.child('id'))}")
            links = []
            for j, link in enumerate(_list(c["links"], w.child("links"))):
                lw = w.child(f"links[{j}]")
                link = _fields(link, lw, ("id", "title", "say"))
                lw = w.child(f"links.{_text(link['id'], lw.child('id'))}")
                says = _fields(link["say"], lw.child("say"), (), tuple(link["say"] or {}))
                if not says:
                    raise lw.child("say").error("name at least one rule and what to say when it fired")
                for rid in says:
                    self.rule_refs.append((str(rid), lw.child(f"say.{rid}")))
                links.append(ChainLink(link["id"], _text(link["title"], lw.child("title")),
                                       tuple((str(rid), self.template(text, lw.child(f"say.{rid}")))
                                             for rid, text in says.items())))
            self.chains.append(Chain(c["id"], _text(c["title"], w.child("title")), tuple(links)))


def load_library(directory: str | Path | None = None, *, probes: Mapping[str, ProbeIdentity]) -> Library:
    """Every *.yaml in the directory (default: the packaged playbooks/data), validated, with the
    implemented probes' identity from ``probes`` (name -> probe class: probes.registry.PROBES)."""
    base = Path(directory) if directory else DATA_DIR
    paths = sorted(base.glob("*.yaml"))
    if not paths:
        raise PlaybookError(str(base), "-", "no playbook files (*.yaml) here")
    b = _Builder(probes)
    for p in paths:
        b.read(p)
    return b.build()
