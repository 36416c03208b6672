"""A lab bench's host side: build the load generators, boot the lab guest running the bench's
`--guest` half, and return the figures it wrote (bench.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("udpblast", "sysloop")  # bench/<tool>.c, built static for the guest (no compiler there)


def run_in_lab(script: str, guest_args: str, budget: float, results: Path | None = None,
               **run_options) -> dict | int:
    """``python3 SCRIPT --guest /lab GUEST_ARGS`` in the lab guest (``run_options`` to the
    runner, e.g. ``tcg``); its bench.json, or an exit status after saying why there is none
    (2: not root or no lab VM here, 1: the guest run failed)."""
    from tests.lab.build import LabUnavailable
    from tests.lab.runner import run

    if os.geteuid() != 0:
        print("run as root (it builds and boots the lab VM)", file=sys.stderr)
        return 2
    share = results or Path(tempfile.mkdtemp(prefix="netsleuth-bench-"))
    share.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        subprocess.run(["gcc", "-static", "-O2", "-o", str(share / tool), str(ROOT / f"bench/{tool}.c")], check=True)
    try:
        guest_run = run(f"python3 {script} --guest /lab {guest_args}", timeout=budget, results=share,
                        **run_options)
    except LabUnavailable as e:
        print(f"lab VM unavailable: {e}", file=sys.stderr)
        return 2
    out = share / "bench.json"
    print(f"guest run: exit {guest_run.exit_status}, {guest_run.wall_s:.0f} s; results in {share}")
    if guest_run.exit_status != 0 or not out.exists():
        print(guest_run.explain(), file=sys.stderr)
        return 1
    return json.loads(out.read_text())


def lab_figures(args, script: str, guest_args: str, budget: float, **run_options) -> dict | int:
    """The figures of an earlier run (``--from``) or of a new lab run of ``script``; an exit
    status where there are none (run_in_lab says why)."""
    if args.from_file:
        return json.loads(args.from_file.read_text())
    return run_in_lab(script, guest_args, budget, args.results, **run_options)


def add_lab_options(ap) -> None:
    """The options every lab bench takes: where its run goes, an earlier run's figures, --write."""
    import argparse

    ap.add_argument("--results", type=Path, help="the run's directory (default: a new one under /tmp)")
    ap.add_argument("--from", dest="from_file", type=Path, metavar="BENCH_JSON",
                    help="print (and --write) the figures of an earlier run's bench.json")
    ap.add_argument("--write", action="store_true", help="write its section of docs/performance.md")
    ap.add_argument("--guest", type=Path, metavar="SHARE", help=argparse.SUPPRESS)  # inside the lab VM
