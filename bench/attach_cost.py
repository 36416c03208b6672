#!/usr/bin/env python3
"""kprobes against BPF trampolines: what each way of hooking costs per packet, in the lab (root).

The host side builds `bench/udpblast.c` (static) and boots the lab guest, which runs this file
with `--guest`.  Per probe, five ways compile once in
child processes (bench/toggle.py) and are detached: the probe by kprobes, the probe by
trampolines (`--attach auto`: fentry where the kernel takes one), and an empty program on the
same functions by kprobes and by trampolines (the floor: the hook alone).  Then `--cycles`
times, in an order rotated each cycle: a round with nothing attached, and a round with each
way attached alone.  Toggles happen between rounds, with no traffic running (multi-threaded
TCG and live kernel text patching: docs/safety.md).  Ratios compare medians of the same run;
the kernel's program counters (`kernel.bpf_stats_enabled`) give each program's runs and ns
per run.

    sudo .venv/bin/python bench/attach_cost.py [--cycles 5] [--seconds 3] [--write]
    sudo .venv/bin/python bench/attach_cost.py --from /tmp/x/bench.json [--write]
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

from bench.labrun import add_lab_options  # noqa: E402 - after the path above
from bench.toggle import Toggle  # noqa: E402

SINK_PORT = 5001
SPREAD = 50000  # upcall traffic: datagrams to this many ports, each a flow of its own
SETTLE_S = 1.0  # after a toggle, before a round starts
SENDER_CPU, OTHER_CPU = "0", "1"
WAYS = ("kprobe", "fentry", "empty kprobe", "empty fentry")  # and "off": nothing attached

# (label, probe, flags, traffic); traffic names a rate function of the guest
GROUPS = [
    ("system-latency-summary tx", "system-latency-summary",
     dict(phy_interface="phy0", direction="tx", protocol="udp", interval="3600"), "system"),
    ("vm-latency-summary rx", "vm-latency-summary",
     dict(vm_interface="vnet0", phy_interface="phy0", direction="rx", protocol="udp", interval="3600"), "vm"),
    ("ovs-upcall-summary", "ovs-upcall-summary", dict(proto="udp", interval="3600"), "upcalls"),
]
# What each traffic measures; the cost is read from its first metric.
TRAFFIC = {
    "system": ("64-byte UDP datagrams host stack -> sys0 -> br-int -> phy0 -> namespace, per CPU-second of "
               "the sender (the whole path up to the namespace's backlog runs in its syscall); delivered per s beside it"),
    "vm": "64-byte UDP datagrams namespace -> br-int -> vnet0 (the fake VM's tap), per CPU-second of the sender",
    "upcalls": (f"64-byte UDP datagrams host -> namespace, each to one of {SPREAD:,} ports with megaflows "
                "disabled (a datapath miss, an upcall and ovs-vswitchd's answer for most), delivered per s "
                "(the answers run in ovs-vswitchd's handlers, not in the sender)"),
}


def way_flags(way: str, flags: dict, functions: list[str]) -> tuple[str, dict]:
    """The toggle child of one way: (name, flags)."""
    if way.startswith("empty"):
        return way, dict(functions=functions, attach="auto" if way.endswith("fentry") else "kprobe")
    return way, {**flags, "attach": "auto" if way == "fentry" else "kprobe"}


# --- guest side ------------------------------------------------------------------

def guest(share: Path, seconds: float, cycles: int) -> int:
    from tests.lab import topology as T

    blast = str(share / "udpblast")
    T.start_ovs()
    br = T.Bridge.create("br-int")
    sysnet, vm = T.system_path(br), T.vm_path(br)
    T.static_neighbours(sysnet, vm)

    def send(*args: str, ns: str | None = None) -> list[float]:
        where = ["ip", "netns", "exec", ns] if ns else []
        out = subprocess.run(where + ["taskset", "-c", SENDER_CPU, blast, "send", *args], capture_output=True,
                             text=True, check=True)
        return [float(x) for x in out.stdout.split()]

    def system_rate() -> dict:
        sink = subprocess.Popen(["ip", "netns", "exec", sysnet.ns, "taskset", "-c", OTHER_CPU, blast, "sink",
                                 str(SINK_PORT), str(seconds + 1.0)], stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "ready"
        _, per_cpu_s = send(sysnet.peer_ip, str(SINK_PORT), str(seconds), "cpu")
        return {"per_cpu_s": per_cpu_s, "delivered": int(sink.communicate(timeout=seconds + 30)[0]) / seconds}

    def vm_rate() -> dict:
        rate, per_cpu_s = send(vm.ip, str(SINK_PORT), str(seconds), "cpu", ns=sysnet.ns)
        return {"per_cpu_s": per_cpu_s, "sent": rate}

    def no_ports() -> int:
        """Datagrams the namespace received for a port nobody listens on."""
        snmp = subprocess.run(["ip", "netns", "exec", sysnet.ns, "cat", "/proc/net/snmp"], capture_output=True,
                              text=True, check=True).stdout
        head, values = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")][:2]
        return int(values[head.index("NoPorts")])

    def upcall_rate() -> dict:
        before = no_ports()
        send(sysnet.peer_ip, "1024", str(seconds), "spread", str(SPREAD))
        time.sleep(0.5)  # the last answers from ovs-vswitchd
        return {"delivered": (no_ports() - before) / seconds}

    rate = {"system": system_rate, "vm": vm_rate, "upcalls": upcall_rate}
    out = {"kernel": os.uname().release, "seconds": seconds, "cycles": cycles, "groups": []}
    for label, name, flags, traffic in GROUPS:
        if traffic == "upcalls":
            T.sh("ovs-appctl", "upcall/disable-megaflows")
        rate[traffic]()  # datapath flows (or the upcall machinery) warm
        kprobed = Toggle(name, way_flags("kprobe", flags, [])[1]).ready()
        functions = sorted({h.split(" ", 1)[1] for hooks in kprobed.programs.values() for h in hooks
                            if h.startswith("kprobe ")})
        toggles = {"kprobe": kprobed, **{w: Toggle(name if not w.startswith("empty") else w,
                                                   way_flags(w, flags, functions)[1]).ready() for w in WAYS[1:]}}
        group = {"label": label, "probe": name, "traffic": traffic, "functions": functions,
                 "attached": {w: t.attached for w, t in toggles.items()},
                 "programs": {w: t.programs for w, t in toggles.items()}, "rounds": []}
        ways = ("off",) + WAYS
        for c in range(cycles):
            for way in ways[c % len(ways):] + ways[:c % len(ways)]:
                t = toggles.get(way)
                if t:
                    t.command("on")
                    before = t.command("stats")
                time.sleep(SETTLE_S)
                missed = br.upcall_stats()["missed"]
                r = {"cycle": c, "way": way, **rate[traffic](), "upcalls": br.upcall_stats()["missed"] - missed}
                if t:
                    after = t.command("stats")
                    r["bpf"] = {p: [after[p][0] - before[p][0], after[p][1] - before[p][1]] for p in after}
                    t.command("off")
                group["rounds"].append(r)
                print(json.dumps({"group": label, **r}), flush=True)
        group["records"] = toggles["fentry"].command("read")  # what the trampoline probe saw, all rounds
        for t in toggles.values():
            t.stop()
        if traffic == "upcalls":
            T.sh("ovs-appctl", "upcall/enable-megaflows")
        out["groups"].append(group)
    (share / "bench.json").write_text(json.dumps(out))
    return 0


# --- host side -------------------------------------------------------------------

METRICS = ("per_cpu_s", "delivered", "sent")  # a round's figures, the cost's first


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def g_ns(by: dict, way: str) -> str:
    """ns per program run of one way's rounds, all its programs together."""
    runs = sum(n for r in by[way] for n, _ in (r.get("bpf") or {}).values())
    ns = sum(t for r in by[way] for _, t in (r.get("bpf") or {}).values())
    return f"{ns / runs:,.0f}" if runs else "–"


def table(data: dict) -> tuple[str, str]:
    lines = ["| probe | way | hooks | measure | median (range) | cost | BPF runs per packet | ns per run |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for g in data["groups"]:
        by = {w: [r for r in g["rounds"] if r["way"] == w] for w in ("off",) + WAYS}
        metric = next(m for m in METRICS if m in g["rounds"][0])
        count = next(m for m in ("sent", "delivered") if m in g["rounds"][0])  # packets, for runs per packet
        off = statistics.median(r[metric] for r in by["off"])
        cost = {}
        for way, rounds in by.items():
            values = [r[metric] for r in rounds]
            cost[way] = 100 * (1 - statistics.median(values) / off)
            runs = sum(n for r in rounds for n, _ in (r.get("bpf") or {}).values())
            ns = sum(t for r in rounds for _, t in (r.get("bpf") or {}).values())
            packets = sum(r[count] * data["seconds"] for r in rounds)
            hooks = g["attached"].get(way, "nothing")
            per_run = f"| {runs / packets:.2f} | {ns / runs:,.0f} |" if runs and packets else "| – | – |"
            lines.append(f"| {g['label']} | {way} | {hooks} | {metric} | {_median_range(values)} "
                         f"| {'' if way == 'off' else f'{cost[way]:.1f} %'} " + per_run)
        offs = [r[metric] for r in by["off"]]
        noise = 100 * (max(offs) - min(offs)) / 2 / off
        gap = cost["kprobe"] - cost["fentry"]
        half = ("within this run's noise" if abs(gap) < noise else
                "at most half" if cost["fentry"] <= cost["kprobe"] / 2 else "more than half")
        verdicts.append(f"- {g['label']}: trampolines cost {cost['fentry']:.1f} % against kprobes' "
                        f"{cost['kprobe']:.1f} % ({half}: detached rounds spread ±{noise:.0f} %); the floor "
                        f"(empty programs on the same hooks) {cost['empty fentry']:.1f} % by trampolines, "
                        f"{cost['empty kprobe']:.1f} % by kprobes; per run, the probe's programs took "
                        f"{g_ns(by, 'fentry')} and {g_ns(by, 'kprobe')} ns, the empty ones "
                        f"{g_ns(by, 'empty fentry')} and {g_ns(by, 'empty kprobe')} ns")
    return "\n".join(lines), "\n".join(verdicts)


def method(data: dict) -> str:
    traffic = "; ".join(f"{k}: {v}" for k, v in TRAFFIC.items())
    return (f"in the lab guest (kernel {data['kernel']}, QEMU TCG multi-threaded, 2 vCPUs, OVS kernel datapath); "
            f"{data['cycles']} cycles, each a {data['seconds']:g} s round with nothing attached and one with each "
            "way attached alone, in an order rotated each cycle; every way compiled once and toggled (bench/toggle.py). "
            f"Traffic: {traffic}. `fentry` is `--attach auto`: a trampoline where the kernel takes one, a kprobe "
            "otherwise (the hooks column says which). Under TCG absolute rates mean nothing; ratios of one run do. "
            "BPF ns per run come from `kernel.bpf_stats_enabled` (on for the whole run: every round pays its two "
            "clock reads); a kprobe's dispatch is not in them, which is what the throughput shows.")


def host(args) -> int:
    from bench.labrun import lab_figures
    from bench.report import publish

    budget = len(GROUPS) * (args.cycles * (len(WAYS) + 1) * (args.seconds + 8) + 600) + 300
    data = lab_figures(args, "bench/attach_cost.py", f"--seconds {args.seconds:g} --cycles {args.cycles}", budget)
    if isinstance(data, int):
        return data
    text, verdicts = table(data)
    publish("attach-cost", "kprobes against BPF trampolines (lab VM)", method(data), text,
            "bench/attach_cost.py", args.write, verdicts + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per round")
    ap.add_argument("--cycles", type=int, default=5, help="rounds of each way (and of nothing attached)")
    add_lab_options(ap)
    args = ap.parse_args()
    if args.guest:
        from bench.bpf_stats import stats_enabled

        with stats_enabled():
            return guest(args.guest, args.seconds, args.cycles)
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
