"""The kernel's per-program BPF run counters (run_cnt, run_time_ns), as the benches read them.

They count only while `kernel.bpf_stats_enabled` is on (or a BPF_ENABLE_STATS fd is held);
each run then reads the clock twice, which the times include.  A kprobe's own dispatch
(breakpoint or ftrace trampoline, before the program runs) is not in run_time_ns.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def fd_stats(fd: int) -> tuple[int, int]:
    """(run_cnt, run_time_ns) of the program behind this process's file descriptor."""
    text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    return tuple(int(re.search(rf"^{k}:\s*(\d+)", text, re.M).group(1)) for k in ("run_cnt", "run_time_ns"))


def program_stats() -> dict[int, tuple[str, int, int]]:
    """Every loaded program, by id: (name, run_cnt, run_time_ns) (needs bpftool)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("name", "?"), p.get("run_cnt", 0), p.get("run_time_ns", 0)) for p in json.loads(out)}


@contextlib.contextmanager
def stats_enabled():
    """kernel.bpf_stats_enabled=1 within, its earlier value restored after."""
    before = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    try:
        yield
    finally:
        SYSCTL.write_text(before)
