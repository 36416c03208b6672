"""The small, safe expression vocabulary of playbooks: paths, templates, conditions, `let` sums.

Nothing in a playbook is ever evaluated as Python.  Every expression is
compiled once at load time (so a typo is an error naming the file and key) into
a closure that only looks values up in a scope dict and compares them.

* path       ``context.dst_ip``, ``evidence.flow.src_port``, ``evidence.stack.0``
* template   ``"{evidence.count:count} packets on {evidence.device or context.device}"``
* condition  ``{path: evidence.reason, in: [NO_SOCKET]}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: ...}``
* let        ``{sub: [context.reported_loss, result.total]}``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from vocab.flows import flow_text
from vocab.netns import Namespace
from vocab.stacks import function_of

from .errors import PlaybookError

Scope = dict  # {"context": {...}, "evidence": {...}, "result": {...}, "step": {...}, "let": {...}}
ROOTS = ("context", "evidence", "result", "step", "let")


@dataclass(frozen=True)
class Where:
    """Where an expression sits, for error messages."""

    file: str
    key: str

    def child(self, part: str | int) -> "Where":
        part = str(part)
        if not self.key:
            return Where(self.file, part)
        return Where(self.file, self.key + part if part.startswith("[") else f"{self.key}.{part}")

    def error(self, message: str) -> PlaybookError:
        return PlaybookError(self.file, self.key, message)


# paths -----------------------------------------------------------------------

_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return ".".join(self.parts)

    def get(self, scope: Scope) -> Any:
        """The value at this path, or None when any part is missing."""
        value: Any = scope
        for part in self.parts:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, (list, tuple)) and part.isdigit():
                i = int(part)
                value = value[i] if i < len(value) else None
            else:
                return None
            if value is None:
                return None
        return value


def compile_path(text: Any, where: Where, context_fields: frozenset[str] | None = None) -> Path:
    if not isinstance(text, str) or not _PATH_RE.match(text.strip()):
        raise where.error(f"{text!r} is not a path like context.dst_ip or evidence.flow.src_port")
    parts = tuple(text.strip().split("."))
    if parts[0] not in ROOTS:
        raise where.error(f"path {text!r} must start with one of: {', '.join(ROOTS)}")
    if parts[0] == "context" and context_fields is not None and len(parts) > 1 and parts[1] not in context_fields:
        raise where.error(f"context field {parts[1]!r} is not declared in context.yaml "
                          f"(known: {', '.join(sorted(context_fields))})")
    return Path(parts)


# formats ---------------------------------------------------------------------

def _fmt_count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if isinstance(v, float) else str(v)


def _fmt_pct(v: Any) -> str:
    return f"{v * 100:.0f}%" if isinstance(v, (int, float)) else str(v)


def _fmt_us(v: Any) -> str:
    """Microseconds in the unit a person reads best."""
    if not isinstance(v, (int, float)):
        return str(v)
    if v >= 1_000_000:
        return f"{v / 1_000_000:.2f} s"
    if v >= 1000:
        return f"{v / 1000:.1f} ms"
    return f"{v:.0f} µs"


def _fmt_seconds(v: Any) -> str:
    return f"{v:g} s" if isinstance(v, (int, float)) else str(v)


def _fmt_flow(v: Any) -> str:
    return flow_text(v) if isinstance(v, dict) else str(v)


def _fmt_list(v: Any) -> str:
    return ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _fmt_function(v: Any) -> str:
    return function_of(v) if isinstance(v, str) else str(v)


def _fmt_counts(v: Any) -> str:
    """A ``{name: count}`` map, most first: ``QDISC_DROP 294, QDISC_CONGESTED 3``."""
    if not isinstance(v, dict):
        return str(v)
    return ", ".join(f"{k} {_fmt_count(n)}" for k, n in sorted(v.items(), key=lambda kv: -(kv[1] or 0)))


def _namespace(v: Any) -> Namespace | None:
    return Namespace.from_dict(v) if isinstance(v, dict) else None


def _fmt_in_ns(v: Any) -> str:
    """A record's "namespace" (None: netsleuth's own) -> " in namespace ux2" or ""."""
    ns = _namespace(v)
    return f" in namespace {ns.label}" if ns else ""


def _fmt_ns_exec(v: Any) -> str:
    """-> "ip netns exec ux2 " / "nsenter -t PID -n " before a command, or "" (our namespace)."""
    ns = _namespace(v)
    return f"{ns.enter} " if ns and ns.enter else ""


def _fmt_at_ns(v: Any) -> str:
    """-> "@ux2" after a device name (as pickers and `ip` write it, for narrow columns), or ""."""
    ns = _namespace(v)
    return f"@{ns.label}" if ns else ""


def _fmt_rate(v: Any) -> str:
    return f"{v:,.1f}/s" if isinstance(v, (int, float)) else str(v)


FORMATS: dict[str, Callable[[Any], str]] = {
    "count": _fmt_count, "pct": _fmt_pct, "us": _fmt_us, "s": _fmt_seconds, "flow": _fmt_flow,
    "list": _fmt_list, "function": _fmt_function, "upper": lambda v: str(v).upper(), "counts": _fmt_counts,
    "in_ns": _fmt_in_ns, "at_ns": _fmt_at_ns, "ns_exec": _fmt_ns_exec, "rate": _fmt_rate,
}
# Formats whose missing value is said by leaving it out (our own namespace is not named).
OPTIONAL_FORMATS = frozenset({"in_ns", "at_ns", "ns_exec"})


# templates -------------------------------------------------------------------

_LITERAL_RE = re.compile(r"^(-?\d+(\.\d+)?|'[^']*')$")


@dataclass(frozen=True)
class Placeholder:
    alternatives: tuple[Any, ...]  # Path or literal value
    fmt: str | None

    def value(self, scope: Scope) -> Any:
        for alt in self.alternatives:
            if not isinstance(alt, Path):
                return alt  # a literal, '' included: the default the author chose
            v = alt.get(scope)
            if v not in (None, ""):
                return v
        return None


def _compile_placeholder(body: str, where: Where, context_fields) -> Placeholder:
    fmt = None
    if ":" in body:
        body, fmt = body.rsplit(":", 1)
        fmt = fmt.strip()
        if fmt not in FORMATS:
            raise where.error(f"unknown format ':{fmt}' (known: {', '.join(sorted(FORMATS))})")
    alts: list[Any] = []
    for part in body.split(" or "):
        part = part.strip()
        if _LITERAL_RE.match(part):
            alts.append(part[1:-1] if part.startswith("'") else (float(part) if "." in part else int(part)))
        else:
            alts.append(compile_path(part, where, context_fields))
    return Placeholder(tuple(alts), fmt)


_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class Template:
    """A string with ``{path or path:format}`` placeholders.

    A template that is exactly one placeholder keeps the value's type (an int
    stays an int, a missing value is None); otherwise it renders text.
    """

    def __init__(self, source: Any, where: Where, context_fields: frozenset[str] | None = None):
        self.source = source
        self.parts: list[Any] = []  # str or Placeholder
        if not isinstance(source, str):
            if isinstance(source, (int, float, bool)) or source is None:
                self.parts = [source]
                self.constant = True
                return
            raise where.error(f"expected text or a number, got {type(source).__name__}")
        self.constant = False
        pos = 0
        for m in _TOKEN_RE.finditer(source):
            if m.start() > pos:
                self.parts.append(source[pos:m.start()])
            tok = m.group(0)
            if tok in ("{{", "}}"):
                self.parts.append(tok[0])
            elif tok in ("{", "}"):
                raise where.error(f"unbalanced brace in {source!r} (write {{{{ or }}}} for a literal brace)")
            else:
                self.parts.append(_compile_placeholder(m.group(1), where, context_fields))
            pos = m.end()
        if pos < len(source):
            self.parts.append(source[pos:])

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.parts if isinstance(p, Placeholder)]

    def value(self, scope: Scope) -> Any:
        """The typed value (single placeholder) or the rendered text."""
        if self.constant:
            return self.parts[0]
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            p = self.parts[0]
            v = p.value(scope)
            return FORMATS[p.fmt](v) if (p.fmt and v is not None) else v
        return self.render(scope)

    def render(self, scope: Scope, missing: str = "?") -> str:
        out = []
        for p in self.parts:
            if isinstance(p, Placeholder):
                v = p.value(scope)
                if v is None and p.fmt in OPTIONAL_FORMATS:
                    out.append(FORMATS[p.fmt](None))
                else:
                    out.append(missing if v is None else FORMATS[p.fmt](v) if p.fmt else str(v))
            else:
                out.append(str(p))
        return "".join(out)

    def complete(self, scope: Scope) -> bool:
        """True when every placeholder has a value (evidence lines with a gap are skipped)."""
        return all(p.value(scope) is not None or p.fmt in OPTIONAL_FORMATS for p in self.placeholders)


# conditions ------------------------------------------------------------------

Condition = Callable[[Scope], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: _num(a) is not None and _num(b) is not None and a < b,
    "le": lambda a, b: _num(a) is not None and _num(b) is not None and a <= b,
    "gt": lambda a, b: _num(a) is not None and _num(b) is not None and a > b,
    "ge": lambda a, b: _num(a) is not None and _num(b) is not None and a >= b,
    "in": lambda a, b: a is not None and a in b,
    "not_in": lambda a, b: a not in b,
    "contains": lambda a, b: isinstance(a, (str, list, tuple)) and b in a,
}
# Operators whose operand is a list of literals.
_LIST_OPS = ("in", "not_in", "function_in")
OPERATORS = tuple(_COMPARE) + ("present", "matches", "function_in")


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _compile_operand(raw: Any, where: Where, context_fields) -> Callable[[Scope], Any]:
    """A literal, or ``{path: P, times: x, plus: y}`` to compare with another value."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"path", "times", "plus"}
        if "path" not in raw or unknown:
            raise where.error("an operand mapping needs 'path' and may have 'times' and 'plus' only")
        path = compile_path(raw["path"], where.child("path"), context_fields)
        times, plus = raw.get("times", 1), raw.get("plus", 0)
        if _num(times) is None or _num(plus) is None:
            raise where.error("'times' and 'plus' must be numbers")

        def operand(scope: Scope) -> Any:
            v = path.get(scope)
            return v * times + plus if _num(v) is not None else None

        return operand
    return lambda scope: raw


def _frames_match(value: Any, names: frozenset[str]) -> bool:
    frames = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(f, str) and function_of(f) in names for f in frames)


def compile_condition(raw: Any, where: Where, context_fields: frozenset[str] | None = None) -> Condition:
    if not isinstance(raw, dict) or not raw:
        raise where.error("a condition is a mapping such as {path: evidence.reason, in: [NO_SOCKET]}, "
                          "{all: [...]}, {any: [...]} or {not: ...}")
    if len(raw) == 1 and next(iter(raw)) in ("all", "any"):
        op = next(iter(raw))
        items = raw[op]
        if not isinstance(items, list) or not items:
            raise where.error(f"'{op}' needs a non-empty list of conditions")
        subs = [compile_condition(c, where.child(f"{op}[{i}]"), context_fields) for i, c in enumerate(items)]
        if op == "all":
            return lambda scope: all(c(scope) for c in subs)
        return lambda scope: any(c(scope) for c in subs)
    if len(raw) == 1 and "not" in raw:
        sub = compile_condition(raw["not"], where.child("not"), context_fields)
        return lambda scope: not sub(scope)

    if "path" not in raw:
        raise where.error(f"condition {raw!r} needs 'path' (or is all/any/not)")
    ops = [k for k in raw if k != "path"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        raise where.error(f"condition needs exactly one operator besides 'path', one of: {', '.join(OPERATORS)}; "
                          f"got {', '.join(ops) or 'none'}")
    op = ops[0]
    path = compile_path(raw["path"], where.child("path"), context_fields)
    operand = raw[op]
    w = where.child(op)

    if op == "present":
        if not isinstance(operand, bool):
            raise w.error("'present' takes true or false")
        return lambda scope: (path.get(scope) is not None) == operand
    if op in _LIST_OPS:
        if not isinstance(operand, list) or not operand:
            raise w.error(f"'{op}' takes a non-empty list")
        if op == "function_in":
            names = frozenset(str(x) for x in operand)
            return lambda scope: _frames_match(path.get(scope), names)
        values = tuple(operand)
        fn = _COMPARE[op]
        return lambda scope: fn(path.get(scope), values)
    if op == "matches":
        try:
            rx = re.compile(str(operand))
        except re.error as e:
            raise w.error(f"bad regular expression: {e}") from None
        def matches(scope: Scope) -> bool:
            v = path.get(scope)
            items = v if isinstance(v, (list, tuple)) else [v]  # a list matches if any item does
            return any(isinstance(x, str) and rx.search(x) is not None for x in items)

        return matches
    get_operand = _compile_operand(operand, w, context_fields)
    fn = _COMPARE[op]
    return lambda scope: fn(path.get(scope), get_operand(scope))


# let: small arithmetic over paths ----------------------------------------------

_ARITH: dict[str, Callable[[list[float]], float]] = {
    "add": lambda xs: sum(xs),
    "sub": lambda xs: xs[0] - sum(xs[1:]),
    "mul": lambda xs: _product(xs),
    "div": lambda xs: xs[0] / xs[1] if xs[1] else None,
    "max": max,
    "min": min,
}


def _product(xs: list[float]) -> float:
    out = 1
    for x in xs:
        out *= x
    return out


def compile_let(raw: Any, where: Where, context_fields=None) -> Callable[[Scope], Any]:
    """``{sub: [context.reported_loss, result.total]}``: numbers and paths only; None if any is missing."""
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _ARITH:
        raise where.error(f"a let value is one of {', '.join(_ARITH)} with a list, e.g. {{sub: [a.b, 3]}}")
    op, args = next(iter(raw.items()))
    if not isinstance(args, list) or len(args) < (2 if op in ("sub", "div") else 1):
        raise where.error(f"'{op}' needs a list of at least {2 if op in ('sub', 'div') else 1} numbers or paths")
    if op == "div" and len(args) != 2:
        raise where.error("'div' takes exactly two values")
    getters = []
    for i, a in enumerate(args):
        if _num(a) is not None:
            getters.append(lambda scope, a=a: a)
        elif isinstance(a, dict):
            getters.append(compile_let(a, where.child(f"{op}[{i}]"), context_fields))
        else:
            p = compile_path(a, where.child(f"{op}[{i}]"), context_fields)
            getters.append(p.get)
    fn = _ARITH[op]

    def evaluate(scope: Scope) -> Any:
        xs = [g(scope) for g in getters]
        if any(_num(x) is None for x in xs):
            return None
        return fn(xs)

    return evaluate
