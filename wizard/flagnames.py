"""Probe options under their two names: the walk and recordings key them by flag name
("src-ip", as on the command line), probes take them by dest ("src_ip").  A Flag's dest is
its name with "_" for "-" (probes.base.Flag.dest), so the conversion needs no flag list.
Empty values (None, "") are left out either way: an option not given."""

from __future__ import annotations

from typing import Any


def dests(params: dict[str, Any]) -> dict[str, Any]:
    """Flag-name keys -> dest keys."""
    return {k.replace("-", "_"): v for k, v in params.items() if v not in (None, "")}


def names(values: dict[str, Any]) -> dict[str, Any]:
    """Dest keys -> flag-name keys (an unset switch, False, is left out too)."""
    return {k.replace("_", "-"): v for k, v in values.items() if v not in (None, "", False)}
