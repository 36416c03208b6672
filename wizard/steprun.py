"""Run one playbook step over a probe source and fold its records into a result.

A *source* is anything with the probe interface: ``start()``, ``wait(timeout)``,
``read() -> list[dict]``, ``close()`` — a live probe, or a RecordedProbe from a
recording (wizard/replay.py).  The same loop serves the autopilot and the app's
workers; ``on_update`` sees the merged result after every read (the live view).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from playbooks.merge import Accumulator
from playbooks.model import ProbeSpec
from probes.base import Unavailable
from probes.runtime.loader import ProbeError
from probes.runtime.stop import ProbeStopped
from probes.runtime.params import ParamError

if TYPE_CHECKING:
    from .contracts import ProbeSource

READ_EVERY_S = 1.0
# An event stream's wait returns as soon as events come: it is polled in slices (a stop is
# seen within one) and read once per READ_EVERY_S, not once per poll (under a flood, every
# poll would fold and show a handful of events).
POLL_S = 0.1


@dataclass
class StepOutcome:
    status: str  # ok | error | unavailable | stopped
    result: dict | None
    duration_s: float
    started: str
    error: str | None = None
    attached: str | None = None  # how the probe hooked the kernel (its start line)


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def run_source(source: ProbeSource, probe: str, spec: ProbeSpec, duration: float,
               stop: threading.Event | None = None,
               on_records: Callable[[float, list[dict]], None] | None = None,
               on_update: Callable[[dict], None] | None = None,
               read_every: float = READ_EVERY_S) -> StepOutcome:
    """Start the source, read it every ``read_every`` seconds for ``duration`` seconds (or until
    ``stop`` is set, or a recorded source runs out), close it; never raises for probe errors."""
    acc = Accumulator(probe, spec.merge, spec.chart)
    started = now_iso()
    t0 = time.monotonic()
    status, error, attached = "ok", None, None
    streaming = source.wakes_on_events

    def take() -> None:
        records = source.read()
        if records:
            if on_records is not None:
                on_records(time.monotonic() - t0, records)
            acc.add(records)
        if on_update is not None:
            on_update(acc.result(time.monotonic() - t0))

    try:
        source.start()
        attached = source.describe_attach()
        t0 = time.monotonic()
        deadline = t0 + duration
        next_read = t0 + read_every
        while True:
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()) or source.exhausted:
                break
            until = min(next_read, deadline) - now
            source.wait(max(0.0, min(POLL_S, until) if streaming else until))
            if not streaming or time.monotonic() >= next_read:
                take()
                next_read = max(next_read + read_every, time.monotonic())
        if stop is not None and stop.is_set():
            status = "stopped"
        source.finish()  # e.g. cpu-burst reports a burst still going on
        take()
    except Unavailable as e:
        status, error = "unavailable", str(e)
    except (ProbeError, ParamError, OSError) as e:
        status, error = "error", str(e)
    except (KeyboardInterrupt, ProbeStopped):
        status, error = "stopped", "interrupted"
        try:
            take()
        except Exception:
            pass
    finally:
        try:
            source.close()
        except Exception as e:  # closing must not hide the outcome
            error = error or f"closing the probe failed: {e}"
    elapsed = round(time.monotonic() - t0, 3)
    if source.replayed_s is not None:  # replay: the recorded time served (all, or until stopped)
        elapsed = source.replayed_s
    result = acc.result(elapsed) if status in ("ok", "stopped") else None
    return StepOutcome(status, result, elapsed, started, error, attached)
