"""Validating the walk's context (what the user says they know), without any UI.

Context fields (playbooks/data/context.yaml) have the probes' flag kinds, so
they are validated by the same code as probe flags: a bad value raises
ParamError naming the flag and the accepted form.
"""

from __future__ import annotations

from typing import Any

from playbooks.model import ContextField, Library
from probes.base import Flag
from probes.runtime.params import ParamError

INT_KINDS = ("int", "port", "pid", "vlan")


def context_flag(cf: ContextField) -> Flag:
    """A context field as a probe-style Flag: same kinds, same validation."""
    return Flag(cf.name.replace("_", "-"), cf.kind, cf.help, choices=tuple(cf.choices), lo=cf.lo, hi=cf.hi)


def typed(kind: str, raw: Any) -> Any:
    """Numbers stay numbers in the context and a step's params (rules compute with them, and
    an unchanged field compares equal); the rest stays text."""
    if kind in INT_KINDS and isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    return raw.strip() if isinstance(raw, str) else raw


def validate_context(lib: Library, raw: dict[str, Any], check_host: bool = True) -> dict[str, Any]:
    """The given (non-empty) fields, validated and typed.  ``check_host=False`` skips checks
    that need this host (interface and process existence): a replay runs elsewhere."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value in (None, ""):
            continue
        cf = lib.context.get(name)
        if cf is None:
            raise ParamError("--" + name.replace("_", "-"), value, "a context field of the playbooks")
        if cf.kind == "internal":
            out[name] = value
            continue
        if check_host or cf.kind not in ("interface", "pid"):
            context_flag(cf).parse(value)
        out[name] = typed(cf.kind, value)
    return out
