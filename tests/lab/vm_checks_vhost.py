"""The vhost probes against a real nested VM (runs INSIDE the lab guest).

    results["vhost"] = check_vhost(br, vm)     # vm: tests.lab.nested_vm.NestedVm

Ground truth the probes cannot see themselves:
* counts: pings host -> VM; the VM's own `ethtool -S` kick counters and an ftrace
  kprobe hist on irqfd_wakeup keyed by pid (the vhost worker's entries are the
  interrupts KVM received from it), independent of BPF;
* not scheduled: the vhost worker pinned to CPU 1 where a SCHED_FIFO hog spins a
  known 300 ms (its CLOCK_MONOTONIC start/end, the clock of bpf_ktime_get_ns)
  while the host pings the VM every 20 ms; a control run without the hog;
* guest not refilling: QEMU stopped (SIGSTOP; on 6.1 the vhost kthread runs on)
  while the host sends it 400 pings: its 256 rx buffers fill, the rest waits in the
  tap ring (or is dropped there).
tests/lab/test_lab_vm_vhost.py asserts on what this returns.  Dev loop:
``python3 -m tests.lab.nested_vm 'python3 -m tests.lab.vm_checks_vhost'``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.lab import topology as T
from tests.lab.probe_worker import ProbeWorker

TRACEFS = Path("/sys/kernel/tracing")
IRQFD_EVENT = "netsleuth_lab_irqfd"
HOG_CPU = 1
HOG_MS = 300
PING_EVERY_S = 0.02
THRESHOLD_US = 100_000  # nested under TCG, waits of 10-30 ms are ordinary
EPOLLIN = 0x1
PAUSED_PINGS = 400

# Real-time only while it spins: Python's start and exit under TCG take longer than the hog.
# ``times`` spins ``gap`` seconds apart, each window printed as it ends.
HOG = """
import os, time
clock = time.CLOCK_MONOTONIC
os.sched_setaffinity(0, {{{cpu}}})
for i in range({times}):
    time.sleep({gap} if i else 0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    t0 = time.clock_gettime_ns(clock)
    while time.clock_gettime_ns(clock) - t0 < {ms} * 1_000_000:
        pass
    t1 = time.clock_gettime_ns(clock)
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    print(t0, t1, flush=True)
"""


def append(path: Path, line: str) -> None:
    """Append to a tracefs file (Python's "a" mode seeks to the end: tracefs says EINVAL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class IrqfdCounter:
    """irqfd_wakeup calls per (pid, key), counted by ftrace (a kprobe event with a hist trigger)."""

    def __init__(self):
        append(TRACEFS / "kprobe_events", f"p:{IRQFD_EVENT} irqfd_wakeup key=%cx:u64\n")
        self.dir = TRACEFS / "events/kprobes" / IRQFD_EVENT
        (self.dir / "trigger").write_text("hist:keys=common_pid,key\n")

    def counts(self) -> dict[int, int]:
        """pid -> wakeups with EPOLLIN in the key (a signal; not the HUP of a closing eventfd)."""
        out: dict[int, int] = {}
        for line in (self.dir / "hist").read_text().splitlines():
            if not line.startswith("{"):
                continue
            fields = line.replace("{", " ").replace("}", " ").replace(",", " ").replace(":", " ").split()
            pid, key, hits = int(fields[1]), int(fields[3]), int(fields[5])
            if key & EPOLLIN:
                out[pid] = out.get(pid, 0) + hits
        return out

    def close(self) -> None:
        try:
            (self.dir / "trigger").write_text("!hist:keys=common_pid,key\n")
            append(TRACEFS / "kprobe_events", f"-:{IRQFD_EVENT}\n")
        except OSError:
            pass


def kicks(stats: dict) -> dict[str, int]:
    return {k: v for k, v in stats.items() if k.endswith("_kicks")}


def stats_with_kicks(vm, timeout: float = 20) -> dict:
    """The VM's counters from a line that has both directions' `ethtool -S` kicks (some
    lines lack them, or have only the first)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = vm.guest_stats()
        names = kicks(stats)
        if (any(k.startswith("rx_") for k in names) and any(k.startswith("tx_") for k in names)) \
                or time.monotonic() > deadline:
            return stats


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}


def ping_every(ip: str, seconds: float) -> subprocess.Popen:
    count = int(seconds / PING_EVERY_S)
    return subprocess.Popen(["taskset", "-c", "0", "ping", "-n", "-q", "-c", str(count), "-i", str(PING_EVERY_S),
                             "-W", "1", ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def hog_command(times: int = 1, gap: float = 0) -> list[str]:
    return ["taskset", "-c", "0", sys.executable, "-c", HOG.format(cpu=HOG_CPU, ms=HOG_MS, times=times, gap=gap)]


def run_hog() -> tuple[int, int]:
    out = subprocess.run(hog_command(),
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return int(out[0]), int(out[1])


def check_vhost(br: T.Bridge, vm, res: dict | None = None) -> dict:
    """Fills ``res`` as it goes (a failed step leaves what came before)."""
    res = {} if res is None else res
    res |= {"qemu_pid": vm.pid, "tap": vm.tap, "vhost_tids": vm.vhost_tids(), "vcpu_tids": vm.vcpu_tids()}
    irqfd = IrqfdCounter()
    counts = ProbeWorker("vhost-eventfd-count", pid=str(vm.pid), interval="3600")
    details = ProbeWorker("vhost-queue-correlation-details", pid=str(vm.pid), device=vm.tap,
                          latency_threshold=str(THRESHOLD_US), interval="0.1")
    # The kprobe twins count the same window (trampolines or kprobes: the same counts).
    twins = {"vhost-eventfd-count": ProbeWorker("vhost-eventfd-count", pid=str(vm.pid), interval="3600",
                                                attach="kprobe"),
             "vhost-queue-correlation-details": ProbeWorker(
                 "vhost-queue-correlation-details", pid=str(vm.pid), device=vm.tap,
                 latency_threshold=str(THRESHOLD_US), interval="0.1", attach="kprobe")}
    try:
        counts.ready()
        details.ready()
        for twin in twins.values():
            twin.ready()
        res["attach_s"] = {"vhost-eventfd-count": counts.attach_s, "vhost-queue-correlation-details": details.attach_s}
        res["attached"] = {"vhost-eventfd-count": counts.attached, "vhost-queue-correlation-details": details.attached,
                           **{f"{name} kprobe": twin.attached for name, twin in twins.items()}}
        T.ping(vm.ip, 1)
        time.sleep(1.5)
        details.read()
        # The probe's window and ftrace's are the same instants; the VM's line is printed
        # within 0.5 s after, with nothing sent meanwhile.
        counts.read()
        for twin in twins.values():
            twin.read()
        irq_before = irqfd.counts()
        before = stats_with_kicks(vm)

        # counts: a known number of pings, both directions' kicks and signals
        res["pings_answered"] = T.ping(vm.ip, 30, interval=0.1)
        time.sleep(1.5)
        res["counts_records"] = counts.read()
        res["details_counts_window"] = details.read()
        res["twin_records"] = {name: twin.read() for name, twin in twins.items()}
        irq_after = irqfd.counts()
        after = stats_with_kicks(vm)
        worker_irqfd = {tid: irq_after.get(tid, 0) - irq_before.get(tid, 0) for tid in res["vhost_tids"]}
        res["counts_truth"] = {"guest_before": before, "guest_after": after, "guest": delta(after, before),
                               "guest_kicks": sum(after[k] - before[k] for k in kicks(after) if k in before),
                               "irqfd_wakeups_by_worker": worker_irqfd}
        for twin in twins.values():
            twin.stop()

        # not scheduled: the worker pinned where an RT hog spins HOG_MS, pings every 20 ms
        for tid in res["vhost_tids"]:
            T.sh("taskset", "-p", hex(1 << HOG_CPU), str(tid))
        for name, hog in (("control", False), ("hog", True)):
            ping = ping_every(vm.ip, 1.2)
            time.sleep(0.3)
            window = run_hog() if hog else None
            ping.wait(timeout=60)
            time.sleep(0.5)
            res[name] = {"window_ns": window, "records": details.read(), "ping": ping.stdout.read()[-300:]}
        # guest not refilling: QEMU stopped (the vCPU with it; the 6.1 vhost kthread runs on), pings to the VM
        for tid in res["vhost_tids"]:
            T.sh("taskset", "-p", "0x3", str(tid))
        dropped = Path(f"/sys/class/net/{vm.tap}/statistics/tx_dropped")
        before_drops = int(dropped.read_text())
        vm.pause()
        try:
            subprocess.run(["ping", "-n", "-q", "-c", str(PAUSED_PINGS), "-i", "0.002", "-W", "1", vm.ip],
                           capture_output=True, timeout=60)
            time.sleep(0.5)
        finally:
            vm.resume()
        time.sleep(2)
        res["paused"] = {"pings": PAUSED_PINGS, "tap_tx_dropped": int(dropped.read_text()) - before_drops,
                         "records": details.read(), "count_records": counts.read()}
        res["final_records"] = {"vhost-eventfd-count": counts.stop(), "vhost-queue-correlation-details": details.stop()}
    finally:
        counts.close()
        details.close()
        for twin in twins.values():
            twin.close()
        irqfd.close()
    res["kprobes_left"] = _kprobes_left()
    return res


def _kprobes_left() -> list[str]:
    try:
        return [line for line in Path("/sys/kernel/debug/kprobes/list").read_text().splitlines() if line.strip()]
    except OSError as e:
        return [f"unreadable: {e}"]


def running_vm():
    """The dev loop's VM: the one nested_vm.main started, rebuilt from its environment."""
    from tests.lab.nested_vm import L2_MAC, NestedVm

    class RunningVm(NestedVm):
        @property
        def pid(self) -> int:
            return int(os.environ["NESTED_QEMU_PID"])

    return RunningVm(None, os.environ["NESTED_TAP"], os.environ["NESTED_IP"], L2_MAC, Path(os.environ["NESTED_CONSOLE"]))


def main() -> int:
    vm = running_vm()
    res: dict = {}
    try:
        check_vhost(None, vm, res)
    finally:
        Path("/lab/vhost.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if "records" not in k and k not in ("control", "hog")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
