"""What the event probes share: a BCC perf buffer, polled with flow control, its losses reported.

BCC's ``perf_buffer_poll`` reads for as long as events keep coming and calls
Python for each: under a flood it never returns, and every event costs the GIL
whether decoded or not.  So the kernel sends only what will be decoded: before
each poll the stream grants the program credit (``netsleuth_events.inc.c``),
the events up to MAX_BACKLOG per read, or none when the probe is stopping; the
program holds the rest back and counts them, and they are reported as lost.
A consumer that must stay responsive (the wizard's UI shares the GIL with the
decoding) sets ``decode_share``, the fraction of the time decoding may take: a
token bucket, refilled per poll and spent per event, sizes the credit (the
tokens over the measured cost of one event), so the work per second is bounded
by the share, not by the event rate, and the events decoded are the latest
poll's (the newest are recent).
``interrupt()`` (from another thread) revokes the credit: the poll returns
within its timeout.  A signal handled inside the callback (Python runs handlers
at the next bytecode, which under load is in the callback, where ctypes would
print and drop the exception) is kept and raised once the poll has returned.
"""

from __future__ import annotations

import ctypes as ct
import time
from typing import Callable

from .runtime import stop as stopping
from .runtime.stop import ProbeStopped

MAX_BACKLOG = 20_000  # events taken between two reads before the kernel side is held
MAX_DECODE_ERRORS = 5
BURST_S = 0.2  # decode_share: the most decoding time saved up (or owed), per second of share
FIRST_COST_S = 0.001  # decode_share: one event's decoding time until measured


class EventStream:
    """Mixin for a Probe whose BPF program sends its events with ``ns_emit``.

    ``on_event(data_pointer, size)`` decodes one event and appends records to
    ``self._pending``; ``take_events()`` hands them over with a ``lost_events``
    record whenever events went missing."""

    decode_share: float | None = None  # of the wall-clock time, for decoding; None: no limit
    wakes_on_events = True  # poll_events returns as events come (base.SourceDefaults)
    _interrupted = False
    _credit = None  # the program's credit map, once open_events ran

    def open_events(self, bpf, on_event: Callable[[int, int], None], page_cnt: int = 64) -> None:
        self._pending: list[dict] = []
        self.events_lost = 0  # perf buffer full, or held back while the probe was behind
        self._lost_reported = 0
        self._held_counted = 0
        self.decode_errors: list[str] = []
        self._stop: BaseException | None = None
        self._backlog = 0
        self._tokens = self._burst()  # decoding CPU seconds left (decode_share)
        self._cost = FIRST_COST_S  # one event's decoding time, a moving average
        self._refilled = time.perf_counter()
        self._credit = bpf[b"credit"]

        def callback(_cpu, data, size):
            try:
                if self._interrupted or self._over_budget():
                    self.events_lost += 1  # already in the buffer: counted, not decoded
                    return
                self._backlog += 1
                t0 = time.thread_time()  # the CPU it takes, not the waits for the CPU or the GIL
                on_event(data, size)
                took = time.thread_time() - t0
                self._tokens = max(self._tokens - took, -self._burst())  # one slow event: a short pause
                self._cost += (took - self._cost) / 8
                if stopping.requested() and self._granted:
                    self._grant(0)
            except (KeyboardInterrupt, ProbeStopped) as stop:
                self._stop = self._stop or stop
                self._grant(0)
            except Exception as exc:  # one undecodable event must not end the stream
                if len(self.decode_errors) < MAX_DECODE_ERRORS:
                    self.decode_errors.append(repr(exc))

        def lost(count):
            try:
                self.events_lost += count
            except (KeyboardInterrupt, ProbeStopped) as stop:
                self._stop = self._stop or stop
                self._grant(0)

        bpf[b"events"].open_perf_buffer(callback, page_cnt=page_cnt, lost_cb=lost)
        self._grant(self._affordable())  # events before the first poll wait in the buffer

    def _grant(self, events: int) -> None:
        """Let the program send ``events`` more (0: hold them back); count what it held back."""
        self._credit[ct.c_int(0)] = self._credit.Leaf(events)
        self._granted = events
        self._count_held()

    def _count_held(self) -> None:
        if self._credit is None:
            return  # no stream open: nothing held back
        held = self._credit[ct.c_int(1)].value
        self.events_lost += held - self._held_counted
        self._held_counted = held

    def _affordable(self) -> int:
        """The events to decode until the next poll: room in this read, within the decoding budget."""
        room = max(0, MAX_BACKLOG - self._backlog)
        if self.decode_share is None:
            return room
        if self._tokens <= 0:
            return 0
        return min(room, max(1, int(self._tokens / max(self._cost, 1e-6))))  # 1: the cost is measured again

    def _over_budget(self) -> bool:
        return self.decode_share is not None and self._tokens <= 0

    def _burst(self) -> float:
        return (self.decode_share or 0) * BURST_S

    def _refill(self) -> None:
        now = time.perf_counter()
        if self.decode_share is not None:
            self._tokens = min(self._tokens + (now - self._refilled) * self.decode_share, self._burst())
        self._refilled = now

    def interrupt(self) -> None:
        """Stop decoding now (called from another thread): the credit is revoked, what is
        still in the buffer drains uncounted into lost, and the poll returns; the owner's
        loop then stops."""
        self._interrupted = True
        credit = self._credit
        if credit is not None and self.bpf is not None:
            try:
                credit[ct.c_int(0)] = credit.Leaf(0)
            except Exception:  # noqa: BLE001 - closing meanwhile: nothing left to hold
                pass

    def poll_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for events; a stop signal seen meanwhile is raised here."""
        if self._interrupted:
            return
        self._refill()
        self._grant(0 if stopping.requested() else self._affordable())
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
        self._count_held()
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
