"""Hypervisor network fixtures, run INSIDE the lab guest (root, throwaway).

    ovs = start_ovs()                         # ovsdb-server + ovs-vswitchd, kernel datapath
    br = Bridge.create("br-int")
    sysnet = system_path(br)                  # internal port (host IP) + veth "uplink" into a namespace
    vm = vm_path(br)                          # tap vnet0 + a userspace process playing the VM
    br.add_drop_flow("udp,nw_dst=...,tp_dst=7777")
    br.add_flow("priority=300,dl_dst=...,actions=controller")
    br.flush_datapath()                       # next packets miss the datapath: upcalls
    with slow_vswitchd(ovs, percent=5): ...   # cgroup CPU limit on ovs-vswitchd
    with PausedVswitchd() as p: ...; p.resume()   # ovs-vswitchd stopped for a known time

Addresses are 10.251.0.0/24 inside the guest; the guest has no network device
of its own, so nothing can leave it.  There is no IPv6 in the uplink namespace
(guest_checks turns it off in the root namespace too): only packets a check
sends cross the bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests import netenv
from tests.lab import fake_vm

SUBNET = "10.251.0"
# The system path's MACs begin like an IPv4 header (46: version 4, IHL 6; 4e: IHL 14), so
# each direction's frames test the probes that parse a bare buffer (the datagrams
# ovs-vswitchd sends back to execute) on every boot; random MACs did so on 2 of ~7 boots.
SYS_PORT_MAC, PEER_MAC = "4e:00:5e:fb:00:01", "46:00:5e:fb:00:02"
# OVS 3.1.0 (Debian's) starts ovs-vswitchd with no handler threads when it comes
# up within ~10 s of boot, and every upcall then fails (fixed in 3.1.1).
OVS_MIN_UPTIME_S = 11.0
OVS_RUN = Path("/var/run/openvswitch")
OVS_DB = Path("/etc/openvswitch/conf.db")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def sh(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None,
       timeout: float = 60) -> str:
    """stdout of ``cmd``; a failure raises with the command's own error message."""
    cp = netenv.sh(*cmd, ns=ns, check=False, input=input, timeout=timeout)
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
    return cp.stdout


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def wait_for(read, target, timeout: float = 30, step: float = 0.1):
    """Poll ``read()`` until it returns ``target`` or time runs out; the last value."""
    deadline = time.monotonic() + timeout
    while (value := read()) != target and time.monotonic() < deadline:
        time.sleep(step)
    return value


def modprobe(*modules: str) -> None:
    for m in modules:
        sh("modprobe", m)


def qdisc_stats(dev: str, ns: str | None = None) -> dict:
    """The root qdisc's own counters of ``dev`` (drops, qlen, backlog, ...)."""
    qdiscs = json.loads(sh("tc", "-s", "-j", "qdisc", "show", "dev", dev, ns=ns))
    return next(q for q in qdiscs if q.get("root"))


def link_stats(dev: str, ns: str | None = None) -> dict:
    """The kernel's counters of ``dev`` (rx/tx packets, dropped, ...)."""
    info = json.loads(sh("ip", "-s", "-j", "link", "show", dev, ns=ns))[0]
    return info["stats64"]


def mac_of(dev: str, ns: str | None = None) -> str:
    return json.loads(sh("ip", "-j", "link", "show", dev, ns=ns))[0]["address"]


# --- Open vSwitch --------------------------------------------------------

def ovs_pid(daemon: str = "ovs-vswitchd") -> int:
    return int((OVS_RUN / f"{daemon}.pid").read_text().strip())


def handler_threads() -> list[int]:
    """Thread ids of ovs-vswitchd's upcall handlers (a thread that exits meanwhile is skipped:
    ovs-vswitchd replaces its handlers when its CPUs change)."""
    out = []
    for task in Path(f"/proc/{ovs_pid()}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("handler"):
                out.append(int(task.name))
        except OSError:
            continue
    return out


def wait_for_handlers(timeout: float = 60) -> list[int]:
    """Handler threads exist once a datapath does (the first bridge)."""
    deadline = time.monotonic() + timeout
    while not (tids := handler_threads()):
        if time.monotonic() > deadline:
            raise RuntimeError("ovs-vswitchd started no handler threads (the OVS 3.1.0 early-boot bug?)")
        time.sleep(0.2)
    return tids


@dataclass
class Ovs:
    started_at_uptime: float  # ovs-vswitchd's start, in guest uptime seconds

    def stop(self) -> None:
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            sh("ovs-appctl", "-t", daemon, "exit", check=False, timeout=20)


def start_ovs(wait_for_uptime: bool = True) -> Ovs:
    """ovsdb-server, then ovs-vswitchd once the guest has been up long enough."""
    modprobe("openvswitch")
    OVS_RUN.mkdir(parents=True, exist_ok=True)
    Path("/var/log/openvswitch").mkdir(parents=True, exist_ok=True)
    if not OVS_DB.exists():
        OVS_DB.parent.mkdir(parents=True, exist_ok=True)
        sh("ovsdb-tool", "create", str(OVS_DB), str(OVS_SCHEMA))
    sh("ovsdb-server", str(OVS_DB), f"--remote=punix:{OVS_RUN}/db.sock", "--pidfile", "--detach",
       "--log-file")
    sh("ovs-vsctl", "--no-wait", "init")
    if wait_for_uptime and uptime() < OVS_MIN_UPTIME_S:
        time.sleep(OVS_MIN_UPTIME_S - uptime())
    sh("ovs-vswitchd", "--pidfile", "--detach", "--log-file")
    return Ovs(uptime())


def pin_vswitchd(cpus: list[int], timeout: float = 30) -> float:
    """All of ovs-vswitchd's threads onto ``cpus``, then wait until it has made its new set of
    handlers, one per CPU: it re-counts its CPUs every 10 s and re-makes every handler, and
    an upcall sent to a closed handler's socket is lost (a lost ping seen at the start of a
    later scenario).  The seconds it took."""
    start, before = time.monotonic(), set(handler_threads())
    sh("taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(ovs_pid()))
    while not ((now := set(handler_threads())).isdisjoint(before) and len(now) == len(cpus)):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"ovs-vswitchd kept handlers {sorted(now)} (before: {sorted(before)}) "
                               f"{timeout:.0f} s after its CPUs became {cpus}")
        time.sleep(0.2)
    return round(time.monotonic() - start, 1)


@contextlib.contextmanager
def slow_vswitchd(percent: int = 5, period_us: int = 100_000):
    """Run ovs-vswitchd (its handler threads included) under a cgroup CPU limit, with a
    CPU hog in the same cgroup: the hog spends the quota at the start of every period,
    so an upcall waits for a later one.  (Without it an upcall that came while quota was
    left got answered at full speed: 3 of 5 pings once.)"""
    root = Path("/sys/fs/cgroup")
    group = root / "ovs-slow"
    subtree = root / "cgroup.subtree_control"
    if "cpu" not in subtree.read_text().split():
        subtree.write_text("+cpu")
    group.mkdir(exist_ok=True)
    (group / "cpu.max").write_text(f"{period_us * percent // 100} {period_us}")
    pid = ovs_pid()
    (group / "cgroup.procs").write_text(str(pid))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (group / "cgroup.procs").write_text(str(hog.pid))
        yield group
    finally:
        hog.kill()
        hog.wait()
        (root / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def thread_states(pid: int) -> list[str]:
    """The scheduler state letter of each thread of ``pid`` (T: stopped)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # a thread that just exited
    return states


class PausedVswitchd:
    """ovs-vswitchd stopped (SIGSTOP) until resume(): upcalls wait in the kernel, so an upcall
    made while it is stopped cannot be answered before the resume, a known time.

        with PausedVswitchd() as pause:
            ...                       # packets upcall and wait
            resumed_ns = pause.resume()
    """

    def __enter__(self) -> "PausedVswitchd":
        self.pid = ovs_pid()
        self.resumed_ns: int | None = None
        os.kill(self.pid, signal.SIGSTOP)
        # kill() returns before every thread has stopped: a handler running on the other
        # CPU can still answer an upcall (seen: a datagram of a 40 ms pause took 2.9 ms).
        deadline = time.monotonic() + 5
        while not all(state == "T" for state in thread_states(self.pid)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"ovs-vswitchd ({self.pid}) did not stop")
            time.sleep(0.001)
        return self

    def resume(self) -> int:
        """Let it run again; the monotonic time (ns) just before it could."""
        if self.resumed_ns is None:
            self.resumed_ns = time.monotonic_ns()
            os.kill(self.pid, signal.SIGCONT)
        return self.resumed_ns

    def __exit__(self, *exc) -> None:
        self.resume()


@dataclass
class Bridge:
    name: str

    @classmethod
    def create(cls, name: str = "br-int") -> "Bridge":
        sh("ovs-vsctl", "--may-exist", "add-br", name)
        sh("ip", "link", "set", name, "up")
        wait_for_handlers()
        return cls(name)

    def add_port(self, port: str, internal: bool = False) -> int:
        extra = ["--", "set", "Interface", port, "type=internal"] if internal else []
        sh("ovs-vsctl", "--may-exist", "add-port", self.name, port, *extra)
        return self.ofport(port)

    def ofport(self, port: str) -> int:
        deadline = time.monotonic() + 20
        while True:
            value = sh("ovs-vsctl", "get", "Interface", port, "ofport").strip()
            if value.lstrip("-").isdigit() and int(value) > 0:
                return int(value)
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} got no OpenFlow port number ({value})")
            time.sleep(0.1)

    def add_flow(self, flow: str) -> None:
        sh("ovs-ofctl", "add-flow", self.name, flow)

    def add_drop_flow(self, match: str, priority: int = 100) -> str:
        """An OpenFlow rule dropping what ``match`` selects (ovs-ofctl match syntax)."""
        flow = f"priority={priority},{match},actions=drop"
        self.add_flow(flow)
        return flow

    def packet_out(self, frame: bytes, port: str) -> None:
        """An OpenFlow packet-out: ovs-vswitchd has the datapath execute ``frame`` (output to
        ``port``) with no upcall before it."""
        sh("ovs-ofctl", "packet-out", self.name, f"in_port=controller packet={frame.hex()} actions=output:{port}")

    def del_flows(self, match: str) -> None:
        sh("ovs-ofctl", "--strict", "del-flows", self.name, match)

    def flush_datapath(self) -> None:
        """Delete the kernel datapath's flows: the next packets of every flow upcall."""
        sh("ovs-dpctl", "del-flows")

    def purge_flows(self) -> None:
        """ovs-vswitchd deletes every datapath flow and forgets it: the next packets upcall
        AND get their flows installed again.  (After flush_datapath, behind its back, it keeps
        its flow records and answers upcalls without reinstalling until it revalidates.)"""
        sh("ovs-appctl", "revalidator/purge")

    def datapath_flows(self) -> list[str]:
        return [line for line in sh("ovs-dpctl", "dump-flows").splitlines() if line.strip()]

    def upcall_stats(self) -> dict[str, int]:
        """ovs-dpctl's datapath counters: hit, missed (= upcalls), lost."""
        out = sh("ovs-dpctl", "show")
        stats = {}
        for key in ("hit", "missed", "lost"):
            for word in out.split():
                if word.startswith(key + ":"):
                    stats[key] = int(word.split(":")[1])
        return stats


# --- the "system network" path ---------------------------------------------

@dataclass
class SystemPath:
    """Host stack -> OVS internal port ``port`` (``ip``) -> br-int -> veth ``uplink`` ->
    namespace ``ns`` (``peer_if``, ``peer_ip``), standing in for the physical network."""

    port: str
    ip: str
    uplink: str
    ns: str
    peer_if: str
    peer_ip: str


def system_path(br: Bridge, port: str = "sys0", uplink: str = "phy0", ns: str = "uplink") -> SystemPath:
    modprobe("veth")
    path = SystemPath(port, f"{SUBNET}.1", uplink, ns, "eth0", f"{SUBNET}.2")
    br.add_port(port, internal=True)
    sh("ip", "link", "set", port, "address", SYS_PORT_MAC)
    sh("ip", "addr", "add", f"{path.ip}/24", "dev", port)
    sh("ip", "link", "set", port, "up")
    sh("ip", "netns", "add", ns)
    # A new namespace has IPv6 on whatever the host says: keep it quiet like the rest.
    sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
    sh("ip", "link", "add", uplink, "type", "veth", "peer", "name", path.peer_if, "netns", ns)
    sh("ip", "link", "set", uplink, "up")
    br.add_port(uplink)
    sh("ip", "link", "set", path.peer_if, "address", PEER_MAC, ns=ns)
    sh("ip", "addr", "add", f"{path.peer_ip}/24", "dev", path.peer_if, ns=ns)
    sh("ip", "link", "set", path.peer_if, "up", ns=ns)
    sh("ip", "link", "set", "lo", "up", ns=ns)
    return path


# --- the "VM" path -----------------------------------------------------------

class VmPath:
    """tap ``tap`` on the bridge; its other side is tests/lab/fake_vm.py answering as ``ip``."""

    def __init__(self, br: Bridge, tap: str, ip: str, mac: str):
        self.tap, self.ip, self.mac = tap, ip, mac
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lab.fake_vm", "--tap", tap, "--ip", ip, "--mac", mac],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"fake VM did not start: {line} {self.proc.stderr.read()}")
        sh("ip", "link", "set", tap, "up")
        self.ofport = br.add_port(tap)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """Stop reading: the tap's ring fills, then tun_net_xmit drops."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def detach_queue(self) -> None:
        """The tap stays up with no reader attached: tun_net_xmit drops everything."""
        os.kill(self.pid, signal.SIGUSR1)

    def attach_queue(self) -> None:
        os.kill(self.pid, signal.SIGUSR2)

    def send_burst(self) -> None:
        """The VM sends fake_vm.SEND_BURST UDP datagrams of its own (VM -> host: tun_get_user)."""
        os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> dict:
        """End the process; its counters (frames read, replies, UDP per port)."""
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def persistent_tap_without_reader(br: Bridge, tap: str) -> str:
    """A tap on the bridge whose VM process is gone: persistent, no fd, so no carrier."""
    fd = fake_vm.open_tap(tap, multi_queue=False)
    fake_vm.make_persistent(fd)
    sh("ip", "link", "set", tap, "up")
    br.add_port(tap)
    os.close(fd)
    return tap


def vm_path(br: Bridge, tap: str = "vnet0", host: int = 20) -> VmPath:
    modprobe("tun")
    return VmPath(br, tap, f"{SUBNET}.{host}", f"52:54:00:00:00:{host:02x}")


# --- traffic ------------------------------------------------------------------

def ping(dst: str, count: int = 3, ns: str | None = None, interval: float = 0.2, timeout: float = 30) -> int:
    """Echo replies received (ping's own count)."""
    out = sh("ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "2", dst, ns=ns, check=False,
             timeout=timeout)
    for line in out.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    raise RuntimeError(f"unexpected ping output: {out}")


def static_neighbour(ip: str, mac: str, dev: str, ns: str | None = None) -> None:
    """No ARP needed (and none to be dropped) towards ``ip``."""
    sh("ip", "neigh", "replace", ip, "lladdr", mac, "dev", dev, ns=ns)


def static_neighbours(sysnet: SystemPath, vm: VmPath) -> None:
    """Every neighbour between the host stack, the uplink namespace and the VM: the
    scenarios' packets need no ARP (and none of it is counted or dropped)."""
    static_neighbour(vm.ip, vm.mac, sysnet.port)
    static_neighbour(vm.ip, vm.mac, sysnet.peer_if, ns=sysnet.ns)
    static_neighbour(sysnet.peer_ip, mac_of(sysnet.peer_if, ns=sysnet.ns), sysnet.port)
    static_neighbour(sysnet.ip, mac_of(sysnet.port), sysnet.peer_if, ns=sysnet.ns)
