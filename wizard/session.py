"""The session journal: every move of a walk, written as it happens, so nothing is lost.

One JSON-lines file per session under the sessions directory
(``/var/lib/netsleuth/sessions`` as root, ``~/.local/state/netsleuth/sessions``
otherwise; ``NETSLEUTH_SESSIONS`` overrides both).  The first line describes the
session; every later line is one walk event (see playbooks/engine.py) with the
time it happened, flushed and fsynced before the walk goes on.  A session with
no "end" line was interrupted and can be resumed: its events rebuild the walk.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from playbooks.engine import Availability, Walk
from playbooks.model import Library

from .durable import fsync_dir
from .jsonl import json_lines
from .steprun import now_iso

JOURNAL_VERSION = 1
ROOT_SESSIONS = Path("/var/lib/netsleuth/sessions")


class SessionError(ValueError):
    """A journal that cannot be read or resumed (the message says which file and why)."""


def sessions_dir() -> Path:
    env = os.environ.get("NETSLEUTH_SESSIONS")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return ROOT_SESSIONS
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "netsleuth" / "sessions"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclass
class SessionInfo:
    path: Path
    id: str
    created: str
    symptom: str | None
    ended: bool
    events: int

    @property
    def resumable(self) -> bool:
        """Interrupted with a walk to rebuild (a journal with only its header has none)."""
        return not self.ended and self.events > 0


class Session:
    """An open journal; ``write`` is the walk's ``on_event``."""

    def __init__(self, path: Path, header: dict, fd: int):
        self.path = path
        self.header = header
        self.id = header["id"]
        self._f = os.fdopen(fd, "a", encoding="utf-8")

    @classmethod
    def create(cls, symptom: str | None, context: dict, host: dict, directory: str | Path | None = None,
               mode: str = "interactive") -> "Session":
        base = _private_dir(Path(directory) if directory else sessions_dir())
        sid = datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + (symptom or "session") + "-" + secrets.token_hex(3)
        path = base / f"{sid}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = {"type": "session", "version": JOURNAL_VERSION, "id": sid, "created": now_iso(),
                  "symptom": symptom, "context": context, "host": host, "mode": mode}
        s = cls(path, header, fd)
        s._line(header)
        fsync_dir(base)  # the new journal's name, not only its first line
        return s

    def _line(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def write(self, event: dict) -> None:
        """Journal one walk event (with the time it happened); durable when this returns."""
        self._line({"at": now_iso(), **event})

    def end(self, conclusion: dict | None = None, reports: dict | None = None) -> None:
        self.write({"event": "end", "conclusion": conclusion, "reports": reports})

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_journal(path: str | Path) -> tuple[dict, list[dict]]:
    """(header, events) of a journal; a last line cut short by a crash is ignored."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SessionError(f"{p}: cannot read: {e.strerror}") from None
    header, events = None, []
    for _, obj in json_lines(lines, p, SessionError):
        if header is None:
            if not isinstance(obj, dict) or obj.get("type") != "session":
                raise SessionError(f"{p}: not a netsleuth session journal (no 'session' header line)")
            header = obj
        else:
            events.append({k: v for k, v in obj.items() if k != "at"})
    if header is None:
        raise SessionError(f"{p}: empty journal")
    return header, events


def list_sessions(directory: str | Path | None = None) -> list[SessionInfo]:
    """Journals in the directory, newest first."""
    base = Path(directory) if directory else sessions_dir()
    out = []
    for p in sorted(base.glob("*.jsonl"), reverse=True):
        try:
            header, events = read_journal(p)
        except SessionError:
            continue
        out.append(SessionInfo(p, header["id"], header.get("created", ""), header.get("symptom"),
                               any(e.get("event") == "end" for e in events), len(events)))
    return out


def interrupted_sessions(directory: str | Path | None = None) -> list[SessionInfo]:
    return [s for s in list_sessions(directory) if s.resumable]


def _drop_cut_line(path: Path) -> None:
    """Cut off a last line the crash left half written, so new lines start on a line of their own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def resume(path: str | Path, lib: Library, availability: Availability | None = None) -> tuple[Session, Walk]:
    """Reopen an interrupted session: the walk rebuilt from its events, the journal open to append."""
    header, events = read_journal(path)
    walk_events = [e for e in events if e.get("event") != "end"]
    try:
        walk = Walk.from_events(lib, walk_events, availability)
    except (ValueError, KeyError) as e:
        raise SessionError(f"{path}: cannot rebuild the walk: {e}") from None
    _drop_cut_line(Path(path))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    session = Session(Path(path), header, fd)
    session.write({"event": "note", "text": "session resumed"})
    walk.on_event = session.write
    return session, walk
