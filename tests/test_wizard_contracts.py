"""The wizard's contracts (wizard/contracts.py) are met by every source and backend it is given:
the step loop and the autopilot call their members directly, with no getattr fallbacks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from probes.registry import PROBES
from wizard.backends import LiveBackend, ReplayBackend
from wizard.contracts import Backend, PilotBackend, ProbeSource
from wizard.replay import RecordedBackend, RecordedProbe

ROOT = Path(__file__).resolve().parent.parent


def members(protocol: type) -> set[str]:
    return {n for p in protocol.__mro__ if p is not object
            for n in [*vars(p), *vars(p).get("__annotations__", {})] if not n.startswith("_")}


@pytest.mark.parametrize("cls", [*PROBES.values(), RecordedProbe], ids=lambda c: c.__name__)
def test_every_source_has_the_probe_source_members(cls):
    missing = sorted(m for m in members(ProbeSource) if not hasattr(cls, m))
    assert not missing, f"{cls.__name__} lacks {missing}"


@pytest.mark.parametrize("cls,protocol", [(LiveBackend, Backend), (ReplayBackend, Backend),
                                          (RecordedBackend, PilotBackend)], ids=lambda c: c.__name__)
def test_every_backend_has_its_contracts_members(cls, protocol):
    missing = sorted(m for m in members(protocol) if not hasattr(cls, m))
    assert members(protocol) >= {"host_values", "build", "mode"}
    assert not missing, f"{cls.__name__} lacks {missing}"


def test_live_probes_keep_the_source_defaults():
    """Event probes wake on events (the loop polls them in slices); a live probe never runs
    out and has no recorded run."""
    from probes.events import EventStream

    for cls in PROBES.values():
        assert cls.wakes_on_events == issubclass(cls, EventStream), cls.__name__
        assert cls.exhausted is False and cls.replayed_s is None and cls.recorded_params is None


@pytest.mark.parametrize("path", ["wizard/steprun.py", "wizard/autopilot.py"])
def test_no_duck_typing_of_sources_or_backends(path):
    tree = ast.parse((ROOT / path).read_text())
    calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in ("getattr", "hasattr")]
    assert not calls, f"{path}: getattr/hasattr at lines {calls}"
