"""What is on this host: interfaces with their kind, VMs and their vnets, OVS, flows.

Pure data for the wizard's pickers (no UI here).  Sources, all read-only:
netlink through `ip -j -d` (pyroute2 is not available), `/sys/class/net`,
psutil for processes and sockets, `/proc/PID/fdinfo` for which tap device a
QEMU process holds, and `ovs-vsctl --format=json` where OVS is installed.
Every source may be missing: what could not be read is listed in
``Inventory.notes`` instead of failing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from probes.runtime.vmproc import tap_devices_of
from probes.runtime.netns import Namespace, current_netns, namespaces

SYS_NET = Path("/sys/class/net")

# Interface kinds, in the words the context screen shows.
PHYSICAL, VETH, TAP, TUN, BRIDGE, OVS_INTERNAL, OVS_DATAPATH, LOOPBACK = (
    "physical", "veth", "tap", "tun", "bridge", "ovs-internal", "ovs-datapath", "loopback")

# Threads of ovs-vswitchd that the guide's root-cause steps are about.
VSWITCHD_ROLES = ("handler", "revalidator", "urcu", "pmd")


@dataclass(frozen=True)
class Interface:
    name: str
    ifindex: int
    kind: str  # one of the constants above, or "virtual (<netlink kind>)"
    up: bool
    mac: str | None = None
    mtu: int | None = None
    addresses: tuple[str, ...] = ()  # IPv4 CIDRs
    master: str | None = None  # Linux bridge / bond it is enslaved to
    peer: str | None = None  # veth peer name (may live in another namespace)
    ovs_bridge: str | None = None  # OVS bridge it is a port of
    vm: str | None = None  # VM using it (tap/vnet)
    driver: str | None = None  # netlink kind or bus of a physical NIC
    namespace: str | None = None  # another network namespace it lives in (its label), None = ours
    namespace_ref: str | None = None  # that namespace as --netns takes it (name or pid)

    @property
    def choice(self) -> str:
        """The value a picker gives: the name, ``name@namespace`` for another namespace's."""
        return f"{self.name}@{self.namespace_ref}" if self.namespace_ref else self.name

    def label(self) -> str:
        """One line for a picker: name, kind, address, what it is attached to."""
        parts = [self.kind]
        if self.addresses:
            parts.append(", ".join(self.addresses))
        if self.vm:
            parts.append(f"VM {self.vm}")
        if self.ovs_bridge:
            parts.append(f"OVS {self.ovs_bridge}")
        elif self.master:
            parts.append(f"in {self.master}")
        if self.peer and self.kind == VETH:
            parts.append(f"peer {self.peer}")
        if not self.up:
            parts.append("down")
        if self.namespace:
            parts.append(f"namespace {self.namespace}")
        return f"{self.name} ({'; '.join(parts)})"


@dataclass(frozen=True)
class VM:
    name: str
    pid: int
    interfaces: tuple[str, ...]  # tap/vnet devices it holds
    manager: str  # "libvirt" or "qemu"


@dataclass(frozen=True)
class VswitchdThread:
    tid: int
    name: str
    role: str  # handler / revalidator / urcu / pmd / other


@dataclass(frozen=True)
class Ovs:
    bridges: dict[str, tuple[str, ...]]  # bridge -> port names
    interface_types: dict[str, str]  # interface -> OVS type ("internal", "" = system, "patch", ...)
    vswitchd_pid: int | None
    threads: tuple[VswitchdThread, ...] = ()

    def tids(self, role: str) -> list[int]:
        return [t.tid for t in self.threads if t.role == role]


@dataclass(frozen=True)
class Flow:
    protocol: str  # tcp | udp
    local_ip: str
    local_port: int
    remote_ip: str | None
    remote_port: int | None
    state: str
    pid: int | None
    process: str | None
    namespace: str | None = None  # another network namespace's socket: its label
    namespace_ref: str | None = None  # and its --netns value

    def label(self) -> str:
        remote = f"{self.remote_ip}:{self.remote_port}" if self.remote_ip else "*"
        who = f" [{self.process}]" if self.process else ""
        return f"{self.protocol.upper()} {self.local_ip}:{self.local_port} -> {remote} {self.state}{who}{_in_ns(self)}"


def _in_ns(thing) -> str:
    return f" in namespace {thing.namespace}" if thing.namespace else ""


@dataclass
class Inventory:
    hostname: str
    kernel: str
    interfaces: list[Interface]
    vms: list[VM]
    ovs: Ovs | None
    flows: list[Flow]
    notes: list[str] = field(default_factory=list)  # sources that could not be read, in words
    namespaces: list[tuple[str, str]] = field(default_factory=list)  # (label, --netns value) of the others

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def by_kind(self, *kinds: str) -> list[Interface]:
        return [i for i in self.interfaces if i.kind in kinds]


# --- netlink (ip -j) ----------------------------------------------------------

def _ip_json(args: list[str], netns: str | None, enter: str = "") -> list[dict]:
    """``ip -j ARGS`` here, in a named namespace, or after an ``enter`` prefix (nsenter ...)."""
    cmd = enter.split() + ["ip"] + (["-n", netns] if netns else []) + ["-j"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
    return json.loads(out or "[]")


def _has_device(name: str) -> bool:
    """A bus device behind the interface (PCI, virtio, USB): real hardware or a VM's NIC."""
    return (SYS_NET / name / "device").exists()


def classify(link: dict, has_device: bool) -> str:
    """The kind of one `ip -j -d link` entry."""
    info = link.get("linkinfo") or {}
    kind = info.get("info_kind")
    if link.get("link_type") == "loopback":
        return LOOPBACK
    if kind == "veth":
        return VETH
    if kind == "tun":
        return TAP if (info.get("info_data") or {}).get("type", "tap") == "tap" else TUN
    if kind == "bridge":
        return BRIDGE
    if kind == "openvswitch":
        return OVS_DATAPATH if link.get("ifname") == "ovs-system" else OVS_INTERNAL
    if kind:
        return f"virtual ({kind})"
    return PHYSICAL if has_device else "virtual"


def _addresses(netns: str | None, enter: str = "") -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for entry in _ip_json(["-4", "addr", "show"], netns, enter):
        cidrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])
                      if a.get("family") == "inet")
        out[entry["ifname"]] = cidrs
    return out


def _links(netns: str | None, enter: str = "") -> list[dict]:
    return _ip_json(["-d", "link", "show"], netns, enter)


# --- VMs -------------------------------------------------------------------------

_TAP_IFNAME_RE = re.compile(r"(?:^|,)ifname=([^,]+)")


def qemu_vm_name(cmdline: list[str]) -> str | None:
    """The VM name from `-name guest=NAME,...` or `-name NAME`."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "-name":
            value = cmdline[i + 1]
            for part in value.split(","):
                if part.startswith("guest="):
                    return part[len("guest="):]
            return value.split(",")[0]
    return None


def _is_qemu(proc: psutil.Process) -> bool:
    name = proc.info.get("name") or ""
    exe = os.path.basename((proc.info.get("cmdline") or [""])[0])
    return any(n.startswith(("qemu-system", "qemu-kvm")) or n == "kvm" for n in (name, exe))


def find_vms() -> list[VM]:
    vms = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "username"]):
        try:
            if not _is_qemu(proc):
                continue
            cmdline = proc.info["cmdline"] or []
            taps = tap_devices_of(proc.pid)
            for arg in cmdline:
                taps.update(_TAP_IFNAME_RE.findall(arg) if "tap" in arg else [])
            manager = "libvirt" if any("libvirt" in a for a in cmdline) or proc.info.get("username") == "libvirt-qemu" \
                else "qemu"
            vms.append(VM(qemu_vm_name(cmdline) or f"qemu pid {proc.pid}", proc.pid, tuple(sorted(taps)), manager))
        except (psutil.Error, OSError):
            continue
    return vms


# --- Open vSwitch ------------------------------------------------------------------

def _ovs_table(table: str, columns: str) -> list[dict]:
    """Rows of an OVSDB table as dicts (ovs-vsctl's JSON is {"headings": [...], "data": [[...]]})."""
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "--format=json", f"--columns={columns}", "list", table],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return parse_ovs_json(out)


def _ovs_value(v):
    """OVSDB JSON atoms: ["set", [...]], ["map", [[k, v], ...]], ["uuid", "..."], or a plain atom."""
    if isinstance(v, list) and len(v) == 2 and v[0] in ("set", "map", "uuid", "named-uuid"):
        tag, body = v
        if tag == "set":
            return [_ovs_value(x) for x in body]
        if tag == "map":
            return {k: _ovs_value(x) for k, x in body}
        return body
    return v


def parse_ovs_json(text: str) -> list[dict]:
    doc = json.loads(text or '{"headings": [], "data": []}')
    return [{h: _ovs_value(v) for h, v in zip(doc["headings"], row)} for row in doc["data"]]


def ovs_topology(read_table=_ovs_table) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Bridges -> port names, and interface -> type, from OVSDB."""
    ports = {p["_uuid"]: p["name"] for p in read_table("Port", "_uuid,name")}
    bridges = {}
    for b in read_table("Bridge", "name,ports"):
        members = b["ports"] if isinstance(b["ports"], list) else [b["ports"]]
        bridges[b["name"]] = tuple(sorted(ports.get(u, u) for u in members))
    types = {i["name"]: i["type"] for i in read_table("Interface", "name,type")}
    return bridges, types


def thread_role(name: str) -> str:
    for role in VSWITCHD_ROLES:
        if name.startswith(role):
            return role
    return "other"


def process_threads(pid: int) -> list[VswitchdThread]:
    """Threads of a process with their names (comm) and guide roles."""
    out = []
    try:
        tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        out.append(VswitchdThread(int(task.name), name, thread_role(name)))
    return out


def find_process(name: str) -> int | None:
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.info["name"] == name:
            return proc.pid
    return None


def find_ovs(notes: list[str]) -> Ovs | None:
    pid = find_process("ovs-vswitchd")
    bridges: dict[str, tuple[str, ...]] = {}
    types: dict[str, str] = {}
    if shutil.which("ovs-vsctl"):
        try:
            bridges, types = ovs_topology()
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
            notes.append(f"ovs-vsctl could not be read: {_short(e)}")
    if pid is None and not bridges:
        return None
    return Ovs(bridges, types, pid, tuple(process_threads(pid)) if pid else ())


# --- sockets --------------------------------------------------------------------------

def find_flows(limit: int = 200) -> list[Flow]:
    """IPv4 TCP/UDP sockets with their processes: candidates for the flow filters."""
    flows = []
    try:
        conns = psutil.net_connections(kind="inet4")
    except (psutil.Error, OSError):
        return flows
    names: dict[int, str] = {}
    for c in conns:
        if not c.laddr:
            continue
        proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
        process = None
        if c.pid:
            if c.pid not in names:
                try:
                    names[c.pid] = psutil.Process(c.pid).name()
                except psutil.Error:
                    names[c.pid] = ""
            process = names[c.pid] or None
        flows.append(Flow(proto, c.laddr.ip, c.laddr.port, c.raddr.ip if c.raddr else None,
                          c.raddr.port if c.raddr else None, c.status if proto == "tcp" else "", c.pid, process))
    # Established connections first: those are the flows people complain about.
    flows.sort(key=lambda f: (f.state != "ESTABLISHED", f.protocol, f.local_port))
    return flows[:limit]


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def _hex_addr(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp, little-endian IPv4) -> ("127.0.0.1", 8080)."""
    ip, port = text.split(":")
    return socket.inet_ntoa(int(ip, 16).to_bytes(4, "little")), int(port, 16)


def proc_net_sockets(pid: int) -> list[tuple[str, str, int, str | None, int | None, str, int]]:
    """IPv4 TCP/UDP sockets of the namespace process ``pid`` is in, from /proc/PID/net/{tcp,udp}
    (psutil reads only our own namespace's): (proto, lip, lport, rip, rport, state, inode)."""
    out = []
    for proto in ("tcp", "udp"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            (lip, lport), (rip, rport) = _hex_addr(f[1]), _hex_addr(f[2])
            state = int(f[3], 16)
            if proto == "tcp" and state == 10 or rip == "0.0.0.0":
                rip, rport = None, None
            out.append((proto, lip, lport, rip, rport, TCP_STATES.get(state, "") if proto == "tcp" else "",
                        int(f[9])))
    return out


def socket_owners(pids: list[int]) -> dict[int, tuple[int, str]]:
    """Socket inode -> (pid, name) of the processes given (their /proc/PID/fd)."""
    owners: dict[int, tuple[int, str]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owners.setdefault(int(link[8:-1]), (pid, comm))
    return owners


def namespace_flows(ns: Namespace, pids: list[int], limit: int = 200) -> list[Flow]:
    """Sockets of another namespace, with their processes, named with the namespace."""
    if not pids:
        return []
    owners = socket_owners(pids)
    flows = []
    for proto, lip, lport, rip, rport, state, inode in proc_net_sockets(pids[0]):
        pid, comm = owners.get(inode, (None, None))
        flows.append(Flow(proto, lip, lport, rip, rport, state, pid, comm, ns.label, ns.ref or None))
    flows.sort(key=lambda f: (f.state != "ESTABLISHED", f.protocol, f.local_port))
    return flows[:limit]


def pids_by_namespace() -> dict[int, list[int]]:
    """Network namespace inode -> the processes in it (lowest pid first)."""
    out: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.setdefault(os.stat(p / "ns" / "net").st_ino, []).append(int(p.name))
            except OSError:
                continue
    return {k: sorted(v) for k, v in out.items()}


def other_namespaces(notes: list[str], with_flows: bool) -> tuple[list[Interface], list[Flow]]:
    """Interfaces and sockets of every other network namespace (named in `ip netns`, or held
    by a process): hypervisors are full of them (qrouter/qdhcp, containers)."""
    interfaces: list[Interface] = []
    flows: list[Flow] = []
    own = current_netns()
    pids = pids_by_namespace() if with_flows else {}
    for ns in namespaces():
        if ns.inode == own or not ns.enter:
            continue
        try:
            links = _links(None, ns.enter)
            addrs = _addresses(None, ns.enter)
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            notes.append(f"namespace {ns.label}: `ip link` failed ({_short(e)})")
            continue
        for link in links:
            if link.get("link_type") == "loopback":
                continue
            info = link.get("linkinfo") or {}
            interfaces.append(Interface(
                name=link["ifname"], ifindex=link["ifindex"], kind=classify(link, False),
                up="UP" in link.get("flags", []), mac=link.get("address"), mtu=link.get("mtu"),
                addresses=addrs.get(link["ifname"], ()), master=link.get("master"),
                driver=info.get("info_kind"), namespace=ns.label, namespace_ref=ns.ref or None))
        if with_flows:
            flows += namespace_flows(ns, pids.get(ns.inode, []))
    return interfaces, flows


@dataclass(frozen=True)
class FlowFilter:
    """One way to fill the context's flow fields from a socket on this host."""

    label: str
    fill: dict  # context field -> value (src_ip, dst_ip, src_port, dst_port, l4_protocol)


def _is_listener(f: Flow) -> bool:
    return f.remote_ip is None or f.state == "LISTEN"


def flow_filters(flows: list[Flow]) -> list[FlowFilter]:
    """The filters a connection picker offers.  A listening socket (or an unconnected UDP one)
    is a service: packets *to* it carry its address and port as destination (0.0.0.0 = any
    address).  A connection is offered both ways, requests to its service and replies from it;
    the service port is this side's when something here listens on it, else the peer's.  A
    client's ephemeral port is never filled: the next connection uses another one."""
    listening = {(f.protocol, f.local_port) for f in flows if _is_listener(f)}
    out: list[FlowFilter] = []
    seen: set[str] = set()

    def add(label: str, fill: dict) -> None:
        if label not in seen:
            seen.add(label)
            fill = dict(fill, namespace=f.namespace_ref)  # a field this choice leaves out is cleared
            out.append(FlowFilter(label, {k: v for k, v in fill.items() if v not in (None, "")}))

    for f in flows:
        proto, who = f.protocol, (f" [{f.process}]" if f.process else "") + _in_ns(f)
        if _is_listener(f):
            ip = None if f.local_ip == "0.0.0.0" else f.local_ip
            add(f"{proto.upper()} to the service on {f.local_ip}:{f.local_port}{who}",
                {"dst_ip": ip, "dst_port": f.local_port, "l4_protocol": proto})
            continue
        if (proto, f.local_port) in listening:  # this side is the server
            (server, port), client = (f.local_ip, f.local_port), f.remote_ip
        else:
            (server, port), client = (f.remote_ip, f.remote_port), f.local_ip
        add(f"{proto.upper()} {client} -> {server}:{port}{who} (requests)",
            {"src_ip": client, "dst_ip": server, "dst_port": port, "l4_protocol": proto})
        add(f"{proto.upper()} {server}:{port} -> {client}{who} (replies)",
            {"src_ip": server, "dst_ip": client, "src_port": port, "l4_protocol": proto})
    return out


def _veth_peer(link: dict, by_index: dict[int, str], netns: str | None,
               cache: dict[str, dict[int, str]]) -> str:
    """Name of a veth's peer; "name@namespace" when the peer lives in another namespace."""
    index = link["link_index"]
    if "link_netnsid" not in link:
        return by_index.get(index, f"ifindex {index}")
    try:
        ns_names = {e["nsid"]: e.get("name") for e in _ip_json(["netns", "list-id"], netns)}
    except (subprocess.SubprocessError, OSError, ValueError):
        ns_names = {}
    other = ns_names.get(link["link_netnsid"])
    if not other:
        return f"ifindex {index} in another namespace"
    if other not in cache:
        try:
            cache[other] = {li["ifindex"]: li["ifname"] for li in _ip_json(["link", "show"], other)}
        except (subprocess.SubprocessError, OSError, ValueError):
            cache[other] = {}
    return f"{cache[other].get(index, f'ifindex {index}')}@{other}"


# --- everything ------------------------------------------------------------------------

def _short(e: BaseException) -> str:
    text = getattr(e, "stderr", None) or str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def discover(netns: str | None = None, with_flows: bool = True, all_namespaces: bool = False) -> Inventory:
    """Everything the context screen offers.  ``netns`` looks inside a named namespace;
    ``all_namespaces`` adds every other namespace's interfaces and sockets, named with it."""
    notes: list[str] = []
    try:
        links = _links(netns)
        addrs = _addresses(netns)
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        notes.append(f"`ip -j link` failed ({_short(e)}); interfaces from /sys/class/net only")
        links = [{"ifname": p.name, "ifindex": int((p / "ifindex").read_text())} for p in SYS_NET.iterdir()]
        addrs = {}
    vms = find_vms() if netns is None else []
    vm_of = {tap: vm.name for vm in vms for tap in vm.interfaces}
    ovs = find_ovs(notes) if netns is None else None
    bridge_of = {port: br for br, ports in (ovs.bridges if ovs else {}).items() for port in ports}
    by_index = {link["ifindex"]: link["ifname"] for link in links}
    peers_cache: dict[str, dict[int, str]] = {}
    interfaces = []
    for link in links:
        name = link["ifname"]
        info = link.get("linkinfo") or {}
        kind = classify(link, netns is None and _has_device(name))
        peer = link.get("link")
        if peer is None and kind == VETH and "link_index" in link:
            peer = _veth_peer(link, by_index, netns, peers_cache)
        interfaces.append(Interface(
            name=name,
            ifindex=link["ifindex"],
            kind=kind,
            up="UP" in link.get("flags", []),
            mac=link.get("address"),
            mtu=link.get("mtu"),
            addresses=addrs.get(name, ()),
            master=link.get("master"),
            peer=peer,
            ovs_bridge=bridge_of.get(name),
            vm=vm_of.get(name),
            driver=info.get("info_kind") or link.get("parentbus"),
        ))
    flows = find_flows() if with_flows and netns is None else []
    if all_namespaces and netns is None:
        more_ifaces, more_flows = other_namespaces(notes, with_flows)
        interfaces += more_ifaces
        flows += more_flows
    return Inventory(
        hostname=socket.gethostname(),
        kernel=os.uname().release,
        interfaces=interfaces,
        vms=vms,
        ovs=ovs,
        flows=flows,
        notes=notes,
        namespaces=[(f"{ns.label} ({ns.enter})", ns.ref) for ns in namespaces()
                    if all_namespaces and netns is None and ns.inode != current_netns() and ns.ref],
    )


# --- pickers ---------------------------------------------------------------------------

_FIRST_KINDS = {
    "physical-interfaces": (PHYSICAL, OVS_INTERNAL, BRIDGE),
    "vm-interfaces": (TAP, TUN),
}


def choices_for(inv: Inventory | None, kind: str, hint: str | None = None,
                netns: str | None = None) -> list[tuple[str, str]]:
    """(label, value) choices a form field of this kind offers, from what was discovered.

    ``hint`` is a context field's ``discover:`` (interfaces, physical-interfaces,
    vm-interfaces, process:NAME); the kinds it names come first.  Interfaces are our
    namespace's by name and others' as ``name@namespace``; with ``netns`` (a form that
    names a namespace), that namespace's interfaces by name, first.
    """
    if inv is None:
        return []
    if kind == "interface":
        first = _FIRST_KINDS.get(hint or "", ())
        ordered = sorted(inv.interfaces, key=lambda i: (i.kind not in first, first.index(i.kind) if i.kind in first
                                                        else 0, i.namespace is not None, i.kind == LOOPBACK))
        if netns:
            ordered.sort(key=lambda i: i.namespace_ref != str(netns))
            return [(i.label(), i.name if i.namespace_ref == str(netns) else i.choice) for i in ordered]
        return [(i.label(), i.choice) for i in ordered]
    if kind == "netns":
        return list(inv.namespaces)
    if kind == "pid":
        out = []
        if inv.ovs and inv.ovs.vswitchd_pid and hint in (None, "process:ovs-vswitchd"):
            out.append((f"ovs-vswitchd (pid {inv.ovs.vswitchd_pid})", str(inv.ovs.vswitchd_pid)))
        if hint in (None, "process:qemu"):
            out += [(f"VM {vm.name} (qemu pid {vm.pid})", str(vm.pid)) for vm in inv.vms]
        if hint and hint.startswith("process:") and hint not in ("process:ovs-vswitchd", "process:qemu"):
            pid = find_process(hint.split(":", 1)[1])
            if pid:
                out.append((f"{hint.split(':', 1)[1]} (pid {pid})", str(pid)))
        return out
    if kind == "tids" and inv.ovs and inv.ovs.threads:
        out = []
        for role in ("handler", "revalidator"):
            tids = inv.ovs.tids(role)
            if tids:
                out.append((f"all ovs-vswitchd {role} threads ({len(tids)})", ",".join(map(str, tids))))
        out += [(f"{t.name} (tid {t.tid})", str(t.tid)) for t in inv.ovs.threads if t.role in ("handler", "revalidator")]
        return out
    return []
