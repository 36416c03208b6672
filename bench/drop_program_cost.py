#!/usr/bin/env python3
"""Time per run of the drop probes' BPF programs, from the kernel's own counters
(kernel.bpf_stats_enabled: run_time_ns / run_cnt per program), while every packet of a
UDP blast to a closed port in a namespace is dropped (run as root; needs bpftool).

The counter reads the clock twice per run, so the times include that; they compare
programs and settings, and say what one drop costs the CPU that drops it.

    sudo .venv/bin/python bench/drop_program_cost.py [--seconds 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
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


def program_stats() -> dict[int, tuple[str, int, int]]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("name", "?"), p.get("run_cnt", 0), p.get("run_time_ns", 0)) for p in json.loads(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--write", action="store_true", help="write its section of docs/performance.md")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("bpftool"):
        print("run as root, with bpftool installed (apt install bpftool)", file=sys.stderr)
        return 2
    sysctl = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = sysctl.read_text().strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, veth_ns() as env:
        blast = Path(tmp) / "udpblast"
        subprocess.run(["gcc", "-O2", "-o", str(blast), str(ROOT / "bench/udpblast.c")], check=True)
        sysctl.write_text("1")
        try:
            for name, flags in SETTINGS:
                known = set(program_stats())
                probe = ProbeProcess(name, "--json", *flags)
                try:
                    ours = {i: s for i, s in program_stats().items() if i not in known}
                    subprocess.run([str(blast), "send", env.peer_ip, "9", str(args.seconds)],
                                   capture_output=True, check=True)
                    after = program_stats()
                finally:
                    probe.stop()
                for pid, (prog, cnt0, ns0) in ours.items():
                    _, cnt, ns = after.get(pid, (prog, cnt0, ns0))
                    if cnt > cnt0:
                        rows.append((f"{name} {' '.join(flags)}".strip(), prog, cnt - cnt0, (ns - ns0) / (cnt - cnt0)))
        finally:
            sysctl.write_text(before)
    lines = ["| probe and flags | program | runs | ns per run |", "|---|---|---|---|"]
    lines += [f"| `{label}` | {prog} | {cnt:,} | {ns:.0f} |" for label, prog, cnt, ns in rows]
    publish("drop-program-cost", "Drop probes: time per program run (this machine)",
            f"kernel {platform.release()}: every packet of a {args.seconds:g} s UDP blast to a closed port "
            "dropped; `kernel.bpf_stats_enabled` counters (they add two clock reads per run).",
            "\n".join(lines), "bench/drop_program_cost.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
