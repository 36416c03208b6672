"""One thread per probe instance: it starts the probe, reads it when a scrape asks,
and closes it; every BPF call of that probe happens in that thread.

A scrape asks every runner at once and waits for each until one shared deadline:
a slow read is served from the previous read's totals (and counted), never waited
for.  A probe that fails to load, or whose read fails, is closed and marked down
with the reason; one whose hooks went (a module unloaded, its device deleted, its
process exited: Probe.gone()) is closed and marked detached, with the reason; the
other runners go on.
"""

from __future__ import annotations

import sys
import threading
import time

from probes.base import Unavailable
from probes.runtime.loader import ProbeError
from probes.runtime.maps import map_fill
from probes.runtime.stop import ProbeStopped

from .series import SERIES, ProbeSeries
from .specs import NO_SERIES, Spec

STARTING, UP, DOWN, DETACHED, STOPPED = "starting", "up", "down", "detached", "stopped"

# BCC compiles with an environment variable (the include tree) set process-wide:
# one probe loads at a time.
_START_LOCK = threading.Lock()


def _log(line: str) -> None:
    print(f"netsleuth exporter: {line}", file=sys.stderr, flush=True)


class Detached(Exception):
    """What the probe follows is gone (the message says what)."""


def _why(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, (Unavailable, ProbeError)) else f"{type(e).__name__}: {text}"


class ProbeRunner:
    def __init__(self, spec: Spec, max_series: int) -> None:
        self.id, self.name, self.probe = spec.id, spec.name, spec.probe
        self.state = DOWN if spec.down_reason else STARTING
        self.reason = spec.down_reason or ""
        self.attach = ""
        self.read_errors = self.read_timeouts = 0
        self.read_seconds: float | None = None
        self.maps: list[tuple[str, int, int]] = []
        series_cls = SERIES.get(spec.name)
        if self.probe is not None and series_cls is None:
            self.state, self.reason, self.probe = DOWN, NO_SERIES, None
        self.series: ProbeSeries | None = series_cls(self.probe, max_series) if self.probe is not None else None
        self.lock = threading.Lock()  # series and the fields above, against the scrape threads
        self._cv = threading.Condition()
        self._asked = self._answered = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"probe {self.id}", daemon=True)

    # lifecycle (the runner's own thread) --------------------------------------
    def start(self) -> None:
        if self.state == STARTING:
            self.thread.start()

    def _run(self) -> None:
        try:
            with _START_LOCK:
                if self._stop.is_set():
                    return
                self.probe.start()
            with self.lock:
                self.state, self.attach = UP, self.probe.describe_attach()
            _log(f"{self.id}: up ({self.attach})")
            self._serve()
        except ProbeStopped:  # a stop signal seen inside the probe's own code: shutting down
            pass
        except Detached as e:
            with self.lock:
                self.state, self.reason = DETACHED, str(e)
            _log(f"{self.id}: detached: {self.reason}")
        except Exception as e:  # load or read failed: this probe is down, the others go on
            with self.lock:
                self.state, self.reason = DOWN, _why(e)
            _log(f"{self.id}: down: {self.reason}")
        finally:
            try:
                self.probe.close()
            finally:
                with self.lock:
                    if self.state in (UP, STARTING):
                        self.state = STOPPED
                with self._cv:
                    self._cv.notify_all()

    def _serve(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._asked > self._answered or self._stop.is_set())
                if self._stop.is_set():
                    return
                ticket = self._asked
            self._read()
            with self._cv:
                self._answered = ticket
                self._cv.notify_all()

    def _read(self) -> None:
        began = time.monotonic()
        gone = self.probe.gone()
        if gone:
            raise Detached(gone)  # the totals up to the previous read stay served
        try:
            records = self.probe.read()
            maps = map_fill(self.probe.bpf) if getattr(self.probe, "bpf", None) is not None else []
        except Exception as e:
            with self.lock:
                self.read_errors += 1
            raise ProbeError(f"read failed, probe closed: {_why(e)}") from e
        with self.lock:
            self.series.add(records)
            self.maps = maps
            self.read_seconds = time.monotonic() - began

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)

    # scrape side (any thread) -------------------------------------------------
    def ask(self) -> int | None:
        """Ask for a read; the ticket to wait for, None when the probe is not up."""
        with self.lock:
            if self.state != UP:
                return None
        with self._cv:
            self._asked += 1
            self._cv.notify_all()
            return self._asked

    def wait(self, ticket: int | None, deadline: float) -> None:
        """Wait for the read ``ticket`` until ``deadline`` (monotonic); past it, count a timeout."""
        if ticket is None:
            return
        with self._cv:
            done = self._cv.wait_for(
                lambda: self._answered >= ticket or self.state != UP or not self.thread.is_alive(),
                timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            with self.lock:
                self.read_timeouts += 1
