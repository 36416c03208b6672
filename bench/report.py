"""docs/performance.md is shared by the benchmarks: each one rewrites only its own
section, between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs/performance.md"
HEADER = "# Performance\n\nEvery number here comes from a script under `bench/`, ratios measured in one run.\n"


def write_section(name: str, text: str, doc: Path = DOC) -> Path:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.strip()}\n{end}"
    current = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(current)
    return doc


def publish(name: str, title: str, method: str, table: str, script: str, write: bool, extra: str = "") -> None:
    """Print a bench's table; with ``write``, also its section: what was measured, when
    and how, the table, how to reproduce it, and ``extra`` (e.g. verdicts)."""
    print(table)
    if not write:
        return
    today = time.strftime("%Y-%m-%d")
    doc = write_section(name, f"## {title}\n\nMeasured on {today}, {method}\n\n{table}\n\n"
                              f"Reproduce: `sudo .venv/bin/python {script} --write`.\n{extra}")
    print(f"written to {doc}")


def bench_arguments(doc: str, *options: tuple[str, type, object]) -> argparse.Namespace:
    """A bench's command line: its (--name, type, default) options and --write; exits 2
    unless run as root (the benches load BPF and make namespaces)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, kind, default in options:
        ap.add_argument(name, type=kind, default=default)
    ap.add_argument("--write", action="store_true", help="write its section of docs/performance.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (it loads BPF and creates a namespace)", file=sys.stderr)
        raise SystemExit(2)
    return args
