#!/usr/bin/env python3
"""What cpu-starvation costs the host: its sched_switch program runs at every context switch
on the host, its wake-up program at every wake-up.  Two processes pinned to one CPU
ping-pong a byte through pipes (two context switches and two wake-ups per round trip) while
the probe traces an idle process (what every switch of the host pays) or the ping-pong
itself (what the traced threads' switches pay); the time per program run comes from the
kernel's own counters (BPF_ENABLE_STATS, held by this process only: reference-counted, so
another benchmark's `kernel.bpf_stats_enabled` is left alone).  The counters read the
clock twice per run: the times include that.

    sudo .venv/bin/python bench/cpu_starvation_cost.py [--seconds 3] [--write]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bpf_stats import program_stats  # noqa: E402
from bench.report import publish  # noqa: E402
from tests.netenv import ProbeProcess  # noqa: E402

PINGPONG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv)
{
    int a[2], b[2];
    char c = 0;
    double seconds = atof(argv[1]);
    if (pipe(a) || pipe(b))
        return 1;
    if (fork() == 0) {  /* pong: it ends when the ping side's pipe end closes */
        close(a[1]);
        close(b[0]);
        fclose(stdout);
        while (read(a[0], &c, 1) == 1)
            if (write(b[1], &c, 1) != 1)
                return 1;
        return 0;
    }
    close(a[0]);
    close(b[1]);
    getchar();  /* go */
    long trips = 0;
    double end = now() + seconds, start = now();
    while (now() < end) {
        if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
            return 1;
        trips++;
    }
    printf("%.0f\n", trips / (now() - start));
    return 0;
}
"""


BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0


def enable_stats() -> int:
    """A file descriptor that keeps the kernel's BPF run-time counters on while it is open."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(BPF_STATS_RUN_TIME.to_bytes(4, "little"), 8)
    fd = libc.syscall(BPF_SYSCALL[platform.machine()], BPF_ENABLE_STATS, attr, 8)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "bpf(BPF_ENABLE_STATS)")
    return fd


def measure(binary: Path, cpu: int, seconds: float, trace: str, idle_pid: int) -> list[tuple[str, int, float, float]]:
    """(program, runs, ns per run, round trips/s) while the ping-pong runs under the probe."""
    proc = subprocess.Popen(["taskset", "-c", str(cpu), str(binary), str(seconds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    known = set(program_stats())
    probe = ProbeProcess("cpu-starvation", "-p", str(idle_pid if trace == "idle" else proc.pid), "-i", "3600")
    try:
        ours = {i: s for i, s in program_stats().items() if i not in known}
        out, _ = proc.communicate("go\n", timeout=seconds + 30)
        after = program_stats()
    finally:
        probe.stop()
        if proc.poll() is None:
            proc.kill()
    rows = []
    for pid, (prog, cnt0, ns0) in sorted(ours.items()):
        _, cnt, ns = after.get(pid, (prog, cnt0, ns0))
        if cnt > cnt0:
            rows.append((prog, cnt - cnt0, (ns - ns0) / (cnt - cnt0), float(out.strip())))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--write", action="store_true", help="write its section of docs/performance.md")
    args = ap.parse_args()
    if os.geteuid() != 0 or platform.machine() not in BPF_SYSCALL:
        print("run as root on x86_64 or aarch64, with bpftool installed", file=sys.stderr)
        return 2
    cpu = max(os.sched_getaffinity(0))
    stats = enable_stats()
    lines = ["| the probe traces | program | runs | ns per run | ping-pong round trips/s |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp) / "pingpong.c", Path(tmp) / "pingpong"
        src.write_text(PINGPONG)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
        idle = subprocess.Popen(["sleep", "3600"])
        try:
            for label, trace in (("an idle process (every other switch of the host)", "idle"),
                                 ("the ping-pong (its own switches)", "self")):
                for prog, runs, ns, rate in measure(binary, cpu, args.seconds, trace, idle.pid):
                    lines.append(f"| {label} | {prog} | {runs:,} | {ns:.0f} | {rate:,.0f} |")
        finally:
            idle.kill()
            idle.wait()
            os.close(stats)
    publish("cpu-starvation-cost", "cpu-starvation: time per program run (this machine)",
            f"kernel {platform.release()}, {os.cpu_count()} CPUs, shared and loaded: two processes pinned to "
            f"CPU {cpu} ping-pong a byte through pipes for {args.seconds:g} s; the programs run for every "
            "switch and wake-up of the host meanwhile; per-run times from the kernel's counters.",
            "\n".join(lines), "bench/cpu_starvation_cost.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
