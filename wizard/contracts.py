"""What the app and its screens need of a backend and of a probe source, typed.

Two backends implement Backend: LiveBackend (this host) and ReplayBackend (a
recording); the autopilot needs only PilotBackend (RecordedBackend, a headless
replay, has no more); a source is what a live view pumps (wizard.steprun.run_source).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

from probes.base import Flag

Validator = Callable[[Flag, Any], Any]


class ProbeSource(Protocol):
    """A probe, live or recorded: started, waited on, read, closed (on every way out).
    The members after close() have a live probe's defaults in probes.base.SourceDefaults."""

    def start(self) -> None: ...
    def wait(self, timeout: float) -> None: ...
    def read(self) -> list[dict]: ...
    def close(self) -> None: ...
    def describe_attach(self) -> str: ...
    def command_line(self) -> str: ...
    @property
    def wakes_on_events(self) -> bool: ...  # wait returns as events come: polled in slices
    @property
    def exhausted(self) -> bool: ...  # nothing more to serve: the step ends
    def finish(self) -> None: ...  # after the last wait, before the last read
    # a recorded run's: its length, the part served, its filters (None on a live probe)
    @property
    def recorded_duration_s(self) -> Optional[float]: ...
    @property
    def replayed_s(self) -> Optional[float]: ...
    @property
    def recorded_params(self) -> Optional[dict]: ...


@runtime_checkable
class RecordedSource(Protocol):
    """A replay's source: what its run was recorded with, served at ``speed`` (0: at once)."""

    speed: float
    recorded_duration_s: Optional[float]
    recorded_params: dict

    def describe_recorded(self) -> str: ...


@runtime_checkable
class EventStream(Protocol):
    """A source that decodes each event in Python (it shares the GIL with the UI)."""

    decode_share: float

    def interrupt(self) -> None: ...


class PilotBackend(Protocol):
    """This host or a recording, as the autopilot sees it; the members with a default
    (nothing known, nothing recorded) are in BackendDefaults."""

    mode: str  # "live" | "replay"

    def describe(self) -> str: ...
    def host_facts(self) -> dict: ...
    def host_values(self, context: dict) -> Any: ...  # wizard.hostvalues.HostValues, or None
    def netns(self) -> Optional[int]: ...
    def flags(self, name: str) -> tuple[Flag, ...]: ...
    def availability(self, name: str) -> Optional[str]: ...
    def command_line(self, name: str, values: dict) -> str: ...
    def build(self, name: str, values: dict) -> ProbeSource: ...  # not started; ParamError, KeyError
    def known_fixes(self, causes: list) -> list[str]: ...
    # a replay's: what was recorded (None on a live host)
    def recorded_symptom(self) -> Optional[str]: ...
    def recorded_run(self, name: str, values: dict) -> Any: ...  # wizard.replay.RecordedRun
    def context_prefill(self) -> Optional[dict]: ...
    def replay_start(self, lib) -> Optional[str]: ...


class Backend(PilotBackend, Protocol):
    """This host or a recording, as the screens see it: the autopilot's, and the forms' and pickers'."""

    def preflight(self) -> dict: ...
    def inventory(self) -> Any: ...  # wizard.discovery.Inventory
    def validate(self, flag: Flag, value: Any) -> Any: ...
    def check(self, name: str, values: dict) -> None: ...
    def source(self, name: str, values: dict) -> ProbeSource: ...


class BackendDefaults:
    """Backend members as a host that knows nothing beyond what it was given answers them."""

    def host_values(self, context: dict) -> Any:
        return None  # only a live host can look values up

    def known_fixes(self, causes: list) -> list[str]:
        return []  # only a live host has rules to read

    def recorded_symptom(self) -> Optional[str]:
        return None

    def recorded_run(self, name: str, values: dict) -> Any:
        return None

    def context_prefill(self) -> Optional[dict]:
        return None

    def replay_start(self, lib) -> Optional[str]:
        return None
