#!/usr/bin/env python3
"""drop-summary's cost on every-packet-dropped traffic for each attach point this kernel
offers (raw tracepoint, tracepoint, kprobe), measured in one run (run as root).

Rounds go detached, then each attach point in turn, and again; each attached round is
compared with the mean of the detached rounds around it, so host drift cancels out.

    sudo .venv/bin/python bench/drop_attach_points.py [--seconds 2] [--rounds 7] [--write]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drop_summary_overhead import build_blaster, run_dropped  # noqa: E402
from bench.report import bench_arguments, publish  # noqa: E402
from probes import drop_hook  # noqa: E402
from probes.runtime.kernel import detect  # noqa: E402
from tests.netenv import ProbeProcess, veth_ns  # noqa: E402


def main() -> int:
    args = bench_arguments(__doc__, ("--seconds", float, 2.0), ("--rounds", int, 7))
    caps = detect()
    kinds = [k for k in ("raw-tracepoint", "tracepoint", "kprobe") if not isinstance(drop_hook.choose(caps, k), str)]
    off: list[float] = []
    on: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, veth_ns() as env:
        blast = build_blaster(Path(tmp))
        for _ in range(args.rounds):
            off.append(run_dropped(blast, env, args.seconds)["rate"])
            for kind in kinds:
                probe = ProbeProcess("drop-summary", "-i", "3600", "--json", "--attach", kind)
                on[kind].append(run_dropped(blast, env, args.seconds)["rate"])
                probe.stop()
        off.append(run_dropped(blast, env, args.seconds)["rate"])
    lines = ["| attach point | detached pkt/s (median) | attached pkt/s (median) | ratio (median of rounds) | cost | ratio range |",
             "|---|---|---|---|---|---|"]
    for kind in kinds:
        ratios = [v / ((off[i] + off[i + 1]) / 2) for i, v in enumerate(on[kind])]
        r = statistics.median(ratios)
        lines.append(f"| {kind} | {statistics.median(off):,.0f} | {statistics.median(on[kind]):,.0f} | {r:.3f} "
                     f"| {100 * (1 - r):.1f} % | {min(ratios):.3f}–{max(ratios):.3f} |")
    publish("drop-attach-points", "drop-summary by attach point (this machine)",
            f"kernel {platform.release()}, {os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds:g} s per "
            "attach point, interleaved with detached rounds; every packet of a UDP blast to a closed port in a "
            "namespace dropped (scenario (a) above).",
            "\n".join(lines), "bench/drop_attach_points.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
