"""What the event probes share: a BCC perf buffer, polled with flow control, its losses reported.

BCC's ``perf_buffer_poll`` reads for as long as events keep coming: under a
flood it never returns to Python.  So the event callback (called from C inside
the poll) holds the program's events back (``netsleuth_events.inc.c``) when
the probe is stopping or when more than MAX_BACKLOG events wait for a read;
the buffer drains, the poll returns, and the held-back events are counted as
lost.  A consumer that must stay responsive (the wizard's UI shares the GIL with
the decoding) sets ``decode_share``, the fraction of the time decoding may take:
a token bucket, spent per event and refilled per poll, holds the stream when it
runs dry, so the events decoded are spread over the whole read interval (the
newest are recent); those still in the buffer then are counted, not decoded.
``interrupt()`` (from another thread) ends a poll within a buffer's drain.
A signal handled inside the callback (Python runs handlers at the next
bytecode, which under load is in the callback, where ctypes would print and
drop the exception) is kept and raised once the poll has returned.
"""

from __future__ import annotations

import ctypes as ct
import time
from typing import Callable

from .runtime import stop as stopping
from .runtime.stop import ProbeStopped

MAX_BACKLOG = 20_000  # events taken between two reads before the kernel side is held
MAX_DECODE_ERRORS = 5
BURST_S = 0.2  # decode_share: the most decoding time saved up, per second of share


class EventStream:
    """Mixin for a Probe whose BPF program sends its events with ``ns_emit``.

    ``on_event(data_pointer, size)`` decodes one event and appends records to
    ``self._pending``; ``take_events()`` hands them over with a ``lost_events``
    record whenever events went missing."""

    decode_share: float | None = None  # of the wall-clock time, for decoding; None: no limit
    wakes_on_events = True  # poll_events returns as events come (base.SourceDefaults)
    _interrupted = False

    def open_events(self, bpf, on_event: Callable[[int, int], None], page_cnt: int = 64) -> None:
        self._pending: list[dict] = []
        self.events_lost = 0  # perf buffer full, or held back while the probe was behind
        self._lost_reported = 0
        self._held_counted = 0
        self.decode_errors: list[str] = []
        self._stop: BaseException | None = None
        self._backlog = 0
        self._holding = False
        self._tokens = 0.0  # decoding seconds left (decode_share)
        self._refilled = time.perf_counter()
        self._hold = bpf[b"hold"]

        def callback(_cpu, data, size):
            try:
                if self._interrupted or self._over_budget():
                    self.events_lost += 1  # already in the buffer: counted, not decoded
                    return
                self._backlog += 1
                t0 = time.perf_counter()
                on_event(data, size)
                self._tokens -= time.perf_counter() - t0
                if (self._backlog >= MAX_BACKLOG or self._over_budget() or stopping.requested()) \
                        and not self._holding:
                    self._set_hold(True)
            except (KeyboardInterrupt, ProbeStopped) as stop:
                self._stop = self._stop or stop
                self._set_hold(True)
            except Exception as exc:  # one undecodable event must not end the stream
                if len(self.decode_errors) < MAX_DECODE_ERRORS:
                    self.decode_errors.append(repr(exc))

        def lost(count):
            try:
                self.events_lost += count
            except (KeyboardInterrupt, ProbeStopped) as stop:
                self._stop = self._stop or stop
                self._set_hold(True)

        bpf[b"events"].open_perf_buffer(callback, page_cnt=page_cnt, lost_cb=lost)

    def _set_hold(self, on: bool) -> None:
        self._hold[ct.c_int(0)] = self._hold.Leaf(int(on))
        self._holding = on
        if not on:  # what the kernel held back meanwhile
            held = self._hold[ct.c_int(1)].value
            self.events_lost += held - self._held_counted
            self._held_counted = held

    def _over_budget(self) -> bool:
        return self.decode_share is not None and self._tokens <= 0

    def _refill(self) -> None:
        now = time.perf_counter()
        if self.decode_share is not None:
            self._tokens = min(self._tokens + (now - self._refilled) * self.decode_share,
                               self.decode_share * BURST_S)
        self._refilled = now

    def interrupt(self) -> None:
        """Stop decoding now (called from another thread): the kernel side is held, the buffer
        drains uncounted into lost, and the poll returns; the owner's loop then stops."""
        self._interrupted = True
        hold = getattr(self, "_hold", None)
        if hold is not None and self.bpf is not None:
            try:
                hold[ct.c_int(0)] = hold.Leaf(1)
            except Exception:  # noqa: BLE001 - closing meanwhile: nothing left to hold
                pass

    def poll_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for events; a stop signal seen meanwhile is raised here."""
        if self._interrupted:
            return
        self._refill()
        if self._holding and self._backlog < MAX_BACKLOG and not self._over_budget():
            self._set_hold(False)
        self.bpf.perf_buffer_poll(timeout=int(timeout * 1000))
        stop, self._stop = self._stop, None
        if stop is not None:
            raise stop
        stopping.check()

    def take_events(self) -> list[dict]:
        """The records decoded since the last call, in time order (per-CPU buffers are
        drained one CPU after the other), and a ``lost_events`` record when events were
        lost or undecodable since the last one: a consumer must know the stream has gaps."""
        out, self._pending = sorted(self._pending, key=lambda r: r.get("ktime_ns", 0)), []
        self._backlog = 0
        new = self.events_lost - self._lost_reported
        if new or self.decode_errors:
            self._lost_reported = self.events_lost
            errors, self.decode_errors = self.decode_errors, []
            out.append({"type": "lost_events", "count": new, "total": self.events_lost, "decode_errors": errors})
        return out

    @staticmethod
    def lost_text(record: dict) -> str:
        text = (f"WARNING: {record['count']} events lost ({record['total']} in all; the perf buffer was full "
                "or the probe fell behind): filter more tightly")
        if record.get("decode_errors"):
            text += f"; {len(record['decode_errors'])} events could not be decoded: {record['decode_errors'][0]}"
        return text
