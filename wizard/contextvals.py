"""Validating the walk's context (what the user says they know), without any UI.

Context fields (playbooks/data/context.yaml) have the probes' flag kinds, so
they are validated by the same code as probe flags: a bad value raises
ParamError naming the flag and the accepted form.
"""

from __future__ import annotations

from typing import Any

from playbooks.model import ContextField, Library
from probes.base import Flag
from probes.runtime import params as P
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


NAMESPACE = "namespace"  # the context field of the user's network namespace (context.yaml)


def split_namespaced(lib: Library, raw: dict[str, Any]) -> dict[str, Any]:
    """An interface picked in another namespace comes as ``name@namespace`` (discovery's
    Interface.choice): the name goes to its field, the namespace to the namespace field."""
    out = dict(raw)
    for name, value in raw.items():
        cf = lib.context.get(name)
        if cf is None or cf.kind != "interface" or not isinstance(value, str) or "@" not in value:
            continue
        dev, ns = value.rsplit("@", 1)
        given = out.get(NAMESPACE)
        if given not in (None, "") and str(given) != ns:
            raise ParamError(cf.flag, value, f"an interface of namespace {given} (the namespace field), "
                                             f"not of {ns}")
        out[name], out[NAMESPACE] = dev, ns
    return out


def check_interface(flag: Flag, value: Any) -> Any:
    """A form field's interface: in our namespace, or ``name@namespace`` in that one."""
    if flag.kind == "interface" and isinstance(value, str) and "@" in value:
        dev, ns = value.rsplit("@", 1)
        return P.interface("--" + flag.name, dev, P.netns("--netns", ns))
    return flag.parse(value)


def validate_context(lib: Library, raw: dict[str, Any], check_host: bool = True) -> dict[str, Any]:
    """The given (non-empty) fields, validated and typed.  ``check_host=False`` skips checks
    that need this host (interface and process existence): a replay runs elsewhere.
    Interfaces are looked up in the namespace the context names."""
    out: dict[str, Any] = {}
    raw = split_namespaced(lib, raw)
    ns = raw.get(NAMESPACE)
    for name, value in raw.items():
        if value in (None, ""):
            continue
        cf = lib.context.get(name)
        if cf is None:
            raise ParamError("--" + name.replace("_", "-"), value, "a context field of the playbooks")
        if cf.kind == "internal":
            out[name] = value
            continue
        if check_host and cf.kind == "interface" and ns not in (None, ""):
            check_interface(context_flag(cf), f"{value}@{ns}")
        elif check_host or cf.kind not in ("interface", "pid", "netns"):
            context_flag(cf).parse(value)
        out[name] = typed(cf.kind, value)
    return out
