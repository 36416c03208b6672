"""Record what the probes produced, and play it back with no root and no BPF.

A recording is JSON lines:

    {"type": "recording", "version": 1, "created": ..., "host": {...}, "symptom": ..., "context": {...}}
    {"type": "run", "run": 1, "probe": "drop-summary", "step": "packet-loss/drop-summary",
     "params": {...}, "command": "netsleuth probe ...", "started": ...}
    {"type": "record", "run": 1, "probe": "drop-summary", "params": {...}, "t": 1.002, "record": {...}}
    {"type": "run_end", "run": 1, "status": "ok", "duration_s": 30.0, "error": null}

``RecordedProbe`` replays one run through the probe interface (start / wait /
read / close), at the recorded pace or instantly; ``RecordedBackend`` answers
the questions the wizard asks a backend (can this probe run, build it, its
command line) from the recording.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from playbooks.engine import NOT_IMPLEMENTED, same_params
from probes.base import SourceDefaults, Unavailable
from probes.runtime import stop
from probes.runtime.loader import ProbeError

from .contracts import BackendDefaults
from .durable import fsync_dir
from .flagnames import names
from .jsonl import json_lines
from .steprun import now_iso

RECORDING_VERSION = 1


class RecordingError(ValueError):
    """The file is not a netsleuth recording (the message says where and why)."""


def same_filters(a: dict, b: dict) -> bool:
    """The walk's same_params over options keyed either way (flag names or dests)."""
    return same_params(names(a), names(b))


def _need(obj: dict, key: str, kind, where: str, default=None):
    """obj[key] of this type (bool is no number), else RecordingError naming the line."""
    if key not in obj and default is not None:
        return default
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        names = {int: "an integer", str: "text", dict: "an object", (int, float): "a number"}
        raise RecordingError(f"{where}: {key!r} must be {names.get(kind, kind)}, got {value!r}")
    return value


# writing ----------------------------------------------------------------------------

def open_new(path: Path) -> int:
    """A new file, mode 0600, for writing: never an existing one (a recording is not
    overwritten without asking, nor written with an old file's mode).  RecordingError naming
    the file and why it cannot be written."""
    problem = record_path_problem(path)
    if problem:
        raise RecordingError(problem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fsync_dir(path.parent)
        return fd
    except FileExistsError:
        raise RecordingError(f"--record: {path} exists; give a new file name (or remove it)") from None
    except OSError as e:
        raise RecordingError(f"--record: cannot write {path}: {e.strerror or e}") from None


def record_path_problem(path: str | Path) -> str | None:
    """Why --record PATH cannot be used (checked before anything starts), or None."""
    p = Path(path)
    if p.exists():
        return f"--record: {p} exists; give a new file name (or remove it)"
    parent = next((d for d in [p.parent, *p.parent.parents] if d.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"--record: cannot write {p}: {parent or p.parent} is not a writable directory"
    return None


class Recorder:
    """Appends a run's records as they come; each line is flushed, each run end fsynced."""

    def __init__(self, path: str | Path, host: dict, symptom: str | None, context: dict):
        self.path = Path(path)
        fd = open_new(self.path)
        raw = os.fdopen(fd, "wb")
        # name.gz: compressed (stacks repeat a lot); each flush makes all lines so far readable
        self._f = gzip.open(raw, "wt", encoding="utf-8") if self.path.suffix == ".gz" else \
            open(raw.fileno(), "w", encoding="utf-8", closefd=False)
        self._raw = raw
        self._runs = 0
        self._params: dict[int, tuple[str, dict]] = {}
        self._write({"type": "recording", "version": RECORDING_VERSION, "created": now_iso(), "host": host,
                     "symptom": symptom, "context": context})

    def _write(self, obj: dict, sync: bool = False) -> None:
        self._f.write(json.dumps(obj, default=str) + "\n")
        self._f.flush()
        if sync:
            self._raw.flush()
            os.fsync(self._raw.fileno())

    def start_run(self, probe: str, params: dict, step: str | None = None, command: str | None = None) -> int:
        self._runs += 1
        self._params[self._runs] = (probe, dict(params))
        self._write({"type": "run", "run": self._runs, "probe": probe, "step": step, "params": params,
                     "command": command, "started": now_iso()})
        return self._runs

    def records(self, run: int, t: float, records: list[dict]) -> None:
        probe, params = self._params[run]
        for r in records:
            self._write({"type": "record", "run": run, "probe": probe, "params": params, "t": round(t, 3),
                         "record": r})

    def end_run(self, run: int, status: str, duration_s: float | None, error: str | None = None) -> None:
        self._write({"type": "run_end", "run": run, "status": status, "duration_s": duration_s, "error": error},
                    sync=True)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()


# reading ----------------------------------------------------------------------------

@dataclass
class RecordedRun:
    run: int
    probe: str
    params: dict
    step: str | None = None
    command: str | None = None
    records: list[tuple[float, dict]] = field(default_factory=list)
    status: str | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass
class Recording:
    path: str
    host: dict
    symptom: str | None
    context: dict
    runs: list[RecordedRun]

    @classmethod
    def load(cls, path: str | Path) -> "Recording":
        p = Path(path)
        try:
            data = p.read_bytes()
            if data[:2] == b"\x1f\x8b":
                # decompressobj, not gzip.decompress: a recording cut by a crash still reads
                data = zlib.decompressobj(wbits=31).decompress(data)
            lines = data.decode("utf-8").splitlines()
        except OSError as e:
            raise RecordingError(f"{p}: cannot read: {e.strerror or e}") from None
        except (UnicodeDecodeError, zlib.error):
            raise RecordingError(f"{p}: not a netsleuth recording (not text)") from None
        header, runs = None, {}
        for n, obj in json_lines(lines, p, RecordingError):  # a run cut short by a crash: keep the rest
            kind = obj.get("type") if isinstance(obj, dict) else None
            if header is None:
                if kind != "recording":
                    raise RecordingError(f"{p}:{n}: not a netsleuth recording (no 'recording' header line)")
                if obj.get("version") != RECORDING_VERSION:
                    raise RecordingError(f"{p}: recording version {obj.get('version')!r}, "
                                         f"this netsleuth reads version {RECORDING_VERSION}")
                header = obj
            elif kind == "run":
                where = f"{p}:{n}: 'run' line"
                run_id = _need(obj, "run", int, where)
                runs[run_id] = RecordedRun(run_id, _need(obj, "probe", str, where),
                                           _need(obj, "params", dict, where, {}), obj.get("step"), obj.get("command"))
            elif kind == "record":
                where = f"{p}:{n}: 'record' line"
                run = runs.get(obj.get("run"))
                if run is None:
                    raise RecordingError(f"{p}:{n}: record of run {obj.get('run')!r} before its 'run' line")
                run.records.append((float(_need(obj, "t", (int, float), where, 0)), _need(obj, "record", dict, where)))
            elif kind == "run_end":
                run = runs.get(obj.get("run"))
                if run is not None:
                    run.status, run.duration_s, run.error = obj.get("status"), obj.get("duration_s"), obj.get("error")
            else:
                raise RecordingError(f"{p}:{n}: unknown line type {kind!r}")
        if header is None:
            raise RecordingError(f"{p}: empty file, not a netsleuth recording")
        return cls(str(p), header.get("host") or {}, header.get("symptom"), header.get("context") or {},
                   list(runs.values()))


class RecordedProbe(SourceDefaults):
    """One recorded run, served through the probe interface.

    ``speed`` 1.0 replays at the recorded pace, 0 serves everything at once
    (headless replay); ``exhausted`` tells the step loop there is nothing more.
    """

    def __init__(self, run: RecordedRun, speed: float = 0.0):
        self.run = run
        self.name = run.probe
        self.speed = speed
        self._next = 0
        self._t0: float | None = None
        self.recorded_duration_s = run.duration_s
        self.recorded_params = dict(run.params)  # what this run was recorded with (flag names)

    @property
    def wakes_on_events(self) -> bool:  # type: ignore[override]
        """At a pace its wait returns as records come, like a live event stream's: the step
        loop reads it at its own cadence, not once per record."""
        return self.speed > 0

    def start(self) -> None:
        if self.run.status in ("unavailable", "error") and not self.run.records:
            cls = Unavailable if self.run.status == "unavailable" else ProbeError
            raise cls(self.run.error or f"{self.name}: {self.run.status} when recorded")
        self._t0 = time.monotonic()

    def _elapsed(self) -> float:
        if self.speed <= 0:
            return float("inf")
        return (time.monotonic() - (self._t0 or time.monotonic())) * self.speed

    def wait(self, timeout: float) -> None:
        if self.speed <= 0 or self.exhausted:
            return
        # until the next record is due, or (all served) the end of the recorded run
        due = self.run.records[self._next][0] if self._next < len(self.run.records) else self.recorded_duration_s
        stop.sleep(max(0.0, min(timeout, due / self.speed - (time.monotonic() - self._t0))))

    def read(self) -> list[dict]:
        limit = self._elapsed()
        out = []
        while self._next < len(self.run.records) and self.run.records[self._next][0] <= limit:
            out.append(self.run.records[self._next][1])
            self._next += 1
        return out

    @property
    def exhausted(self) -> bool:
        """Every record served and, at a pace, the recorded run's time over (it lasts as long)."""
        if self._next < len(self.run.records):
            return False
        return self.speed <= 0 or not self.recorded_duration_s or self._elapsed() >= self.recorded_duration_s

    @property
    def replayed_s(self) -> float | None:
        """Recorded time served so far: the whole run once every record was read, else (stopped
        early) the time replayed at this pace, never more than the recording holds."""
        if self.speed <= 0 or self.exhausted:
            return self.recorded_duration_s
        elapsed = self._elapsed() if self._t0 is not None else 0.0
        return round(min(elapsed, self.recorded_duration_s or elapsed), 3)

    def command_line(self) -> str:
        return self.run.command or generic_command(self.name, self.run.params)

    def describe_attach(self) -> str:
        return f"recorded run {self.run.run} of {self.name}"

    def describe_recorded(self) -> str:
        return recorded_with(self.run)

    def close(self) -> None:
        pass


def generic_command(probe: str, params: dict) -> str:
    """``netsleuth probe NAME --flag value ...`` from flag-keyed params (for probes not
    implemented here, or parameters this host cannot validate)."""
    import shlex

    parts = ["netsleuth", "probe", probe]
    for k, v in params.items():
        if v in (None, "", False):
            continue
        parts.append("--" + k.replace("_", "-"))
        if v is not True:
            parts.append(str(v))
    return " ".join(shlex.quote(p) for p in parts)


class RecordedBackend(BackendDefaults):
    """The wizard's backend over a recording: probes run from the recorded data."""

    mode = "replay"

    def __init__(self, recording: Recording, speed: float = 0.0):
        self.recording = recording
        self.speed = speed
        self._used: set[int] = set()

    def describe(self) -> str:
        return f"replay of {self.recording.path} (recorded on {self.recording.host.get('hostname', '?')})"

    def host_facts(self) -> dict:
        return dict(self.recording.host, replayed_from=self.recording.path)

    def netns(self) -> int | None:
        return self.recording.context.get("netns")

    def probe_class(self, name: str):
        from probes.registry import PROBES

        return PROBES.get(name)

    def flags(self, name: str):
        cls = self.probe_class(name)
        return cls.flags if cls else ()

    def availability(self, name: str) -> str | None:
        if any(r.probe == name for r in self.recording.runs):
            return None
        if self.probe_class(name) is None:
            return NOT_IMPLEMENTED
        return "not in this recording: the recorded session did not run this probe"

    def recorded_run(self, name: str, values: dict) -> RecordedRun | None:
        """The recorded run a step with these options would replay: one recorded with the same
        filters (unused first), else the next unused run of the probe — a replay cannot measure
        again with other filters, so the screens say what it was recorded with."""
        candidates = [r for r in self.recording.runs if r.probe == name]
        wanted = names(values)
        fresh = [r for r in candidates if r.run not in self._used]
        exact = [r for r in fresh if same_filters(r.params, wanted)] or \
                [r for r in candidates if same_filters(r.params, wanted)]
        return (exact or fresh or candidates or [None])[0]

    def build(self, name: str, values: dict) -> RecordedProbe:
        run = self.recorded_run(name, values)
        if run is None:
            raise KeyError(f"{name}: {self.availability(name)}")
        self._used.add(run.run)
        return RecordedProbe(run, self.speed)

    source = build

    def recorded_symptom(self) -> str | None:
        return self.recording.symptom

    def replay_start(self, lib) -> str | None:
        """Where the recorded walk starts (see replay_start); None: the playbook's start."""
        return replay_start(lib, self.recording)

    def context_prefill(self) -> dict:
        """The context the recording was made with: what the replayed runs measured."""
        return dict(self.recording.context)

    def command_line(self, name: str, values: dict) -> str:
        wanted = names(values)
        for r in self.recording.runs:
            if r.probe == name and r.command and same_filters(r.params, wanted):
                return r.command
        return generic_command(name, wanted)


def replay_start(lib, recording: Recording) -> str | None:
    """Where a replay of ``recording`` starts its walk: the symptom's first question when the
    first recorded run's step is reached from it by answers alone, else that step itself (a
    recording made from a later step, like the root-cause runs, lacks the probes that begin
    the symptom's walk, and could never be reached).  None: the playbook's own start."""
    from playbooks.model import Question

    pb = lib.playbooks.get(recording.symptom)
    first = next((r.step for r in recording.runs if r.step), None)
    known = lambda ref: ref in lib.questions or ref in lib.steps  # noqa: E731
    if pb is None or first is None or not known(first):
        return None
    seen, todo = set(), [pb.start]
    while todo:
        ref = todo.pop()
        if ref == first:
            return None
        if ref in seen or not known(ref):
            continue
        seen.add(ref)
        node = lib.node(ref)
        if isinstance(node, Question):
            todo += [a.goto for a in node.answers]
    return first


def recorded_with(run: RecordedRun) -> str:
    """'recorded with: Destination IP 10.0.0.2, Protocol udp' (what a replayed run measured),
    each filter by its form label."""
    from probes.registry import PROBES

    titles = {f.name: f.title for f in getattr(PROBES.get(run.probe), "flags", ())}
    return "recorded with: " + (", ".join(f"{titles.get(k, k)} {v}" for k, v in run.params.items()) or "no filters")
