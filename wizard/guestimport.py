"""Probes that run inside a VM (virtnet-poll-monitor): the command to run there, and its
`--json` file brought back into the session, checked, and served like a recorded run so that
the same merge and rules judge it (docs/output-virt.md, "run inside the guest").

    runs = {r.probe: r for r in [load_guest_file(path, lib)]}
    backend = GuestImports(LiveBackend(), runs)        # the step runs from the file
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path
from typing import Any

from probes.registry import PROBES

from .jsonl import json_lines
from .replay import RecordedProbe, RecordedRun

GUEST_ONLY = "runs inside the VM (it watches the guest's kernel, not this host's)"
GUEST_FIELDS = ("hostname", "kernel")  # every record of a guest probe says where it was taken


class GuestFileError(ValueError):
    """The file is not the records of a guest probe; the message is one line."""


def runs_in_guest(probe: str) -> bool:
    cls = PROBES.get(probe)
    return bool(cls and getattr(cls, "runs_in_guest", False))


def guest_command(probe: str, duration: float) -> str:
    """What to run inside the VM: the probe for the step's duration, its records to a file."""
    d = int(duration) if float(duration).is_integer() else duration
    return f"sudo netsleuth probe {shlex.quote(probe)} --duration {d} --json > {shlex.quote(probe)}.json"


def guest_hint(probe: str, duration: float) -> str:
    return (f"there, `{guest_command(probe, duration)}`; then bring the file back "
            f"(`netsleuth diagnose ... --guest-records {probe}.json`, or Import in the wizard's step)")


def load_guest_file(path: str | Path, lib) -> RecordedRun:
    """The records of ``path`` as one run of the guest probe whose record type they have.
    Raises GuestFileError (one line) for anything else: not JSON, no records, mixed or
    unknown types, records without the guest's hostname and kernel, or taken on this host."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise GuestFileError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise GuestFileError(f"{p}: not a probe's --json output (not text)") from None
    by_record = {rtype: name for name in PROBES if runs_in_guest(name) and name in lib.probes
                 for rtype in (lib.probes[name].merge.record, *getattr(PROBES[name], "other_records", ()))}
    probe, records, elapsed = None, [], 0.0
    for n, obj in json_lines(lines, p, GuestFileError):
        rtype = obj.get("type") if isinstance(obj, dict) else None
        name = by_record.get(rtype)
        if name is None:
            raise GuestFileError(f"{p}:{n}: not a record of a probe run in a guest (type {rtype!r}; expected "
                                 f"{' or '.join(repr(t) for t in sorted(by_record))})")
        if probe is not None and name != probe:
            raise GuestFileError(f"{p}:{n}: a {rtype!r} record among {probe}'s: one probe's output per file")
        probe = name
        missing = [f for f in GUEST_FIELDS if not isinstance(obj.get(f), str) or not obj[f]]
        if missing:
            raise GuestFileError(f"{p}:{n}: the record does not say which guest it is from (no {', '.join(missing)})")
        if (obj["hostname"], obj["kernel"]) == (socket.gethostname(), os.uname().release):
            raise GuestFileError(f"{p}:{n}: taken on this host ({obj['hostname']}), not in a guest")
        interval = obj.get("interval_s")
        elapsed += interval if isinstance(interval, (int, float)) and interval > 0 else 0.0
        records.append((round(elapsed, 3), obj))
    if probe is None:
        raise GuestFileError(f"{p}: no records (did the probe run for its whole --duration inside the VM?)")
    first = records[0][1]
    where = f"in guest {first['hostname']} (kernel {first['kernel']}), imported from {p}"
    return RecordedRun(0, probe, {}, command=f"{guest_command(probe, round(elapsed) or 1)}  # {where}",
                       records=records, status="ok", duration_s=round(elapsed, 3))


def guest_start(lib, symptom: str, runs: dict[str, RecordedRun]) -> str | None:
    """The symptom's step of the first imported probe: the walk starts there, the file is why
    the user came back.  None (the playbook's start) when nothing was imported."""
    for probe in runs:
        ref = next((r for r, s in lib.steps.items() if s.probe == probe and r.startswith(symptom + "/")), None)
        if ref:
            return ref
    return None


class GuestImports:
    """A backend whose guest probes run from imported files; everything else as ``inner``'s."""

    @classmethod
    def adding(cls, backend: Any, run: RecordedRun) -> "GuestImports":
        """``backend`` with ``run`` imported too (a later import of the same probe replaces it)."""
        if isinstance(backend, cls):
            return cls(backend.inner, {**backend.runs, run.probe: run})
        return cls(backend, {run.probe: run})

    def __init__(self, inner: Any, runs: dict[str, RecordedRun]):
        self.inner = inner
        self.runs = runs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def availability(self, name: str) -> str | None:
        return None if name in self.runs else self.inner.availability(name)

    def build(self, name: str, values: dict[str, Any]):
        run = self.runs.get(name)
        return RecordedProbe(run) if run is not None else self.inner.build(name, values)

    def source(self, name: str, values: dict[str, Any]):
        run = self.runs.get(name)
        return RecordedProbe(run) if run is not None else self.inner.source(name, values)

    def command_line(self, name: str, values: dict[str, Any]) -> str:
        run = self.runs.get(name)
        return run.command if run is not None else self.inner.command_line(name, values)
