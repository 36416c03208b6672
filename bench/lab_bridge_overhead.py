#!/usr/bin/env python3
"""Cost of each summary probe on traffic across an OVS bridge, in the lab VM (run as root).

The host side builds `bench/udpblast.c` (static) and boots the lab guest (tests/lab),
which runs this same file with `--guest`: OVS `br-int`, the system path (host stack ->
sys0 -> br-int -> phy0 -> veth -> namespace) and the VM path (namespace -> br-int ->
vnet0 -> the userspace fake VM).  Per probe: rounds detached, the probe attached
(compiled once), rounds attached, detached again; the ratio compares the medians.
TCG makes absolute packets/s meaningless; the ratios still tell.

    sudo .venv/bin/python bench/lab_bridge_overhead.py [--seconds 3] [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SINK_PORT = 5001

# (label, probe, flags, path, what runs for every packet of the measured traffic)
PROBES = [
    ("system-latency-summary tx", "system-latency-summary",
     dict(phy_interface="phy0", direction="tx", protocol="udp"), "system",
     "7 stage hooks (6 kprobes), 2 map updates"),
    ("vm-latency-summary rx", "vm-latency-summary",
     dict(vm_interface="vnet0", phy_interface="phy0", direction="rx", protocol="udp"), "vm",
     "7 stage hooks (1 tracepoint, 6 kprobes), 2 map updates"),
    ("ovs-upcall-summary", "ovs-upcall-summary", {}, "system",
     "nothing (hooks upcalls and their answers only)"),
    ("ovs-megaflow", "ovs-megaflow", {}, "system", "nothing (hooks upcalls and flow commands only)"),
    ("drop-summary", "drop-summary", {}, "system",
     "kprobe consume_skb (OVS drop actions before 6.6, filtered by caller in BPF)"),
    ("drop-summary --no-ovs-actions", "drop-summary", dict(no_ovs_actions=True), "system",
     "nothing (the kfree_skb raw tracepoint fires on drops only)"),
]


# --- guest side ------------------------------------------------------------------

def guest(share: Path, seconds: float, rounds: int) -> int:
    from tests.lab import topology as T
    from tests.lab.probe_worker import ProbeWorker

    blast = str(share / "udpblast")
    T.start_ovs()
    br = T.Bridge.create("br-int")
    sysnet, vm = T.system_path(br), T.vm_path(br)
    T.static_neighbours(sysnet, vm)

    def system_rate() -> float:
        """Datagrams/s delivered host stack -> namespace across the bridge."""
        sink = subprocess.Popen(["ip", "netns", "exec", sysnet.ns, blast, "sink", str(SINK_PORT), str(seconds + 1.0)],
                                stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "ready"
        subprocess.run([blast, "send", sysnet.peer_ip, str(SINK_PORT), str(seconds)], capture_output=True, check=True)
        return int(sink.communicate(timeout=seconds + 30)[0]) / seconds

    def vm_rate() -> float:
        """Datagrams/s sent namespace -> VM: the whole path up to the tap's ring runs in the
        sender's syscall (veth -> backlog -> OVS -> tun_net_xmit), and the fake VM in
        Python cannot sink that rate, so the sender's rate is the measure."""
        out = subprocess.run(["ip", "netns", "exec", sysnet.ns, blast, "send", vm.ip, str(SINK_PORT), str(seconds)],
                             capture_output=True, text=True, check=True)
        return float(out.stdout)

    rate = {"system": system_rate, "vm": vm_rate}
    for fn in rate.values():  # datapath flows in place before anything is measured
        fn()
    results = []
    for label, name, flags, path, _ in PROBES:
        off = [rate[path]() for _ in range(rounds)]
        t0 = time.monotonic()
        worker = ProbeWorker(name, **flags).ready()
        attach_s = time.monotonic() - t0
        on = [rate[path]() for _ in range(rounds)]
        records = worker.stop()
        off += [rate[path]() for _ in range(rounds)]
        results.append({"label": label, "path": path, "off": off, "on": on, "attach_s": round(attach_s, 1),
                        "attached": worker.attached, "records": len(records)})
        print(json.dumps(results[-1]), flush=True)
    (share / "bench.json").write_text(json.dumps({"kernel": os.uname().release, "seconds": seconds,
                                                  "rounds": rounds, "results": results}))
    return 0


# --- host side -------------------------------------------------------------------

def table(data: dict) -> str:
    per_packet = {p[0]: p[4] for p in PROBES}
    lines = ["| probe (path) | runs for every packet | detached pkt/s: median (range) | attached pkt/s: median (range) "
             "| ratio | cost | compile + attach in the guest |", "|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        off, on = statistics.median(r["off"]), statistics.median(r["on"])
        lines.append(f"| {r['label']} ({r['path']}) | {per_packet.get(r['label'], '')} "
                     f"| {off:,.0f} ({min(r['off']):,.0f}–{max(r['off']):,.0f}) "
                     f"| {on:,.0f} ({min(r['on']):,.0f}–{max(r['on']):,.0f}) "
                     f"| {on / off:.3f} | {100 * (1 - on / off):.1f} % | {r['attach_s']} s |")
    return "\n".join(lines)


def host(args) -> int:
    from bench.labrun import run_in_lab
    from bench.report import publish

    budget = len(PROBES) * (3 * args.rounds * (args.seconds + 2) + 240) + 120
    data = run_in_lab("bench/lab_bridge_overhead.py", f"--seconds {args.seconds:g} --rounds {args.rounds}", budget)
    if isinstance(data, int):
        return data
    publish("lab-bridge", "Summary probes across an OVS bridge (lab VM)",
            f"in the lab guest (kernel {data['kernel']}, QEMU TCG, 2 vCPUs, OVS kernel datapath); per probe "
            f"{data['rounds']} rounds of {data['seconds']:g} s detached, {data['rounds']} attached, "
            f"{data['rounds']} detached again, medians; 64-byte UDP datagrams (`bench/udpblast.c`). system path: "
            "delivered host stack -> sys0 -> br-int -> phy0 -> namespace; vm path: sent namespace -> br-int -> "
            "vnet0 (the fake VM cannot sink the rate). Under TCG absolute rates mean nothing and rounds "
            "spread widely (the ranges; notes below): these ratios are not predictions for a real hypervisor. "
            "Use the latency probes with filters and for seconds, as the guide does. drop-summary on kernels "
            "before 6.6 with OVS puts a kprobe on consume_skb (to see OVS drop actions), hit by every freed "
            "packet; `--no-ovs-actions` gives that up.",
            table(data), "bench/lab_bridge_overhead.py", args.write)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="write its section of docs/performance.md")
    ap.add_argument("--guest", type=Path, metavar="SHARE", help=argparse.SUPPRESS)  # inside the lab VM
    args = ap.parse_args()
    if args.guest:
        return guest(args.guest, args.seconds, args.rounds)
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
