#!/usr/bin/env python3
"""Cost of the VM-path probes on traffic into a real VM, in the lab (run as root).

The host side builds `bench/udpblast.c` (static) and boots the lab guest, which runs this
file with `--guest`: OVS `br-int`, the uplink namespace, and the nested KVM VM of
tests/lab/nested_vm.py (tap vm1, vhost-net).  The probes compile in parallel, each in a
child process of its own, then are detached; one UDP blast from the namespace to the VM
runs throughout, at the sender's full rate, while each probe in turn is attached for
--per-attach rounds: off, A, A, off, B, B, ..., off, --cycles times.  Each attached round
is compared with the detached rounds around its attachment (ratios of one run,
interleaved; docs/performance.md says why max rate, and why few attachments).

Per round: what the VM received per second (its own rx counter, printed on its console
with its uptime), the same per CPU-second of the VM's vhost worker and vCPU thread (they
do the receiving), and what the sender handed the tap (tap tx_packets + tx_dropped) per
CPU-second of the sender (it runs the path up to the tap's ring in its own context).

    sudo .venv/bin/python bench/vm_path_overhead.py [--cycles 2] [--per-attach 2] [--seconds 3] [--write]
    sudo .venv/bin/python bench/vm_path_overhead.py --from /tmp/x/bench.json [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.labrun import add_lab_options  # noqa: E402 - after the path above
from bench.toggle import Toggle  # noqa: E402

# Multi-threaded TCG: under single-threaded TCG the nested VM did not boot in 120 s
# (2026-12-03); multi-threaded TCG can crash while kprobes are re-attached under traffic
# (docs/safety.md), hence few attachments per probe.
TCG = "multi"
PORT = 9  # nothing listens in the VM: its NIC and stack count the datagram, then drop it
SENDER_CPU, VM_CPU = 0, 1
SETTLE_S = 1.0  # after a toggle, before a round's first counter read

# (probe, flags from (vm, uplink), the record field showing it saw the traffic,
#  what runs for each packet of this traffic; docs/output-virt.md, the probes' BPF C)
PROBES = [
    ("tun-ring-monitor", lambda vm, phy: dict(device=vm.tap, interval="3600"), "xmits",
     "kprobe tun_net_xmit (9 reads, its queue's per-CPU array entry); the drop tracepoint per packet dropped on the tap"),
    ("vhost-eventfd-count", lambda vm, phy: dict(pid=str(vm.pid), interval="3600"), "runs",
     "nothing (per socket wakeup, run, requeue or signal: a map update each)"),
    ("kvm-irqfd-stats-summary", lambda vm, phy: dict(pid=str(vm.pid), interval="3600"), "injected",
     "nothing (per interrupt: irqfd kprobes, two kvm tracepoints; per vCPU load)"),
    ("vhost-queue-correlation-details", lambda vm, phy: dict(pid=str(vm.pid), device=vm.tap, interval="3600"),
     "works", "kretprobes vhost_get_vq_desc and vhost_exceeds_weight (per packet); an event per slow work item"),
    ("vm-latency-summary", lambda vm, phy: dict(vm_interface=vm.tap, phy_interface=phy, direction="rx",
                                                protocol="udp", interval="3600"), "packets_completed",
     "7 stage hooks (1 tracepoint, 6 kprobes), 2 map updates"),
    # Floors: a program that does nothing, on a per-packet hook (what the hook alone costs).
    ("empty kprobe tun_net_xmit", lambda vm, phy: dict(functions=["tun_net_xmit"]), None,
     "an empty program: the dispatch of tun-ring-monitor's per-packet hook"),
    ("empty kretprobe vhost_exceeds_weight", lambda vm, phy: dict(functions=["vhost_exceeds_weight"], attach="kretprobe"), None,
     "an empty program: the per-packet hook vhost-eventfd-count had before it counted requeues instead"),
]
REFERENCE = "vm-latency-summary"
METRICS = {  # key in a round's figures -> its label in the table
    "vm_rx_per_s": "received by the VM, pkt/s (its counters)",
    "vm_rx_per_cpu_s": "delivered to the VM (tap tx_packets) per CPU-second of its vhost worker + vCPU",
    "tap_in_per_cpu_s": "sent to the tap per sender CPU-second",
}


# --- guest side ------------------------------------------------------------------

def schedstat_ns(path: str) -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


STATS = re.compile(r"STATS up=([\d.]+) rx=(\d+)")


def vm_rx_rate(console: Path, start: int, end: int) -> tuple[float | None, int]:
    """Datagrams/s the VM counted between the console lines it printed in [start, end)
    (byte offsets), by its own uptime; and how many lines that was."""
    with open(console, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    points = [(float(m[1]), int(m[2])) for m in STATS.finditer(text)]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None, len(points)
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0]), len(points)


TRACEFS = Path("/sys/kernel/tracing")
WEIGHT_EVENT = "netsleuth_bench_weight"


def weight_check(probe: Toggle, seconds: float = 4.0) -> dict:
    """vhost-eventfd-count's weight_exhausted against ftrace's count of vhost_exceeds_weight
    returning true (a kretprobe event with a hist trigger; no BPF), over the same seconds."""
    from tests.lab.vm_checks_vhost import append

    append(TRACEFS / "kprobe_events", f"r:{WEIGHT_EVENT} vhost_exceeds_weight ret=$retval:u8\n")
    event = TRACEFS / "events/kprobes" / WEIGHT_EVENT

    def hits() -> int:
        for line in (event / "hist").read_text().splitlines():
            m = re.match(r"\{ ret:\s*(\d+) \} hitcount:\s*(\d+)", line)
            if m and int(m[1]) & 1:
                return int(m[2])
        return 0

    try:
        (event / "trigger").write_text("hist:keys=ret\n")
        probe.command("on")
        time.sleep(1.0)
        probe.command("read")
        before = hits()
        time.sleep(seconds)
        after = hits()
        records = probe.command("read")
        probe.command("off")
        (event / "trigger").write_text("!hist:keys=ret\n")
    finally:
        append(TRACEFS / "kprobe_events", f"-:{WEIGHT_EVENT}\n")
    return {"seconds": seconds, "ftrace_weight_true": after - before,
            "probe_weight_exhausted": sum(r.get("weight_exhausted") or 0 for r in records),
            "probe_runs": sum(r.get("runs") or 0 for r in records)}


def guest(share: Path, seconds: float, cycles: int, per_attach: int) -> int:
    from tests.lab import nested_vm
    from tests.lab import topology as T

    T.modprobe("tun", "veth")
    T.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    T.start_ovs()
    br = T.Bridge.create("br-int")
    sysnet = T.system_path(br)
    vm = nested_vm.start_nested_vm(br, sysnet)
    T.static_neighbour(vm.ip, vm.mac, sysnet.peer_if, ns=sysnet.ns)
    vhost, vcpus = vm.vhost_tids(), vm.vcpu_tids()
    stats = Path("/sys/class/net") / vm.tap / "statistics"
    # The receiving side (QEMU's threads, the vhost worker) on one vCPU, the sender on the other.
    T.sh("taskset", "-a", "-p", "-c", str(VM_CPU), str(vm.pid))
    for tid in vhost:
        T.sh("taskset", "-p", "-c", str(VM_CPU), str(tid))
    print(f"[bench] VM booted in {vm.boot_s} s: qemu {vm.pid}, vhost {vhost}, vCPUs {vcpus}", flush=True)
    out = {"kernel": os.uname().release, "seconds": seconds, "cycles": cycles, "per_attach": per_attach,
           "settle_s": SETTLE_S,
           "vm_boot_s": vm.boot_s, "probes": {}, "rounds": []}
    toggles = [Toggle(name, make(vm, sysnet.uplink)) for name, make, *_ in PROBES]
    sender = None
    try:
        for t in toggles:
            t.ready()
            out["probes"][t.name] = {"attached": t.attached, "compile_attach_s": t.ready_s, "programs": t.programs}
            print(f"[bench] {t.name} ready in {t.ready_s} s: {t.attached}", flush=True)
        total = cycles * (1 + per_attach) * len(toggles) * (seconds + SETTLE_S + 6) + 60
        sender = subprocess.Popen(["ip", "netns", "exec", sysnet.ns, "taskset", "-c", str(SENDER_CPU),
                                   str(share / "udpblast"), "send", vm.ip, str(PORT), str(total)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(3)  # flows in the datapath, the rings full

        def counters() -> dict:
            t = time.monotonic()
            sent, dropped = (int((stats / f).read_text()) for f in ("tx_packets", "tx_dropped"))
            return {"t": t, "tap_in": sent + dropped, "tap_out": sent, "tap_dropped": dropped, "sender_ns": schedstat_ns(f"/proc/{sender.pid}/schedstat"),
                    "rx_side_ns": sum(schedstat_ns(f"/proc/{tid}/schedstat") for tid in vhost)
                    + sum(schedstat_ns(f"/proc/{vm.pid}/task/{tid}/schedstat") for tid in vcpus),
                    "console": vm.console.stat().st_size}

        order = [x for t in toggles for x in (None,) + (t,) * per_attach] * cycles + [None]
        attached_now = None
        for i, current in enumerate(order):
            if sender.poll() is not None:
                raise RuntimeError("the sender ended early")
            if attached_now is not current:
                if attached_now:
                    attached_now.command("off")
                if current:
                    current.command("on")
                attached_now = current
            time.sleep(SETTLE_S)
            # The program counters just before the tap's at both ends: windows of the same length.
            runs_a = current.command("stats") if current else {}
            a = counters()
            time.sleep(seconds)
            runs_b = current.command("stats") if current else {}
            b = counters()
            vm_rate, lines = vm_rx_rate(vm.console, a["console"], b["console"])
            wall, rx_cpu, tx_cpu = b["t"] - a["t"], (b["rx_side_ns"] - a["rx_side_ns"]) / 1e9, \
                (b["sender_ns"] - a["sender_ns"]) / 1e9
            tap_out = b["tap_out"] - a["tap_out"]
            rnd = {"probe": current.name if current else None, "wall_s": round(wall, 3),
                   "vm_rx_per_s": vm_rate, "vm_lines": lines,
                   "tap_out_per_s": tap_out / wall,
                   "vm_rx_per_cpu_s": tap_out / rx_cpu if rx_cpu > 0 else None,
                   "tap_in_per_cpu_s": (b["tap_in"] - a["tap_in"]) / tx_cpu if tx_cpu > 0 else None,
                   "tap_in_per_s": (b["tap_in"] - a["tap_in"]) / wall,
                   "tap_in": b["tap_in"] - a["tap_in"], "tap_out": tap_out,
                   # each program's (runs, run_time_ns) in the round: kernel.bpf_stats_enabled
                   "bpf": {fn: [runs_b[fn][0] - runs_a[fn][0], runs_b[fn][1] - runs_a[fn][1]] for fn in runs_b},
                   "tap_dropped_per_s": (b["tap_dropped"] - a["tap_dropped"]) / wall,
                   "rx_side_cpu": round(rx_cpu / wall, 3), "sender_cpu": round(tx_cpu / wall, 3)}
            field = next((p[2] for p in PROBES if current and p[0] == current.name), None)
            if field:
                records = current.command("read")
                rnd["records"] = len(records)
                rnd["seen"] = sum(r.get(field) or 0 for r in records if isinstance(r.get(field), (int, float)))
            out["rounds"].append(rnd)
            print(json.dumps(rnd), flush=True)
            for t in toggles:
                out["probes"][t.name]["toggle_s"] = statistics.median(t.toggle_s) if t.toggle_s else None
            (share / "bench.json").write_text(json.dumps(out))  # a crashed guest leaves what came before
        try:
            out["weight_check"] = weight_check(next(t for t in toggles if t.name == "vhost-eventfd-count"))
        except (OSError, RuntimeError, ValueError) as e:  # the rounds are worth keeping without it
            out["weight_check"] = {"error": str(e)}
        print(f"[bench] weight check: {out['weight_check']}", flush=True)
    finally:
        if sender:
            sender.kill()
            sender.wait()
        for t in toggles:
            t.stop()
        vm.stop()
    out["kprobes_left"] = Path("/sys/kernel/debug/kprobes/list").read_text().strip() \
        if Path("/sys/kernel/debug/kprobes/list").exists() else None
    (share / "bench.json").write_text(json.dumps(out))
    return 0


# --- host side -------------------------------------------------------------------

def ratios(data: dict, probe: str, metric: str) -> tuple[list[float], list[float], list[float]]:
    """(attached values, detached values, attached / mean of the detached rounds just before
    and after its attachment) per round."""
    rounds = data["rounds"]
    on, ratio = [], []
    off = [r[metric] for r in rounds if r["probe"] is None and r[metric]]
    detached = [j for j, r in enumerate(rounds) if r["probe"] is None]
    for j, r in enumerate(rounds):
        if r["probe"] != probe:
            continue
        prev = [k for k in detached if k < j]
        nxt = [k for k in detached if k > j]
        if not prev or not nxt:
            continue
        before, after = rounds[prev[-1]][metric], rounds[nxt[0]][metric]
        if r[metric] and before and after:
            on.append(r[metric])
            ratio.append(r[metric] / ((before + after) / 2))
    return on, off, ratio


def table(data: dict) -> tuple[str, str]:
    per_packet = {p[0]: p[3] for p in PROBES}
    lines = ["| probe | runs for each packet of this traffic | metric | detached: median | attached: median "
             "| ratio: median of rounds | cost | ratios: min–max | rounds | counted per attached round |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    costs: dict[tuple[str, str], tuple[float, list[float]]] = {}
    for name, *_ in PROBES:
        seen = [r.get("seen") for r in data["rounds"] if r["probe"] == name]
        first = True  # the probe's first row names it
        for metric, label in METRICS.items():
            on, off, ratio = ratios(data, name, metric)
            if not ratio:
                continue
            r = statistics.median(ratio)
            costs[(name, metric)] = (1 - r, ratio)
            lines.append(f"| {name if first else ''} | {per_packet[name] if first else ''} | {label} "
                         f"| {statistics.median(off):,.0f} | {statistics.median(on):,.0f} | {r:.3f} "
                         f"| {100 * (1 - r):.1f} % | {min(ratio):.3f}–{max(ratio):.3f} | {len(ratio)} "
                         f"| {(f'{statistics.median(seen):,.0f}' if seen and None not in seen else '') if first else ''} |")
            first = False
    verdicts = []
    for name, *_ in PROBES:
        if name == REFERENCE or name.startswith("empty "):
            continue
        parts = []
        for metric in METRICS:
            if (name, metric) not in costs or (REFERENCE, metric) not in costs:
                continue
            cost, ratio = costs[(name, metric)]
            ref_cost, ref_ratio = costs[(REFERENCE, metric)]
            # Clearly less: its worst round beats the reference's best by more than detached
            # rounds alone move from one to the next.
            clearly = min(ratio) / max(ref_ratio) > max_step(data, metric)
            parts.append(f"{100 * cost:.1f} % against {100 * ref_cost:.1f} %"
                         + (" (clearly less)" if clearly else " (not resolved by this run's noise)"))
        verdicts.append(f"{name}: " + "; ".join(parts))
    return "\n".join(lines), "\n".join(f"- {v}" for v in verdicts) + "\n\n" + noise(data)


def bpf_per_packet(data: dict, name: str) -> list[tuple[dict, int, int]]:
    """(the program counters, packets handed to the tap, delivered by it) of each of the
    probe's attached rounds that has them."""
    return [(r["bpf"], r["tap_in"], r["tap_out"]) for r in data["rounds"]
            if r["probe"] == name and r.get("bpf") and r["tap_in"] and r["tap_out"]]


def bpf_table(data: dict) -> tuple[str, str]:
    """Per program: runs per packet and ns per run; per probe: ns of BPF per packet (sum of
    its programs), each the median of its attached rounds; and the verdicts against REFERENCE."""
    lines = ["| probe | program: hooks | runs per packet handed to the tap | runs per packet delivered "
             "| ns per run | BPF ns per packet handed: median (min–max) | BPF ns per packet delivered |",
             "|---|---|---|---|---|---|---|"]
    per_packet: dict[str, list[float]] = {}
    for name, *_ in PROBES:
        rounds = bpf_per_packet(data, name)
        if not rounds:
            continue
        hooks = data["probes"][name].get("programs") or {}
        for fn in sorted({fn for bpf, _, _ in rounds for fn in bpf}):
            got = [(bpf[fn][0], bpf[fn][1], tin, tout) for bpf, tin, tout in rounds if fn in bpf]
            per_run = [ns / cnt for cnt, ns, _, _ in got if cnt]
            lines.append(f"| {name} | {fn}: {', '.join(hooks.get(fn, [])) or '?'} "
                         f"| {statistics.median(c / tin for c, _, tin, _ in got):.3f} "
                         f"| {statistics.median(c / tout for c, _, _, tout in got):.3f} "
                         f"| {(f'{statistics.median(per_run):,.0f}' if per_run else '–')} | | |")
        handed = [sum(ns for _, ns in bpf.values()) / tin for bpf, tin, _ in rounds]
        delivered = [sum(ns for _, ns in bpf.values()) / tout for bpf, _, tout in rounds]
        per_packet[name] = handed
        lines.append(f"| **{name}** | all {len(hooks)} programs, {len(rounds)} rounds | | | "
                     f"| **{statistics.median(handed):,.0f}** ({min(handed):,.0f}–{max(handed):,.0f}) "
                     f"| {statistics.median(delivered):,.0f} |")
    verdicts = []
    ref = per_packet.get(REFERENCE)
    for name, *_ in PROBES:
        if name == REFERENCE or name.startswith("empty ") or name not in per_packet or not ref:
            continue
        mine = per_packet[name]
        clearly = max(mine) < min(ref)  # every round of it below every round of the reference
        verdicts.append(f"- {name}: {statistics.median(mine):,.0f} ns of BPF per packet against "
                        f"{REFERENCE}'s {statistics.median(ref):,.0f} (×{statistics.median(mine) / statistics.median(ref):.2f}); "
                        + ("clearly less: its highest round below the reference's lowest" if clearly
                           else "not clearly less: the rounds overlap"))
    return "\n".join(lines), "\n".join(verdicts)


def max_step(data: dict, metric: str) -> float:
    """The largest factor between one detached round and the next, either way."""
    off = [r[metric] for r in data["rounds"] if r["probe"] is None and r[metric]]
    return max((max(b / a, a / b) for a, b in zip(off, off[1:])), default=float("inf"))


def noise(data: dict) -> str:
    """How far detached rounds alone move: the resolution of this run."""
    out = []
    for metric, label in METRICS.items():
        off = [r[metric] for r in data["rounds"] if r["probe"] is None and r[metric]]
        steps = [b / a for a, b in zip(off, off[1:])]
        if len(off) > 1:
            out.append(f"{label}: detached rounds {min(off):,.0f}–{max(off):,.0f}, one detached round to the next "
                       f"×{min(steps):.2f}–×{max(steps):.2f}")
    check = data.get("weight_check") or {}
    weight = (f"\nWeight-limit count check (vhost-eventfd-count against an ftrace kretprobe on vhost_exceeds_weight, "
              f"{check['seconds']:g} s, no BPF in the count): {check['probe_weight_exhausted']} against "
              f"{check['ftrace_weight_true']} ({check['probe_runs']} runs).") if "ftrace_weight_true" in check else ""
    return "Noise of this run, " + "; ".join(out) + "." + weight


def method(data: dict) -> str:
    probes = data["probes"]
    attach = ", ".join(f"{n} {p['compile_attach_s']} s" for n, p in probes.items())
    toggles = [f"{n} {p['toggle_s']} s" for n, p in probes.items() if p.get("toggle_s") is not None]
    toggle = f" One attach or detach, median: {', '.join(toggles)}." if toggles else ""
    off = [r for r in data["rounds"] if r["probe"] is None]
    return (f"in the lab guest (kernel {data['kernel']}, QEMU TCG multi-threaded, 2 vCPUs, OVS kernel datapath) "
            f"with the nested KVM VM (tests/lab/nested_vm.py: 1 vCPU, virtio-net, tap vm1, vhost-net): one UDP "
            f"blast of 64-byte datagrams (`bench/udpblast.c`) from the uplink namespace -> phy0 -> br-int -> vm1 "
            f"-> vhost -> the VM, at the sender's full rate throughout, the sender on vCPU 0 and QEMU with its "
            f"vhost worker on vCPU 1; each probe attached {data['cycles']} times for "
            f"{data.get('per_attach', 1)} rounds, in turn, with a detached round between attachments ({len(off)} "
            f"detached rounds), each round {data['settle_s']:g} s after the toggle then {data['seconds']:g} s "
            f"measured; every probe compiled once and its hooks detached and attached again between rounds; each "
            f"attached round against the mean of the detached rounds just before and after its attachment. Compile + attach in the "
            f"guest, all in parallel, ready after: {attach}.{toggle}")


def host(args) -> int:
    from bench.labrun import lab_figures
    from bench.report import publish

    rounds = args.cycles * (1 + args.per_attach) * len(PROBES) + 1
    # boot, and the compile: 6.5 min on 2026-12-03 with the host's cores busy
    budget = rounds * (args.seconds + SETTLE_S + 8) + 720
    data = lab_figures(args, "bench/vm_path_overhead.py", f"--seconds {args.seconds:g} --cycles {args.cycles} "
                       f"--per-attach {args.per_attach}", budget, tcg=TCG)
    if isinstance(data, int):
        return data
    text, verdicts = table(data)
    bpf_text, bpf_verdicts = bpf_table(data) if any(r.get("bpf") for r in data["rounds"]) else ("", "")
    if bpf_text:
        text += ("\n\nThe same attached rounds, by the kernel's program counters (`kernel.bpf_stats_enabled`, on "
                 "for the whole run): runs per packet are exact whatever the load; ns per run include the "
                 "counters' two clock reads and whatever the host took from the vCPU meanwhile (TCG), so only "
                 "ratios between probes of this run mean anything. A kprobe's dispatch (before its program "
                 "runs) is not in these times: the empty kprobe's throughput rows above are its only "
                 "evidence.\n\n" + bpf_text)
    extra = ("Each tier-1 probe's BPF time per packet handed to the tap against vm-latency-summary's, same run:\n"
             + bpf_verdicts + "\n\n") if bpf_verdicts else ""
    publish("vm-path", "VM-path probes on traffic into a nested VM (lab VM)", method(data), text,
            "bench/vm_path_overhead.py", args.write,
            extra + "Each tier-1 probe's cost against vm-latency-summary's by throughput, per metric:\n"
            + verdicts + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per round")
    ap.add_argument("--cycles", type=int, default=2, help="times each probe is attached")
    ap.add_argument("--per-attach", type=int, default=2, help="rounds measured per attachment")
    add_lab_options(ap)
    args = ap.parse_args()
    if args.guest:
        from bench.bpf_stats import stats_enabled

        with stats_enabled():  # the program counters, for the whole run: every round pays their clock reads
            return guest(args.guest, args.seconds, args.cycles, args.per_attach)
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
