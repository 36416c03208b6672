#!/usr/bin/env python3
"""Time per run of the drop probes' BPF programs, from the kernel's own counters
(kernel.bpf_stats_enabled: run_time_ns / run_cnt per program), while every packet of a
UDP blast to a closed port in a namespace is dropped (run as root; needs bpftool).

The counter reads the clock twice per run, so the times include that; they compare
programs and settings, and say what one drop costs the CPU that drops it.

    sudo .venv/bin/python bench/drop_program_cost.py [--seconds 2] [--rounds 3] [--write]
"""

from __future__ import annotations

import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bpf_stats import fd_stats, program_stats, stats_enabled  # noqa: E402
from bench.report import bench_arguments, publish  # noqa: E402
from bench.toggle import empty_raw_tracepoint_program  # noqa: E402
from tests.netenv import ProbeProcess, veth_ns  # noqa: E402

SETTINGS = [
    ("drop-summary", ["-i", "3600"]),
    # a flow filter: every drop parsed for its flow (no sampling), as before issue 18
    ("drop-summary", ["-i", "3600", "--l4-protocol", "udp"]),
    ("drop-summary", ["-i", "3600", "--group-by", "stack"]),
    ("drop-summary", ["-i", "3600", "--exact-stacks"]),
    # drop-details would print every one of the blast's drops: measured with a filter
    # that rejects them all, the cost of looking at a drop it does not want.
    ("drop-details", ["--dst-port", "1"]),
]


# The floor: a program that does nothing, on the same hook (the dispatch and the stats' clock reads).
FLOOR = "empty program on the raw tracepoint kfree_skb (the floor)"


def empty_program_cost(drop_all, tmp: Path) -> tuple[int, int]:
    """(runs, ns) of an empty program attached to the raw tracepoint while drop_all() runs."""
    bpf = empty_raw_tracepoint_program(tmp)
    try:
        bpf.attach_raw_tracepoint(tp=b"kfree_skb", fn_name=b"empty")
        fd = bpf.funcs[b"empty"].fd
        before = fd_stats(fd)
        drop_all()
        after = fd_stats(fd)
    finally:
        bpf.cleanup()
    return after[0] - before[0], after[1] - before[1]


def main() -> int:
    args = bench_arguments(__doc__, ("--seconds", float, 2.0), ("--rounds", int, 3))
    if not shutil.which("bpftool"):
        print("install bpftool (apt install bpftool)", file=sys.stderr)
        return 2
    runs: dict[tuple[str, str], list[tuple[int, float]]] = {}  # (setting, program) -> [(runs, ns per run)]
    with tempfile.TemporaryDirectory() as tmp, veth_ns() as env:
        blast = Path(tmp) / "udpblast"
        subprocess.run(["gcc", "-O2", "-o", str(blast), str(ROOT / "bench/udpblast.c")], check=True)

        def drop_all() -> None:
            subprocess.run([str(blast), "send", env.peer_ip, "9", str(args.seconds)], capture_output=True, check=True)

        with stats_enabled():
            for _ in range(args.rounds):  # settings interleaved, so the host's drift hits them alike
                cnt, ns = empty_program_cost(drop_all, Path(tmp))
                runs.setdefault((FLOOR, "empty"), []).append((cnt, ns / max(cnt, 1)))
                for name, flags in SETTINGS:
                    known = set(program_stats())
                    probe = ProbeProcess(name, "--json", *flags)
                    try:
                        ours = {i: s for i, s in program_stats().items() if i not in known}
                        drop_all()
                        after = program_stats()
                    finally:
                        probe.stop()
                    for pid, (prog, cnt0, ns0) in ours.items():
                        _, cnt, ns = after.get(pid, (prog, cnt0, ns0))
                        if cnt > cnt0:
                            label = f"`{name} {' '.join(flags)}`".strip()
                            runs.setdefault((label, prog), []).append((cnt - cnt0, (ns - ns0) / (cnt - cnt0)))
    lines = ["| probe and flags | program | runs (all rounds) | ns per run: median of rounds | range |",
             "|---|---|---|---|---|"]
    for (label, prog), got in runs.items():
        per_run = [ns for _, ns in got]
        lines.append(f"| {label} | {prog} | {sum(c for c, _ in got):,} | {statistics.median(per_run):.0f} "
                     f"| {min(per_run):.0f}–{max(per_run):.0f} |")
    publish("drop-program-cost", "Drop probes: time per program run (this machine)",
            f"kernel {platform.release()}: {args.rounds} rounds, the settings interleaved; in each, every packet "
            f"of a {args.seconds:g} s UDP blast to a closed port dropped; `kernel.bpf_stats_enabled` counters "
            "(they add two clock reads per run, in the floor's figure too).",
            "\n".join(lines), "bench/drop_program_cost.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
