"""The VM path's checks in one lab guest boot, against a real nested VM (runs INSIDE the
lab guest; tests/lab/test_lab_vm*.py assert on the JSON it writes).

The VM-path probes compile (tens of seconds each under TCG) while OVS and the nested VM
boot; then each scenario creates a fault with a known ground truth: the tap's own drop
counter, the VM's own counters (tests/lab/nested_vm.py), a pause of known length.

    python3 -m tests.lab.vm_checks [/lab/vm_results.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.lab import nested_vm
from tests.lab import topology as T
from tests.lab.guest_checks import Recorder, kprobes_registered, start_probe, stop_probe
from tests.lab.vm_checks_kvm import check_kvm_irqfd, start_kvm_probe
from tests.lab.vm_checks_vhost import check_vhost
from tests.netenv import NETSLEUTH, send_udp

AUTOPILOT_LIMIT_S = 420  # compiles under TCG take tens of seconds per step
RING = 64  # the tap's txqueuelen during the overflow check: its ring's size
OVERFLOW = dict(sport=41001, dport=7801, count=1000)
CONTROL = dict(sport=41002, dport=7802, count=200)


def rx(vm: nested_vm.NestedVm) -> int:
    return vm.guest_stats()["rx"]


def check_ring_overflow(br: T.Bridge, sysnet: T.SystemPath, vm: nested_vm.NestedVm, probe) -> dict:
    """The VM stops (SIGSTOP: its vCPU stops, the vhost kthread goes on until the guest's RX
    ring is full), host -> VM datagrams fill the tap's ring; then a control run at a pace
    the VM keeps up with."""
    T.sh("ip", "link", "set", vm.tap, "txqueuelen", str(RING))
    out = {"ring": RING}
    rx0 = rx(vm)
    before = T.link_stats(vm.tap)["tx"]["dropped"]
    probe_mark = len(probe._lines)
    vm.pause()
    try:
        o = OVERFLOW
        send_udp(vm.ip, o["dport"], o["count"], sport=o["sport"])
        time.sleep(1)
        dropped = T.link_stats(vm.tap)["tx"]["dropped"] - before
    finally:
        vm.resume()
    time.sleep(3)  # the VM drains the rings: every datagram not dropped arrives
    out["overflow"] = {**OVERFLOW, "tx_dropped": dropped, "vm_received": rx(vm) - rx0,
                       "records_from": probe_mark}
    time.sleep(1.5)  # one more probe read covers the drain
    out["overflow"]["records_to"] = len(probe._lines)

    rx0 = rx(vm)
    before = T.link_stats(vm.tap)["tx"]["dropped"]
    mark = len(probe._lines)
    c = CONTROL
    send_udp(vm.ip, c["dport"], c["count"], sport=c["sport"], gap=0.005)
    time.sleep(2)
    out["control"] = {**CONTROL, "tx_dropped": T.link_stats(vm.tap)["tx"]["dropped"] - before,
                      "vm_received": rx(vm) - rx0, "records_from": mark}
    time.sleep(1.5)
    out["control"]["records_to"] = len(probe._lines)
    return out


def check_autopilot_ring_overflow(vm: nested_vm.NestedVm) -> dict:
    """The autopilot, told only the VM's tap, while the VM is stopped and datagrams keep
    coming for it (from before its first probe attaches until it is done)."""
    T.sh("ip", "link", "set", vm.tap, "txqueuelen", str(RING))
    report = Path("/tmp/autopilot-ring")
    cmd = NETSLEUTH + ["diagnose", "--symptom", "vm-network", "--vm-interface", vm.tap, "--autopilot",
                       "--duration", "8", "--report", str(report), "--sessions", "/tmp/autopilot-sessions"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    vm.pause()
    try:
        while proc.poll() is None and time.monotonic() - start < AUTOPILOT_LIMIT_S:
            send_udp(vm.ip, 7803, 100, sport=41003)
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        vm.resume()
    out, err = proc.communicate()
    path = report / "report.json"
    findings = json.loads(path.read_text())["findings"] if path.exists() else []
    return {"returncode": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "causes": [f["rule"] for f in findings if f["explains"]], "rules": [f["rule"] for f in findings],
            "stderr": err[-3000:]}


def main(argv: list[str]) -> int:
    rec = Recorder(Path(argv[0] if argv else "/lab/vm_results.json"))
    rec.data["boot_uptime_s"] = T.uptime()
    T.modprobe("tun", "veth", "vhost_net")
    T.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    why = nested_vm.nesting_unavailable()
    if why:
        rec.data["nesting_unavailable"] = why
        rec.save()
        return 0

    pool = ThreadPoolExecutor(2)
    with rec.step("topology"):
        T.start_ovs()
        br = T.Bridge.create("br-int")
        sysnet = T.system_path(br)
        vm = nested_vm.start_nested_vm(br, sysnet)
        rec.data["vm"] = {"boot_s": vm.boot_s, "pid": vm.pid, "tap": vm.tap, "ip": vm.ip,
                          "vhost_tids": vm.vhost_tids(), "vcpu_tids": vm.vcpu_tids()}
    if "topology" in rec.data["errors"]:
        return 1
    try:
        ring_f = pool.submit(start_probe, "tun-ring-monitor", "--device", vm.tap, "-i", "1", "--json")
        kvm_probe = start_kvm_probe(vm)  # compiles in its own process meanwhile
        with rec.step("probes_attach"):
            ring_probe = ring_f.result()
        with rec.step("tun_ring"):
            rec.data["tun_ring"] = check_ring_overflow(br, sysnet, vm, ring_probe)
        with rec.step("probes_stop"):
            rec.data["probes"] = {"tun-ring-monitor": stop_probe(ring_probe)}
        with rec.step("kvm_irqfd"):
            rec.data["kvm_irqfd"] = check_kvm_irqfd(br, vm, kvm_probe)
        with rec.step("autopilot_ring"):
            rec.data["autopilot_ring"] = check_autopilot_ring_overflow(vm)
        with rec.step("vhost"):
            check_vhost(br, vm, rec.data.setdefault("vhost", {}))  # what a failed phase leaves is kept
    finally:
        vm.stop()
    rec.data["kprobes_left"] = kprobes_registered()
    rec.data["total_s"] = round(T.uptime() - rec.data["boot_uptime_s"], 1)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
