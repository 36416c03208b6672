"""A real VM inside the lab guest (runs INSIDE the lab guest): nested KVM, virtio-net on a
tap attached to OVS with vhost=on, the kernel the lab boots and a tiny busybox initramfs.

    vm = start_nested_vm(br, sysnet)      # boots in ~10-20 s under TCG; answers ping
    vm.pid, vm.tap, vm.ip, vm.vhost_tids(), vm.vcpu_tids()
    vm.guest_stats()                      # the VM's own counters (rx/tx, virtio interrupts, kicks)
    vm.pause(); vm.resume()               # SIGSTOP/SIGCONT of QEMU (6.1: the vhost kthread runs on)
    vm.stop()

    python3 -m tests.lab.nested_vm 'CMD'  # topology + VM up, CMD run with NESTED_* in its environment

The VM prints its counters to its serial console every 0.5 s (``STATS key=value ...``);
docs/lab.md says what it adds to the lab run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import topology as T

L2_IP = f"{T.SUBNET}.40"
L2_MAC = "52:54:00:00:00:28"
TAP = "vm1"
KERNEL = Path("/run/labimage/vmlinux")  # the lab image's own kernel, shared by the runner
QBOOT = Path("/usr/share/qemu/qboot.rom")
WORK = Path("/tmp/l2")
L2_MODULES = ("virtio_pci", "virtio_net")
STATS_PERIOD_S = 0.5
STATS_KEYS = {"up", "rx", "tx", "udp_noports", "rxdrop"}  # the fixed head of L2_INIT's STATS line
BOOT_TIMEOUT_S = 120  # alone it boots in 13-15 s, 35-50 s beside the probes' compiles
BOOT_ATTEMPTS = 2     # CI once saw a boot print nothing for 120 s (docs/lab.md#the-nested-vm)

# PID 1 of the VM: the NIC up with a static address and neighbour (no IPv6: its router
# solicitations back off to minutes and land in counted windows), then its counters on
# the console for the host to read (one vCPU: /proc/interrupts has one count column).
L2_INIT = """#!/bin/sh
/bin/busybox echo L2 INIT
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m; done
echo L2 MODULES
ip link set lo up
ip addr add {ip}/24 dev eth0
for c in all default eth0; do echo 1 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; done 2>/dev/null
ip link set eth0 up
ip neigh replace {host_ip} lladdr {host_mac} dev eth0 nud permanent
echo L2 READY
s=/sys/class/net/eth0/statistics
while true; do
  echo "STATS up=$(cut -d' ' -f1 /proc/uptime) rx=$(cat $s/rx_packets) tx=$(cat $s/tx_packets)" \\
    "udp_noports=$(awk '/^Udp:/ {{n++}} n == 2 {{print $3; exit}}' /proc/net/snmp)" \\
    "rxdrop=$(cat $s/rx_dropped) $(awk '/virtio/ {{printf "%s=%s ", $NF, $2}}' /proc/interrupts)" \\
    "$(ethtool -S eth0 2>/dev/null | awk -F': ' '/kicks/ {{gsub(/ /, "", $1); printf "%s=%s ", $1, $2}}')"
  sleep {period}
done
"""


def nesting_unavailable() -> str | None:
    """Why this lab guest cannot run a KVM guest, or None."""
    for module in ("kvm_amd", "kvm_intel"):
        if subprocess.run(["modprobe", module, "nested=1"], capture_output=True).returncode == 0 \
                and Path("/dev/kvm").exists():
            return None
    flags = Path("/proc/cpuinfo").read_text()
    if " svm" not in flags and " vmx" not in flags:
        return "the lab guest's CPU has no svm/vmx flag (QEMU must run it with -cpu max)"
    return "neither kvm_amd nor kvm_intel loads in the lab guest (dmesg says why)"


def _ldd(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return [w for line in out.splitlines() for w in line.split() if w.startswith("/")]


def build_initramfs(host_ip: str, host_mac: str) -> Path:
    """busybox, ethtool (with its libraries) and the virtio-net modules, cpio'd with busybox."""
    from tests.lab.build import _module_paths

    tree = WORK / "initramfs"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "modules", "proc", "sys", "dev"):
        (tree / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", tree / "bin/busybox")
    (tree / "bin/sh").symlink_to("busybox")
    ethtool = shutil.which("ethtool") or "/usr/sbin/ethtool"
    for path in [ethtool, *_ldd(ethtool)]:
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    release = os.uname().release
    order = []
    for rel in _module_paths(Path("/"), release, L2_MODULES):
        src = Path("/lib/modules") / release / rel
        shutil.copy2(src, tree / "modules" / src.name)
        order.append(src.name)
    (tree / "modules/order").write_text("\n".join(order) + "\n")
    (tree / "init").write_text(L2_INIT.format(ip=L2_IP, host_ip=host_ip, host_mac=host_mac, period=STATS_PERIOD_S))
    (tree / "init").chmod(0o755)
    out = WORK / "initrd.cpio"
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["busybox", "cpio", "-o", "-H", "newc"], cwd=tree, input=files, stdout=f,
                       stderr=subprocess.DEVNULL, check=True)
    return out


def qemu_command(initrd: Path, console: Path) -> list[str]:
    return [
        "qemu-system-x86_64", "-name", "l2,debug-threads=on",  # vCPU threads named "CPU 0/KVM"
        "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-bios", str(QBOOT), "-kernel", str(KERNEL), "-initrd", str(initrd),
        # Not quiet: a boot that stalls says where (the kernel's messages cost ~5 s of boot).
        "-append", "console=ttyS0 panic=-1 mitigations=off nowatchdog audit=0",
        "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=on",
        "-device", f"virtio-net-pci,netdev=n0,mac={L2_MAC}",
        "-serial", f"file:{console}",
    ]


def threads(pid: int) -> dict[int, str]:
    """tid -> comm of a process's threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return out


@dataclass
class NestedVm:
    qemu: subprocess.Popen
    tap: str
    ip: str
    mac: str
    console: Path
    boot_s: float = 0.0
    paused: bool = field(default=False)
    failed_boots: list[str] = field(default_factory=list)  # how earlier attempts ended

    @property
    def pid(self) -> int:
        return self.qemu.pid

    def gone(self) -> str | None:
        """How the VM ended, when its QEMU has exited (its exit status, its output, the guest's
        last console lines), or None while it runs."""
        if self.qemu.poll() is None:
            return None
        return (f"the nested VM's QEMU exited {self.qemu.returncode}: {self.qemu.stdout.read()[-1500:]}\n"
                f"its console ended: {self.console.read_text(errors='replace')[-1500:]}")

    def vhost_tids(self) -> list[int]:
        """The vhost workers of this VM: kthreads named vhost-<qemu pid> (<= 6.3), threads of
        QEMU's group with that name (6.4+)."""
        name = f"vhost-{self.pid}"
        tids = [t for t, comm in threads(self.pid).items() if comm == name]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if (proc / "comm").read_text().strip() == name:
                        tids.append(int(proc.name))
                except OSError:
                    continue
        return sorted(set(tids))

    def vcpu_tids(self) -> list[int]:
        return sorted(t for t, comm in threads(self.pid).items() if comm.startswith("CPU ") and comm.endswith("/KVM"))

    def _last_stats(self) -> dict | None:
        """The last whole STATS line (a kernel message printed on the console can cut one)."""
        for line in reversed(self.console.read_text(errors="replace").splitlines()):
            if not line.startswith("STATS "):
                continue
            out = {}
            for word in line.split()[1:]:
                key, _, value = word.partition("=")
                try:
                    out[key] = float(value) if key == "up" else int(value)
                except ValueError:
                    continue
            if STATS_KEYS <= out.keys():
                return out
        return None

    def guest_stats(self, timeout: float = 30) -> dict:
        """The VM's counters as it printed them after this call (so they include everything
        before it): rx, tx, udp_noports (datagrams to a closed port), rxdrop, virtio<N>-input.0 /
        -output.0 interrupts, *_kicks."""
        first = self._last_stats()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(STATS_PERIOD_S / 2)
            now = self._last_stats()
            # Two fresh lines: the first may have been half-way through when we asked.
            if now and first and now["up"] >= first["up"] + 2 * STATS_PERIOD_S - 0.01:
                return now
            if now and not first:
                first = now
        raise TimeoutError(f"the nested VM printed no counters for {timeout} s (paused? {self.paused}) "
                           f"{self.gone() or ''}")

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.paused:
            self.resume()
        if self.qemu.poll() is None:
            self.qemu.terminate()
            try:
                self.qemu.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait()


class BootFailed(RuntimeError):
    """One boot of the VM that did not come up (the next attempt may)."""


def start_nested_vm(br: T.Bridge, sysnet: T.SystemPath) -> NestedVm:
    """Boot the VM on ``br`` (port TAP) and wait until it answers a ping from the host stack;
    a boot that fails is tried again (BOOT_ATTEMPTS in all), and the VM says how it failed."""
    why = nesting_unavailable()
    if why:
        raise RuntimeError(f"no nested VM: {why}")
    T.modprobe("tun", "vhost_net")
    WORK.mkdir(parents=True, exist_ok=True)
    initrd = build_initramfs(sysnet.ip, T.SYS_PORT_MAC)
    failed = []
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            vm = _boot(br, sysnet, initrd, WORK / f"console-{attempt}.log")
        except BootFailed as e:
            failed.append(str(e))
            print(f"[nested_vm] boot {attempt} of {BOOT_ATTEMPTS} failed: {e}", file=sys.stderr, flush=True)
            continue
        vm.failed_boots = failed
        return vm
    raise RuntimeError("\n\n".join(failed))


def _boot(br: T.Bridge, sysnet: T.SystemPath, initrd: Path, console: Path) -> NestedVm:
    console.write_text("")
    start = time.monotonic()
    qemu = subprocess.Popen(qemu_command(initrd, console), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    vm = NestedVm(qemu, TAP, L2_IP, L2_MAC, console)
    try:
        T.wait_for(lambda: Path(f"/sys/class/net/{TAP}").exists(), True, timeout=30)
        br.add_port(TAP)
        T.sh("ip", "link", "set", TAP, "up")
        T.static_neighbour(L2_IP, L2_MAC, sysnet.port)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while "L2 READY" not in console.read_text(errors="replace"):
            if qemu.poll() is not None:
                raise BootFailed(f"the nested VM's QEMU exited {qemu.returncode}: {qemu.stdout.read()[-2000:]}\n"
                                 f"its console: {_tail(console)}")
            if time.monotonic() > deadline:
                raise BootFailed(f"the nested VM did not boot in {BOOT_TIMEOUT_S} s; its console: {_tail(console)}")
            time.sleep(0.2)
        if T.ping(L2_IP, 1, timeout=30) != 1:
            raise BootFailed(f"the nested VM does not answer ping; its console: {_tail(console)}")
        vm.boot_s = round(time.monotonic() - start, 1)
        return vm
    except BaseException:
        vm.stop()
        raise


def _tail(console: Path) -> str:
    text = console.read_text(errors="replace")
    return text[-2000:] if text.strip() else "(nothing printed)"


def main(argv: list[str]) -> int:
    """Topology + nested VM, then run one shell command with NESTED_* set (a dev loop)."""
    T.modprobe("tun", "veth")
    T.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    T.start_ovs()
    br = T.Bridge.create("br-int")
    sysnet = T.system_path(br)
    vm = start_nested_vm(br, sysnet)
    print(f"[nested_vm] booted in {vm.boot_s} s: qemu {vm.pid}, vhost {vm.vhost_tids()}, vcpus {vm.vcpu_tids()}",
          flush=True)
    env = dict(os.environ, NESTED_QEMU_PID=str(vm.pid), NESTED_TAP=vm.tap, NESTED_IP=vm.ip,
               NESTED_CONSOLE=str(vm.console),
               NESTED_VHOST_TID=",".join(map(str, vm.vhost_tids())),
               NESTED_VCPU_TID=",".join(map(str, vm.vcpu_tids())), NESTED_HOST_IP=sysnet.ip)
    try:
        return subprocess.run(["sh", "-c", " ".join(argv)], env=env).returncode
    finally:
        vm.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
