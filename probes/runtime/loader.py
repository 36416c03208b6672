"""Compile and load a probe's BPF C with the right include tree and constants,
and make sure every loaded program is detached whatever way the process ends.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import threading
import weakref
from pathlib import Path

from .includes import choose_include_tree
from .layout import layout_checks, mismatch
from .offsets import OffsetsUnavailable, resolve, window_cflags
from .params import CDefines

BPF_DIR = Path(__file__).resolve().parent.parent  # C sources live beside their drivers


class ProbeError(Exception):
    """A probe could not be loaded or run; the message says why in plain words."""


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


# Shared C that calls maps (netsleuth_*.inc.c): BCC rewrites map calls only in the main
# file, so these are pasted into the program's text instead of being #included.
_MAIN_FILE_INCLUDE = re.compile(r'^#include "(netsleuth_\w+\.inc\.c)"[ \t]*$', re.M)


_SHARED_HEADER = re.compile(r'^#include "(\w+\.h)"[ \t]*$', re.M)


def program_text(source: str) -> str:
    """The C text of ``probes/<source>`` with its main-file includes pasted in, and the
    layout checks of the ctypes mirrors of the structs it or its shared headers mention."""
    path = BPF_DIR / source
    try:
        text = _MAIN_FILE_INCLUDE.sub(lambda m: (BPF_DIR / m.group(1)).read_text(), path.read_text())
        headers = [(BPF_DIR / h).read_text() for h in _SHARED_HEADER.findall(text) if (BPF_DIR / h).is_file()]
    except OSError as e:
        raise ProbeError(f"could not read the BPF program {path}: {e.strerror}") from None
    return text + layout_checks([text, *headers])


_RECOMPILE = "import sys; from bcc import BPF; BPF(text=sys.stdin.buffer.read(), cflags=sys.argv[1:])"


def compiler_output(text: str, cflags: list[str]) -> str:
    """Clang's diagnostics for a program that failed to compile. BCC prints them to fd 2 and
    raises a bare "Failed to compile"; fd 2 is the wizard's screen (Textual draws on stderr),
    so the program is compiled again in a child whose stderr is a pipe."""
    try:
        child = subprocess.run([sys.executable, "-c", _RECOMPILE, *cflags], input=text.encode(),
                               capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return ""
    return child.stderr.decode(errors="replace")


def load(source: str, defines: CDefines, fields: list[str]):
    """Compile ``probes/<source>`` and return the ``bcc.BPF`` object."""
    try:
        tree = choose_include_tree()
        cflags: list[str] = []
        # Only programs that read kernel structs need to know where their fields are:
        # the others run without BTF or matching headers too.
        if fields:
            offsets = resolve(tree.has_kernel_structs)
            cflags = offsets.cflags(fields) + window_cflags(offsets, fields)
            if offsets.source == "headers":
                cflags.append("-DNS_KERNEL_HEADERS=1")
    except OffsetsUnavailable as e:
        raise ProbeError(str(e)) from None
    except OSError as e:  # the cache directory or the include tree could not be written
        raise ProbeError(f"could not prepare the build of {source}: {e}") from None
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
    text = program_text(source)
    try:
        bpf = BPF(text=text.encode(), cflags=cflags)
    except Exception as e:  # BCC raises bare Exception on compile/load failures
        why = mismatch(compiler_output(text, cflags)) if "Failed to compile" in str(e) else None
        raise ProbeError(f"could not load {source}: {why or e}") from None
    with _live_lock:
        _live.add(bpf)
    return bpf


def recursion_misses(bpf, but: tuple[bytes, ...] = ()) -> int:
    """Runs the kernel skipped, over the programs of ``bpf`` (``but`` these): a program is not
    run again on a CPU where it is already running (a drop in an interrupt that came during
    one), and it counts each such miss (``recursion_misses`` in the program's fdinfo, 5.12+;
    0 before)."""
    total = 0
    for name, fn in list(bpf.funcs.items()):
        if name in but:
            continue
        try:
            text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        except OSError:
            continue
        m = re.search(r"^recursion_misses:\s*(\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def unload(bpf) -> None:
    with _live_lock:
        _live.discard(bpf)
    bpf.cleanup()
