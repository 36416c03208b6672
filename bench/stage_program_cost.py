#!/usr/bin/env python3
"""Time per run of the latency probes' stage program on this machine, from the kernel's own
counters (kernel.bpf_stats_enabled), while every packet of a UDP blast into a namespace
arrives (run as root).

This kernel has no kprobes, so the program runs at the one stage it can take here: the
receive stage on the net:netif_receive_skb tracepoint (vm-latency-summary rx's first).  Each
stage runs the same code: the packet's identity (ns_pkt_identity), then the in-flight table.
Beside it an empty program on the same tracepoint (the floor), interleaved in every round.

    sudo .venv/bin/python bench/stage_program_cost.py [--seconds 2] [--rounds 5] [--write]
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bpf_stats import fd_stats, stats_enabled  # noqa: E402
from bench.report import bench_arguments, publish  # noqa: E402
from bench.toggle import empty_tracepoint_program  # noqa: E402
from probes.stage_latency import kp, tp  # noqa: E402
from probes.vm_latency import VmLatencySummary  # noqa: E402
from tests.netenv import veth_ns  # noqa: E402

PROGRAM = b"tracepoint__net__netif_receive_skb"
FLOOR = "empty program on the tracepoint net:netif_receive_skb (the floor)"
# An optional stage on a function no kernel has: the tracepoint becomes a later stage, never started.
UNHOOKED = kp("NONE", ("netsleuth_bench_no_such_function", 1), optional=True)
SETTINGS = {  # label: (stages, flags)
    "a first stage: every packet started (identity, then an insert into the full in-flight table)":
        ([tp("PHY_RX")], {}),
    "a later stage: every packet looked up (identity, then a lookup that misses: none started)":
        ([UNHOOKED, tp("PHY_RX")], {}),
    "every packet filtered out (`--protocol tcp`: the identity's parse alone)":
        ([tp("PHY_RX")], {"protocol": "tcp"}),
}


class ReceiveStage(VmLatencySummary):
    """vm-latency-summary rx cut to the stages given, the tracepoint the one this kernel can hook."""

    def __init__(self, stages, **flags):
        super().__init__(direction="rx", phy_interface="lo", vm_interface="lo", **flags)
        self.stages_given = stages

    @classmethod
    def unavailable_reason(cls, caps):
        return None

    def path(self):
        return self.stages_given, {}


def measure(bpf, run) -> tuple[int, float]:
    """(runs, ns per run) of the tracepoint program of ``bpf`` while ``run()`` runs."""
    fd = bpf.funcs[PROGRAM].fd
    before = fd_stats(fd)
    run()
    after = fd_stats(fd)
    runs = after[0] - before[0]
    return runs, (after[1] - before[1]) / max(runs, 1)


def main() -> int:
    args = bench_arguments(__doc__, ("--seconds", float, 2.0), ("--rounds", int, 5))
    got: dict[str, list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, veth_ns() as env:
        blast = Path(tmp) / "udpblast"
        subprocess.run(["gcc", "-O2", "-o", str(blast), str(ROOT / "bench/udpblast.c")], check=True)

        def receive_all() -> None:
            subprocess.run([str(blast), "send", env.peer_ip, "9", str(args.seconds)], capture_output=True, check=True)

        with stats_enabled():
            for _ in range(args.rounds):  # settings interleaved, so the host's drift hits them alike
                bpf = empty_tracepoint_program(Path(tmp), "net", "netif_receive_skb")
                try:
                    got.setdefault(FLOOR, []).append(measure(bpf, receive_all))
                finally:
                    bpf.cleanup()
                for label, (stages, flags) in SETTINGS.items():
                    with ReceiveStage(stages, **flags) as probe:
                        got.setdefault(label, []).append(measure(probe.bpf, receive_all))
    lines = ["| program | runs (all rounds) | ns per run: median of rounds | range | above the floor |",
             "|---|---|---|---|---|"]
    floor = statistics.median(ns for _, ns in got[FLOOR])
    for label, rounds in got.items():
        per_run = [ns for _, ns in rounds]
        median = statistics.median(per_run)
        above = "" if label == FLOOR else f"{median - floor:.0f}"
        lines.append(f"| {label} | {sum(c for c, _ in rounds):,} | {median:.0f} | {min(per_run):.0f}–{max(per_run):.0f} "
                     f"| {above} |")
    publish("stage-program-cost", "Latency probes: the stage program per run (this machine)",
            f"kernel {platform.release()}: {args.rounds} rounds, the programs interleaved; in each, every packet of a "
            f"{args.seconds:g} s UDP blast through a veth into a namespace (to a closed port) received; "
            "`kernel.bpf_stats_enabled` counters (they add two clock reads per run, in the floor's figure too).",
            "\n".join(lines), "bench/stage_program_cost.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
