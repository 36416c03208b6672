"""Attach/detach soak of the kprobe-based probes (runs INSIDE the lab guest).

The probes' kprobes are detached and attached again in a loop while OVS upcalls and
netlink traffic run on both vCPUs (the datapath emptied every 0.3 s, a fast ping pinned
to each CPU: every packet upcalls, ovs-vswitchd's handlers answer over netlink and free
the datagrams with consume_skb, one of the hooked functions); then probe processes are
killed (SIGKILL) at random moments after they attached.  The runner watches the guest's
console: an oops, BUG, hung task or RCU stall fails the run (tests/lab/runner.py).

    python3 -m tests.lab.soak /lab/soak.json --cycles 200 --kills 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.lab import topology as T
from tests.lab.guest_checks import kprobes_registered
from tests.netenv import NETSLEUTH

# (probe, flags): every kprobe a default run of these places on kernel 6.1 with OVS.
SOAKED = (
    ("drop-summary", dict(attach="kprobe")),  # kfree_skb_reason, consume_skb, ovs_dp_upcall
    ("ovs-upcall-summary", dict(attach="kprobe")),  # ovs_dp_upcall, ovs_flow_key_extract_userspace
)


def kprobes_of(bpf) -> list[tuple[bytes, bytes, bool]]:
    """(function, program, is a return probe) of each kprobe a BCC object has attached."""
    out = []
    for ev_name, fns in bpf.kprobe_fds.items():
        kind, function = ev_name[:2], ev_name[2:]
        out += [(function, fn, kind == b"r_") for fn in fns]
    return out


def cycle(bpf, hooks) -> None:
    for function, fn, ret in hooks:
        (bpf.detach_kretprobe if ret else bpf.detach_kprobe)(event=function, fn_name=fn)
    for function, fn, ret in hooks:
        (bpf.attach_kretprobe if ret else bpf.attach_kprobe)(event=function, fn_name=fn)


def traffic(sysnet: T.SystemPath) -> list[subprocess.Popen]:
    """Upcalls and their netlink answers on both vCPUs until killed."""
    procs = [subprocess.Popen(["taskset", "-c", str(cpu), "ping", "-q", "-i", "0.005", "-W", "1", sysnet.peer_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cpu in (0, 1)]
    procs.append(subprocess.Popen(["sh", "-c", "while :; do ovs-dpctl del-flows; sleep 0.3; done"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--kills", type=int, default=3)
    args = ap.parse_args(argv)
    from probes.registry import PROBES

    out: dict = {"steps": {}, "cycles": args.cycles, "kills": args.kills, "uname": " ".join(os.uname())}
    T.modprobe("veth")
    T.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    T.start_ovs()
    br = T.Bridge.create("br-int")
    sysnet = T.system_path(br)
    T.ping(sysnet.peer_ip, 2)
    probes = []
    start = time.monotonic()
    for name, flags in SOAKED:
        p = PROBES[name](**flags)
        p.start()
        probes.append(p)
    out["compile_s"] = round(time.monotonic() - start, 1)
    hooks = [(p, kprobes_of(p.bpf)) for p in probes]
    out["hooks"] = {p.name: [f.decode() + (" (return)" if r else "") for f, _, r in h] for p, h in hooks}
    missed_before = br.upcall_stats()["missed"]
    load = traffic(sysnet)
    times = []
    try:
        for n in range(args.cycles):
            if n % 10 == 0:
                print(f"[soak] cycle {n}", flush=True)  # where a crash happened, in the output
            t0 = time.monotonic()
            for p, h in hooks:
                cycle(p.bpf, h)
            times.append(time.monotonic() - t0)
            time.sleep(random.uniform(0, 0.05))  # detach and attach at varied points of the traffic
        out["upcalls_during_cycles"] = br.upcall_stats()["missed"] - missed_before
        for p in probes:
            p.read()  # the maps still answer after hundreds of re-attaches
    finally:
        for p in probes:
            p.close()
    out["cycle_s"] = {"median": sorted(times)[len(times) // 2], "max": max(times)} if times else None
    out["kprobes_after_cycles"] = kprobes_registered()

    kills = []
    try:
        for _ in range(args.kills):
            proc = subprocess.Popen(NETSLEUTH + ["probe", "drop-summary", "--attach", "kprobe", "--json"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            attached = any("Tracing" in line for line in iter(proc.stderr.readline, ""))
            time.sleep(random.uniform(0, 2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(0.5)  # the kernel releases a dead process's perf events
            kills.append({"attached": attached, "kprobes_left": kprobes_registered()})
    finally:
        for p in load:
            p.kill()
            p.wait()
    out["kill_runs"] = kills
    out["upcalls_total"] = br.upcall_stats()["missed"] - missed_before
    out["kprobes_left"] = kprobes_registered()
    out["total_s"] = out["steps"]["soak"] = round(time.monotonic() - start, 1)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
