"""Compile and load a probe's BPF C with the right include tree and constants,
and make sure every loaded program is detached whatever way the process ends.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from pathlib import Path

from .includes import choose_include_tree
from .offsets import OffsetsUnavailable, resolve, skb_window_cflags
from .params import CDefines

BPF_DIR = Path(__file__).resolve().parent.parent  # C sources live beside their drivers


class ProbeError(Exception):
    """A probe could not be loaded or run; the message says why in plain words."""


class ProbeStopped(BaseException):
    """Raised in the main thread on SIGTERM / SIGHUP so cleanup runs like on Ctrl-C."""


_live: "weakref.WeakSet" = weakref.WeakSet()
_live_lock = threading.Lock()


def _cleanup_all() -> None:
    with _live_lock:
        objs = list(_live)
    for bpf in objs:
        try:
            bpf.cleanup()
        except Exception:
            pass


atexit.register(_cleanup_all)


def _raise_stopped(signum, _frame):
    raise ProbeStopped(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into ProbeStopped (main thread only), so ``with`` blocks unwind."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_stopped)


def load(source: str, defines: CDefines, fields: list[str]):
    """Compile ``probes/<source>`` and return the ``bcc.BPF`` object."""
    tree = choose_include_tree()
    try:
        offsets = resolve(tree.has_kernel_structs)
        cflags = offsets.cflags(fields) + skb_window_cflags(offsets, fields)
    except OffsetsUnavailable as e:
        raise ProbeError(str(e)) from None
    if offsets.source == "headers":
        cflags.append("-DNS_KERNEL_HEADERS=1")
    if tree.kind == "stand-in":
        os.environ["BCC_KERNEL_SOURCE"] = str(tree.path)
    else:
        os.environ.pop("BCC_KERNEL_SOURCE", None)
    cflags += defines.cflags()
    cflags += [f"-I{BPF_DIR}", "-Wno-unused-function", "-Wno-macro-redefined"]
    try:
        from bcc import BPF  # imported late: `netsleuth --help` must work without bcc
    except ImportError:
        raise ProbeError(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) or "
            "python3-bcc (RHEL/openEuler) and run netsleuth from a venv made with "
            "--system-site-packages"
        ) from None
    install_signal_handlers()
    try:
        bpf = BPF(src_file=str(BPF_DIR / source).encode(), cflags=cflags)
    except Exception as e:  # BCC raises bare Exception on compile/load failures
        raise ProbeError(f"could not load {source}: {e}") from None
    with _live_lock:
        _live.add(bpf)
    return bpf


def unload(bpf) -> None:
    with _live_lock:
        _live.discard(bpf)
    bpf.cleanup()
