#!/usr/bin/env python3
"""Boot the lab guest under QEMU (TCG), run one shell command inside, return
its output and exit status.

The guest sees the working tree read-only at /netsleuth (9p) and a results
directory read-write at /lab: the command writes whatever it wants to hand
back there.  Root is the cached ext4 image with snapshot=on, so every run
starts from the same clean state.  No network device: the guest's only
networks are the namespaces, veths, taps and OVS bridges it makes itself.

Only one guest runs at a time on a machine (a file lock): they share its cores.

    sudo python3 -m tests.lab.runner 'uname -a; python3 -c "import bcc"'   # from the repo root
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab.build import Image, LabUnavailable, cache_root, ensure_image

REPO = Path(__file__).resolve().parent.parent.parent
QBOOT = Path("/usr/share/qemu/qboot.rom")
BOOT_ALLOWANCE_S = 60  # on top of the command's own limit: boot, shutdown, a busy host
KERNEL_ARGS = (
    "console=ttyS0 panic=-1 quiet loglevel=4 "
    # A throwaway guest under TCG: skip work that only costs emulated cycles.
    "mitigations=off nowatchdog audit=0 rootwait"
)


# What a kernel prints when it breaks or hangs (arch/x86/mm/fault.c, lib/bug.c, kernel/hung_task.c,
# kernel/rcu/tree_stall.h, kernel/watchdog.c).
KERNEL_PROBLEM = re.compile(r"\bBUG: |\bOops: |general protection fault|blocked for more than \d+ seconds|"
                            r"rcu: INFO: rcu_\w+ (self-)?detected stall|watchdog: BUG: soft lockup|Kernel panic")


@dataclass
class GuestRun:
    exit_status: int | None  # None when the guest never reported one (timeout, crash)
    output: str  # the command's stdout + stderr
    console: str  # the serial console (kernel messages), for diagnosis
    results: Path  # the /lab share: files the command wrote
    boot_s: float | None  # guest uptime when the command started
    wall_s: float  # host time from qemu start to exit
    timed_out: bool

    @property
    def kernel_problems(self) -> str:
        """The console's oops / BUG / hung-task / RCU-stall lines with a little context, or ""."""
        lines = self.console.splitlines()
        hits = [i for i, line in enumerate(lines) if KERNEL_PROBLEM.search(line)]
        return "\n".join("\n".join(lines[i:i + 12]) for i in hits[:3])

    def explain(self) -> str:
        """Everything needed to understand a failed run, for assertion messages."""
        state = "timed out" if self.timed_out else f"exit status {self.exit_status}"
        return (f"guest run {state} after {self.wall_s:.0f} s (results in {self.results})\n"
                f"--- output ---\n{self.output[-6000:]}\n--- console (tail) ---\n{self.console[-3000:]}")


# Two virtio-net NICs on one QEMU hub and nothing else: what the guest sends on the first
# arrives on the second and goes nowhere else (tests/lab/virtio_checks.py, docs/lab.md).
# No option ROM (romfile=), modern virtio only (no I/O BAR).  The VM boot (conftest.vmlab) has them.
VIRTIO_HUB_NICS = (("gvtx", "52:54:00:67:76:01"), ("gvrx", "52:54:00:67:76:02"))


def virtio_hub_args() -> list[str]:
    out = []
    for name, mac in VIRTIO_HUB_NICS:
        out += ["-netdev", f"hubport,id={name},hubid=7",
                "-device", f"virtio-net-pci,netdev={name},mac={mac},romfile=,disable-legacy=on"]
    return out


# TCG runs each vCPU in a host thread of its own ("multi") or all in one ("single");
# NETSLEUTH_LAB_TCG chooses (the soak runs both: docs/lab.md).
TCG_THREAD = os.environ.get("NETSLEUTH_LAB_TCG", "multi")


def qemu_command(image: Image, results: Path, memory: str = "5G", tcg: str = TCG_THREAD,
                 virtio_nics: bool = False) -> list[str]:
    return [
        "qemu-system-x86_64", "-name", "netsleuth-lab",
        "-accel", f"tcg,thread={tcg}", "-cpu", "max", "-smp", "2", "-m", memory, "-M", "q35",
        "-nic", "none", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        # qboot stops before the kernel prints a line when virtio-net NICs are present
        # (docs/lab.md, "virtio-net NICs"); SeaBIOS boots them, a few seconds slower.
        *([] if virtio_nics else ["-bios", str(QBOOT)]),
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", KERNEL_ARGS,
        "-drive", f"file={image.rootfs},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={REPO},mount_tag=netsleuth,security_model=none,readonly=on",
        "-virtfs", f"local,path={results},mount_tag=lab,security_model=none",
        # The kernel again, for the nested VM (tests/lab/nested_vm.py) to boot.
        "-virtfs", f"local,path={image.dir},mount_tag=labimage,security_model=none,readonly=on",
        "-serial", f"file:{results / 'console.log'}",
        *(virtio_hub_args() if virtio_nics else []),
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _float(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    """Stop qemu (our own child, by pid): politely, then for sure."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PROBLEM_GRACE_S = 10  # after a kernel problem shows, time for the rest of its report


def _wait_watching_console(proc: subprocess.Popen, console: Path, limit: float) -> bool:
    """Wait for qemu to exit; stop it early when the guest's kernel reports an oops, a hung
    task or a stall (a stuck guest would otherwise run to the time limit).  True on timeout."""
    deadline = time.monotonic() + limit
    problem_at = None
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline or (problem_at and now > problem_at + PROBLEM_GRACE_S):
            _stop(proc)
            return problem_at is None
        if problem_at is None and KERNEL_PROBLEM.search(_read(console)):
            problem_at = now
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    return False


def run(command: str, timeout: float = 600, results: Path | None = None, image: Image | None = None,
        tcg: str = TCG_THREAD, virtio_nics: bool = False) -> GuestRun:
    """Boot the guest, run ``command`` with /bin/sh in /netsleuth, power off.

    ``timeout`` bounds the command inside the guest; the whole guest gets
    BOOT_ALLOWANCE_S more before it is killed.  ``virtio_nics``: the two hub NICs
    (VIRTIO_HUB_NICS).  Raises LabUnavailable when this
    host cannot build or boot the lab."""
    image = image or ensure_image()
    if not QBOOT.exists():
        raise LabUnavailable(f"{QBOOT} is missing (package qemu-system-data)")
    results = Path(results or tempfile.mkdtemp(prefix="netsleuth-lab-"))
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("output", "exit_status", "boot_uptime", "end_uptime", "console.log"):
        (results / stale).unlink(missing_ok=True)
    (results / "command.sh").write_text("set -u\n" + command + "\n")
    (results / "timeout").write_text(f"{int(timeout)}\n")

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "guest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one guest at a time on this machine
        started = time.monotonic()
        qemu = qemu_command(image, results, tcg=tcg, virtio_nics=virtio_nics)
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timed_out = False
        try:
            timed_out = _wait_watching_console(proc, results / "console.log", timeout + BOOT_ALLOWANCE_S)
            qemu_out = proc.stdout.read() if proc.poll() is not None else ""
        finally:
            _stop(proc)  # also on KeyboardInterrupt: never leave a guest behind
        wall = time.monotonic() - started
    status_text = _read(results / "exit_status").strip()
    exit_status = int(status_text) if status_text.lstrip("-").isdigit() else None
    if exit_status in (124, 137):  # coreutils timeout inside the guest
        timed_out = True
    console = _read(results / "console.log")
    if proc.returncode not in (0, None) and qemu_out:
        console += f"\n[qemu exited {proc.returncode}] {qemu_out}"
    return GuestRun(exit_status, _read(results / "output"), console, results,
                    _float(results / "boot_uptime"), wall, timed_out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", help="shell command run in /netsleuth inside the guest")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--results", type=Path, help="directory shared as /lab (default: a new temp dir)")
    ap.add_argument("--virtio-nics", action="store_true", help="give the guest the two hub NICs (VIRTIO_HUB_NICS)")
    args = ap.parse_args(argv)
    try:
        r = run(args.command, timeout=args.timeout, results=args.results, virtio_nics=args.virtio_nics)
    except LabUnavailable as e:
        print(f"lab unavailable: {e}", file=sys.stderr)
        return 3
    sys.stdout.write(r.output)
    boot = f"{r.boot_s:.1f} s" if r.boot_s is not None else "?"
    print(f"[lab] exit {r.exit_status}, boot {boot}, wall {r.wall_s:.1f} s, results {r.results}"
          + (" (TIMED OUT)" if r.timed_out else ""), file=sys.stderr)
    if r.exit_status is None:
        print(r.console[-3000:], file=sys.stderr)
    return r.exit_status if r.exit_status is not None else 1


if __name__ == "__main__":
    sys.exit(main())
