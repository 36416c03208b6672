#!/usr/bin/env python3
"""What a hook alone costs per hit in the lab guest: a kprobe against a BPF trampoline on the
same kernel function, each running an empty program (run as root; boots the lab VM).

The host side builds `bench/sysloop.c` and boots the lab guest, which runs this file with
--guest: the two empty programs compiled once (bench/toggle.py) on `__task_pid_nr_ns` (one
hit per getppid()), then cycles of three rounds (nothing attached, the kprobe, the
trampoline; the order rotated each cycle), each round `sysloop N` getppid() calls timed.  The hook's cost is a round's ns per
call less the mean of the detached rounds of its cycle.  This is the floor the datapath
probes stand on (docs/performance.md "kprobes against BPF trampolines"), without the
packets' noise.

    sudo .venv/bin/python bench/hook_cost.py [--calls 500000] [--cycles 21] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.labrun import add_lab_options  # noqa: E402

FUNCTION = "__task_pid_nr_ns"  # one hit per getppid() (the syscall wrappers have no BTF)
WAYS = ("kprobe", "fentry")


def guest(share: Path, calls: int, cycles: int) -> int:
    from bench.toggle import Toggle

    toggles = {way: Toggle(f"empty-{way}", {"functions": [FUNCTION], "attach": way}).ready()  # detached
               for way in WAYS}

    def loop() -> dict:
        out = subprocess.run([str(share / "sysloop"), str(calls)], capture_output=True, text=True, check=True)
        wall, cpu = map(float, out.stdout.split())
        return {"wall_ns": wall, "cpu_ns": cpu}

    loop()  # warm
    rounds, ways = [], ("off",) + WAYS
    for c in range(cycles):
        for way in ways[c % len(ways):] + ways[:c % len(ways)]:
            t = toggles.get(way)
            if t:
                t.command("on")
            rounds.append({"cycle": c, "way": way, **loop()})
            if t:
                t.command("off")
    data = {"kernel": os.uname().release, "function": FUNCTION, "calls": calls, "cycles": cycles,
            "attached": {w: t.attached for w, t in toggles.items()}, "rounds": rounds}
    for t in toggles.values():
        t.stop()
    (share / "bench.json").write_text(json.dumps(data, indent=1))
    return 0


def table(data: dict) -> tuple[str, str]:
    lines = ["| hook on " + f"`{data['function']}`" + " | attached as | ns per call: median | hook's cost per hit "
             "(ns): median of cycles | middle half | cycles |", "|---|---|---|---|---|---|"]
    cost: dict[str, float] = {}
    off = [r["cpu_ns"] for r in data["rounds"] if r["way"] == "off"]
    lines.append(f"| nothing | – | {statistics.median(off):,.0f} | – | – | {len(off)} |")
    for way in WAYS:
        per_cycle = []
        for c in range(data["cycles"]):
            rs = [r for r in data["rounds"] if r["cycle"] == c]
            base = statistics.mean(r["cpu_ns"] for r in rs if r["way"] == "off")
            per_cycle += [r["cpu_ns"] - base for r in rs if r["way"] == way]
        q = statistics.quantiles(per_cycle, n=4)
        cost[way] = statistics.median(per_cycle)
        on = [r["cpu_ns"] for r in data["rounds"] if r["way"] == way]
        lines.append(f"| empty program | {data['attached'][way]} | {statistics.median(on):,.0f} | {cost[way]:,.0f} "
                     f"| {q[0]:,.0f}–{q[2]:,.0f} | {len(per_cycle)} |")
    ratio = cost["fentry"] / cost["kprobe"] if cost["kprobe"] > 0 else float("nan")
    verdict = (f"The trampoline costs {ratio:.2f}× the kprobe per hit "
               f"({'at most half: met' if ratio <= 0.5 else 'more than half: not met'} at the hook itself).")
    return "\n".join(lines), verdict


def method(data: dict) -> str:
    return (f"in the lab guest (kernel {data['kernel']}, QEMU TCG multi-threaded, 2 vCPUs): {data['cycles']} cycles "
            f"of three rounds (nothing, the kprobe, the trampoline; order rotated), each round {data['calls']:,} "
            f"getppid() calls (`bench/sysloop.c`), ns per call of the caller's CPU time; the empty programs compiled "
            "once and toggled (bench/toggle.py). Under TCG absolute ns mean nothing; the ratio of one run does.")


def host(args) -> int:
    from bench.labrun import lab_figures
    from bench.report import publish

    data = lab_figures(args, "bench/hook_cost.py", f"--calls {args.calls} --cycles {args.cycles}",
                       900 + args.cycles * 60)
    if isinstance(data, int):
        return data
    text, verdict = table(data)
    publish("hook-cost", "One hook's cost: kprobe against BPF trampoline (lab VM)", method(data), text,
            "bench/hook_cost.py", args.write, verdict + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500_000, help="getppid() calls per round")
    ap.add_argument("--cycles", type=int, default=21, help="rounds of each way (and of nothing attached)")
    add_lab_options(ap)
    args = ap.parse_args()
    if args.guest:
        return guest(args.guest, args.calls, args.cycles)
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
