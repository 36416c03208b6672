#!/usr/bin/env python3
"""drop-summary's cost when every packet is dropped and when none is, from short slices of
one long blast with the probe's program attached and detached in turn (run as root).

The other bench (drop_summary_overhead.py) starts the CLI for each round of seconds; on a
shared host the load moves between rounds more than the cost to be measured.  Here, per
traffic, one blast runs throughout (to a closed port: every packet dropped; to a socket:
every packet delivered); the programs (an empty one: the floor, then the probes) are loaded
once and their raw tracepoint attached and detached every --slice seconds, in the order off,
A, off, B, ...  Per slice: the packets (the namespace's own Udp NoPorts or InDatagrams
counter, read from /proc/PID/net/snmp of a process inside it) per second of the sender's CPU
time (/proc/PID/schedstat: the veth receive path and the drop run in its context) and per
second of wall time.  Each attached slice is compared with the mean of the detached slices
on either side.

    sudo .venv/bin/python bench/drop_summary_toggle.py [--seconds 180] [--slice 0.25] [--write]
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drop_summary_overhead import FILTERED, build_blaster  # noqa: E402
from bench.report import bench_arguments, publish  # noqa: E402
from bench.toggle import empty_raw_tracepoint_program  # noqa: E402
from probes.drop_summary import DropSummary  # noqa: E402
from tests.netenv import veth_ns  # noqa: E402

FLOOR = "an empty program (the floor: what the tracepoint's hook alone costs)"
VARIANTS = {
    FLOOR: None,
    "drop-summary (no filter: the flow breakdown sampled in a flood)": {},
    f"drop-summary `{' '.join(FILTERED)}` (every drop parsed)": {"l4_protocol": "udp"},
}


def udp_counter(pid: int, name: str) -> int:
    """A UDP counter (NoPorts, InDatagrams) of the namespace the process ``pid`` is in."""
    rows = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index(name)])


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class Toggle:
    """A loaded program on the kfree_skb raw tracepoint, attached and detached at will: a
    drop-summary (its ns_raw_drop) or, with no probe, an empty program (the floor)."""

    def __init__(self, probe: DropSummary | None, tmp: Path):
        self.probe = probe
        if probe is None:
            self.bpf, self.fn = empty_raw_tracepoint_program(tmp), b"empty"
            return
        probe.start()
        if probe.hook.kind != "raw-tracepoint":
            raise SystemExit("this bench toggles the raw tracepoint; the kernel gave " + probe.hook.kind)
        self.bpf, self.fn = probe.bpf, b"ns_raw_drop"
        self.off()

    def on(self) -> None:
        self.bpf.attach_raw_tracepoint(tp=b"kfree_skb", fn_name=self.fn)

    def off(self) -> None:
        self.bpf.detach_raw_tracepoint(b"kfree_skb")

    def close(self) -> None:
        if self.probe:
            self.probe.close()
        else:
            self.bpf.cleanup()


# (what the blast does, its port, the namespace's counter of the packets, what to call them)
SCENARIOS = (("every packet dropped (to a closed port)", 9, "NoPorts", "drops"),
             ("every packet delivered (to a socket)", 5001, "InDatagrams", "datagrams"))


def blast_in_slices(blast: Path, env, port: int, counter: str, order: list, seconds: float,
                    slice_s: float) -> list[tuple]:
    """One blast of ``seconds``; ``order``'s programs attached in turn for a slice each (None:
    nothing).  Per slice: (attached, packets, sender CPU ns, wall s)."""
    # Inside the namespace: a socket on the port where the packets are to be delivered, else
    # a process whose /proc shows the namespace's counters.
    sink = [str(blast), "sink", str(port)] if counter == "InDatagrams" else ["sleep"]
    inside = subprocess.Popen(["ip", "netns", "exec", env.ns, *sink, str(seconds + 30)], stdout=subprocess.DEVNULL)
    sender = subprocess.Popen([str(blast), "send", env.peer_ip, str(port), str(seconds + 2)], stdout=subprocess.DEVNULL)
    slices = []
    try:
        time.sleep(1.0)  # the namespace process has exec'd, the blast is going
        last = (udp_counter(inside.pid, counter), cpu_ns(sender.pid), time.monotonic())
        end, i = last[2] + seconds, 0
        while time.monotonic() < end and sender.poll() is None:
            current = order[i % len(order)]
            if current:
                current.on()
            time.sleep(slice_s)
            now = (udp_counter(inside.pid, counter), cpu_ns(sender.pid), time.monotonic())
            if current:
                current.off()
            slices.append((current, now[0] - last[0], now[1] - last[1], now[2] - last[2]))
            last, i = now, i + 1
    finally:
        for proc in (sender, inside):
            proc.kill()
            proc.wait()
    return slices


def table_rows(scenario: str, unit: str, probes: dict, slices: list[tuple]) -> tuple[list[str], dict]:
    """Per program and metric: detached / attached medians, the median of each attached
    slice's ratio to the detached slices on either side, its middle half."""
    metrics = {f"{unit} per sender CPU-second": lambda s: s[1] / (s[2] / 1e9), f"{unit} per second": lambda s: s[1] / s[3]}
    lines, summary = [], {}
    for label, t in probes.items():
        for metric, value in metrics.items():
            # A slice where the sender never ran (descheduled throughout) has no rate.
            ratios, on, off = [], [], [value(s) for s in slices if s[0] is None and s[2] > 0]
            for j, s in enumerate(slices):
                if s[0] is t and 0 < j < len(slices) - 1 and all(x[2] > 0 for x in slices[j - 1:j + 2]):
                    on.append(value(s))
                    ratios.append(value(s) / ((value(slices[j - 1]) + value(slices[j + 1])) / 2))
            q = statistics.quantiles(ratios, n=4)
            r = statistics.median(ratios)
            summary[(label, metric)] = r
            lines.append(f"| {scenario} | {label} | {metric} | {statistics.median(off):,.0f} | "
                         f"{statistics.median(on):,.0f} | {r:.3f} | {100 * (1 - r):.1f} % | {q[0]:.3f}–{q[2]:.3f} "
                         f"| {len(ratios)} |")
    return lines, summary


def main() -> int:
    args = bench_arguments(__doc__, ("--seconds", float, 180.0), ("--slice", float, 0.25))
    built = tempfile.TemporaryDirectory()
    probes = {label: Toggle(None if flags is None else DropSummary(interval="3600", **flags), Path(built.name))
              for label, flags in VARIANTS.items()}
    order = [x for t in probes.values() for x in (None, t)]  # off, A, off, B, then again
    lines = ["| traffic | program attached | metric | detached (median) | attached (median) "
             "| ratio (median of slices) | cost | ratios: middle half | slices |", "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    try:
        with tempfile.TemporaryDirectory() as tmp, veth_ns() as env:
            blast = build_blaster(Path(tmp))
            for scenario, port, counter, unit in SCENARIOS:
                rows, summary[scenario] = table_rows(scenario, unit, probes, blast_in_slices(
                    blast, env, port, counter, order, args.seconds, args.slice))
                lines += rows
    finally:
        for t in probes.values():
            t.close()
        built.cleanup()
    dropped, delivered = (summary[s[0]] for s in SCENARIOS)
    cost = {label: 100 * (1 - r) for (label, metric), r in dropped.items() if metric.endswith("CPU-second")}
    normal = {label: 100 * (1 - r) for (label, metric), r in delivered.items() if metric.endswith("CPU-second")}
    unfiltered, parsed = (label for label in VARIANTS if label != FLOOR)
    verdict = (f"Against ≤ 3 % when every packet is dropped, per sender CPU-second: {cost[unfiltered]:.1f} % "
               f"without a filter ({'met' if cost[unfiltered] <= 3 else 'not met'}), {cost[parsed]:.1f} % with "
               f"every drop parsed; the floor (an empty program on the same tracepoint) {cost[FLOOR]:.1f} %. "
               f"Delivered traffic (no drop, so no program runs): {normal[unfiltered]:.1f} % and "
               f"{normal[parsed]:.1f} %, the floor {normal[FLOOR]:.1f} %.\n")
    publish("drop-summary-toggle", "drop-summary, attached and detached within one blast (this machine)",
            f"kernel {platform.release()}, {os.cpu_count()} CPUs: per traffic, one {args.seconds:g} s blast of "
            f"64-byte UDP datagrams into a namespace (`bench/udpblast.c`), the programs loaded once and their raw "
            f"tracepoint attached for every other slice of {args.slice:g} s, in turn; each attached slice against "
            "the detached slices on either side; the packets counted by the namespace's own UDP counters.",
            "\n".join(lines), "bench/drop_summary_toggle.py", args.write, verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
