"""Stopping a probe on Ctrl-C, SIGTERM or SIGHUP, wherever the main thread is.

The signal handler only notes the signal.  Raising from it would raise at
whatever bytecode the main thread runs next, which under load is inside a BCC
perf-buffer callback, called from C: ctypes prints such an exception and drops
it, and the probe would run on.  The probes' waits check the note instead
(``check``, ``sleep``; the event streams in probes/events.py) and raise
ProbeStopped there, so ``with`` blocks unwind and detach.
"""

from __future__ import annotations

import signal
import threading
import time

SLICE_S = 0.05  # the longest a wait sleeps before it looks for a stop again


class ProbeStopped(BaseException):
    """A stop signal arrived (or the traced process went away): unwind like on Ctrl-C."""


_received: list[str] = []  # the first stop signal's name


def _note(signum, _frame) -> None:
    if not _received:
        _received.append(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """For the command-line entry points: SIGINT, SIGTERM and SIGHUP stop the probes (main
    thread only; Python handlers someone else installed are left alone).

    SIGINT and SIGTERM stop a probe even when it started with them ignored, as a shell's
    background job starts (``netsleuth probe ... &`` then ``kill -INT``), like perf and
    bpftrace.  An ignored SIGHUP stays ignored: that is ``nohup``, a run meant to outlive
    the terminal."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN and sig == signal.SIGHUP:
            continue
        if current in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None):
            signal.signal(sig, _note)


def requested() -> bool:
    return bool(_received)


def check() -> None:
    """Raise ProbeStopped when a stop signal has arrived."""
    if _received:
        raise ProbeStopped(f"signal {_received[0]}")


def sleep(seconds: float) -> None:
    """time.sleep that ends early, with ProbeStopped, when a stop signal arrives."""
    end = time.monotonic() + seconds
    while True:
        check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, SLICE_S))
