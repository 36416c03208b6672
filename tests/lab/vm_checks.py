"""The VM path's checks in one lab guest boot, against a real nested VM (runs INSIDE the
lab guest; tests/lab/test_lab_vm*.py assert on the JSON it writes).

The VM-path probes compile (tens of seconds each under TCG) while OVS and the nested VM
boot; then each scenario creates a fault with a known ground truth: the tap's own drop
counter, the VM's own counters (tests/lab/nested_vm.py), a pause of known length.

    python3 -m tests.lab.vm_checks [/lab/vm_results.json]

Dev loop of the vhost autopilot check alone (checked on the host by
``python3 -m tests.lab.test_lab_vm RESULTS/apv.json``):
``python3 -m tests.lab.nested_vm 'python3 -m tests.lab.vm_checks --autopilot-vhost /lab/apv.json'``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.lab import nested_vm, virtio_checks
from tests.lab import topology as T
from tests.lab.guest_checks import Recorder, kprobes_registered, start_probe, stop_probe, trampolines_loaded
from tests.lab.vm_checks_kvm import check_kvm_irqfd, start_kvm_probe
from tests.lab.vm_checks_vhost import HOG_CPU, HOG_MS, check_vhost, hog_command, running_vm
from tests.netenv import NETSLEUTH, send_udp

AUTOPILOT_LIMIT_S = 420  # compiles under TCG take tens of seconds per step
RING = 64  # the tap's txqueuelen during the overflow check: its ring's size
OVERFLOW = dict(sport=41001, dport=7801, count=1000)
CONTROL = dict(sport=41002, dport=7802, count=200)
HOG_EVERY_S = 2.0  # the vhost worker's CPU is held HOG_MS every 2 s: each 4 s run holds a whole spin
AUTOPILOT_VHOST_DURATION_S = 4
AUTOPILOT_PING_S = 0.05  # pings host -> VM: a few land in each spin; nested under TCG each costs


def rx(vm: nested_vm.NestedVm) -> int:
    """The test's datagrams the VM received: nothing listens there (its NIC's rx_packets
    once counted one packet more than the datagrams sent to it)."""
    return vm.guest_stats()["udp_noports"]


def check_ring_overflow(br: T.Bridge, sysnet: T.SystemPath, vm: nested_vm.NestedVm, probe, twin) -> dict:
    """The VM stops (SIGSTOP: its vCPU stops, the vhost kthread goes on until the guest's RX
    ring is full), host -> VM datagrams fill the tap's ring; then a control run at a pace
    the VM keeps up with.  ``twin``: the probe again by kprobes, the same windows marked."""
    T.sh("ip", "link", "set", vm.tap, "txqueuelen", str(RING))
    out = {"ring": RING}
    rx0 = rx(vm)
    before = T.link_stats(vm.tap)["tx"]["dropped"]
    probe_mark, twin_mark = len(probe._lines), len(twin._lines)
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
                       "records_from": probe_mark, "twin_records_from": twin_mark}
    time.sleep(1.5)  # one more probe read covers the drain
    out["overflow"] |= {"records_to": len(probe._lines), "twin_records_to": len(twin._lines)}

    rx0 = rx(vm)
    before = T.link_stats(vm.tap)["tx"]["dropped"]
    mark, twin_mark = len(probe._lines), len(twin._lines)
    c = CONTROL
    send_udp(vm.ip, c["dport"], c["count"], sport=c["sport"], gap=0.005)
    time.sleep(2)
    out["control"] = {**CONTROL, "tx_dropped": T.link_stats(vm.tap)["tx"]["dropped"] - before,
                      "vm_received": rx(vm) - rx0, "records_from": mark, "twin_records_from": twin_mark}
    time.sleep(1.5)
    out["control"] |= {"records_to": len(probe._lines), "twin_records_to": len(twin._lines)}
    return out


def autopilot(vm: nested_vm.NestedVm, name: str, *flags: str, every_second=None) -> dict:
    """``netsleuth diagnose --symptom vm-network`` told only the VM's tap; ``every_second()``
    runs once a second while it walks."""
    report = Path(f"/tmp/autopilot-{name}")
    cmd = NETSLEUTH + ["diagnose", "--symptom", "vm-network", "--vm-interface", vm.tap, "--autopilot", *flags,
                       "--report", str(report), "--sessions", "/tmp/autopilot-sessions"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and time.monotonic() - start < AUTOPILOT_LIMIT_S:
            if every_second:
                every_second()
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    path = report / "report.json"
    rep = json.loads(path.read_text()) if path.exists() else {"findings": [], "timeline": []}
    findings = rep["findings"]
    return {"returncode": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "causes": [f["rule"] for f in findings if f["explains"]], "rules": [f["rule"] for f in findings],
            "steps": [[t["step"], t["status"]] for t in rep["timeline"] if t["kind"] == "step" and t["status"] != "not run"],
            "timeline": [[t["step"], t["started"], t["duration_s"]] for t in rep["timeline"] if t["kind"] == "step"],
            "findings": findings, "stderr": err[-3000:]}


def check_autopilot_ring_overflow(vm: nested_vm.NestedVm) -> dict:
    """The autopilot, told only the VM's tap, while the VM is stopped and datagrams keep
    coming for it (from before its first probe attaches until it is done)."""
    T.sh("ip", "link", "set", vm.tap, "txqueuelen", str(RING))
    vm.pause()
    try:
        out = autopilot(vm, "ring", "--duration", "8", every_second=lambda: send_udp(vm.ip, 7803, 100, sport=41003))
    finally:
        vm.resume()
    del out["findings"]
    return out


def _stop(proc: subprocess.Popen | None) -> str:
    if proc is None:
        return ""
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def check_autopilot_vhost_not_scheduled(vm: nested_vm.NestedVm) -> dict:
    """The autopilot, told only the VM's tap, while the VM's vhost worker (pinned to HOG_CPU)
    loses that CPU to a SCHED_FIFO spin of HOG_MS every HOG_EVERY_S and the host pings the VM
    every AUTOPILOT_PING_S; then the same without the spin (control).  Three steps: the tap, the vhost
    Summary, the vhost Details."""
    T.sh("ip", "link", "set", vm.tap, "txqueuelen", "1000")
    tids = vm.vhost_tids()
    for tid in tids:
        T.sh("taskset", "-p", hex(1 << HOG_CPU), str(tid))
    out: dict = {"tap": vm.tap, "vhost_tids": tids}
    try:
        for name, hogging in (("hog", True), ("control", False)):
            ping = subprocess.Popen(["taskset", "-c", "0", "ping", "-n", "-q", "-i", str(AUTOPILOT_PING_S), "-W", "1",
                                     vm.ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            hog = subprocess.Popen(hog_command(10**6, HOG_EVERY_S - HOG_MS / 1000), stdout=subprocess.PIPE,
                                   text=True) if hogging else None
            try:
                out[name] = autopilot(vm, f"vhost-{name}", "--duration", str(AUTOPILOT_VHOST_DURATION_S),
                                      "--max-steps", "3")
            finally:
                windows = _stop(hog)
                out.setdefault(name, {})["ping"] = _stop(ping).strip().splitlines()[-2:]
            out[name]["hog_windows_ns"] = [list(map(int, line.split())) for line in windows.splitlines()
                                           if len(line.split()) == 2]
    finally:
        for tid in tids:
            T.sh("taskset", "-p", "0x3", str(tid))
    return out


def _check_virtio(rec: Recorder, worker) -> None:
    """The guest probes on the lab guest's own virtio-net NIC (tests/lab/virtio_checks.py)."""
    if worker is None:
        return
    with rec.step("virtio"):
        rec.data["virtio"] = virtio_checks.check_virtnet(worker)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--autopilot-vhost"]:  # the dev loop, in tests.lab.nested_vm (docs/lab.md)
        Path(argv[1]).write_text(json.dumps(check_autopilot_vhost_not_scheduled(running_vm()), indent=1))
        return 0
    if argv[:1] == ["--kvm-irqfd"]:  # the dev loop, likewise
        Path(argv[1]).write_text(json.dumps(check_kvm_irqfd(running_vm()), indent=1))
        return 0
    rec = Recorder(Path(argv[0] if argv else "/lab/vm_results.json"))
    rec.data["boot_uptime_s"] = T.uptime()
    T.modprobe("tun", "veth", "vhost_net")
    T.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    virtio_worker = None
    with rec.step("virtio_setup"):  # the lab guest's own virtio-net NICs (conftest: --virtio-nics)
        virtio_checks.setup()
        virtio_worker = virtio_checks.start_worker()  # compiles while the nested VM boots
    why = nested_vm.nesting_unavailable()
    if why:
        rec.data["nesting_unavailable"] = why
        _check_virtio(rec, virtio_worker)
        rec.save()
        return 0

    pool = ThreadPoolExecutor(2)
    with rec.step("topology"):
        T.start_ovs()
        br = T.Bridge.create("br-int")
        sysnet = T.system_path(br)
        vm = nested_vm.start_nested_vm(br, sysnet)
        rec.data["vm"] = {"boot_s": vm.boot_s, "failed_boots": vm.failed_boots, "pid": vm.pid,
                          "tap": vm.tap, "ip": vm.ip,
                          "vhost_tids": vm.vhost_tids(), "vcpu_tids": vm.vcpu_tids()}
    if "topology" in rec.data["errors"]:
        for w in virtio_worker or ():
            w.close()
        return 1
    try:
        ring_f = pool.submit(start_probe, "tun-ring-monitor", "--device", vm.tap, "-i", "1", "--json")
        # its twin by kprobes (drop hook and ring): the same counts (issue 18)
        twin_f = pool.submit(start_probe, "tun-ring-monitor", "--device", vm.tap, "-i", "1", "--json",
                             "--attach", "kprobe")
        kvm_probe = start_kvm_probe(vm)  # compiles in its own process meanwhile
        with rec.step("probes_attach"):
            ring_probe, ring_twin = ring_f.result(), twin_f.result()
            rec.data["vm_gone_after_attach"] = vm.gone()
        _check_virtio(rec, virtio_worker)
        with rec.step("tun_ring"):
            rec.data["tun_ring"] = check_ring_overflow(br, sysnet, vm, ring_probe, ring_twin)
        with rec.step("probes_stop"):
            rec.data["probes"] = {"tun-ring-monitor": stop_probe(ring_probe),
                                  "tun-ring-monitor --attach kprobe": stop_probe(ring_twin)}
        with rec.step("kvm_irqfd"):
            rec.data["kvm_irqfd"] = check_kvm_irqfd(vm, kvm_probe)
        with rec.step("autopilot_ring"):
            rec.data["autopilot_ring"] = check_autopilot_ring_overflow(vm)
        # The autopilot on a starved vhost worker runs in the dev loop only (--autopilot-vhost): its
        # control still names the cause when the host takes the lab's CPU for ~200 ms (docs/lab.md).
        with rec.step("vhost"):
            check_vhost(br, vm, rec.data.setdefault("vhost", {}))  # what a failed phase leaves is kept
    finally:
        vm.stop()
    rec.data["kprobes_left"] = kprobes_registered()
    rec.data["trampolines_left"] = trampolines_loaded()
    rec.data["total_s"] = round(T.uptime() - rec.data["boot_uptime_s"], 1)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
