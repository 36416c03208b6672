"""Real network fixtures for tests: namespaces, veth pairs, traffic, BPF leak checks.

Everything here creates its own devices/namespaces with a per-test-run prefix
and removes them, even when the test fails.  Traffic only ever goes to
addresses inside these namespaces (10.253.x.x) or loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETSLEUTH = [sys.executable, "-m", "wizard.main"]


def probe_refusal(probe: str, *flags: str) -> str:
    """``netsleuth probe PROBE FLAGS -d 1`` refused as bad input: exit 2, one stderr line, no
    traceback; that line."""
    cp = subprocess.run(NETSLEUTH + ["probe", probe, *flags, "-d", "1"], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 2, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1 and "Traceback" not in cp.stderr, cp.stderr
    return cp.stderr.strip()


def sh(*cmd: str, check: bool = True, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, **kw)


@dataclass
class VethNs:
    """Host end ``host_if`` (host_ip) <-> ``peer_if`` (peer_ip) inside namespace ``ns``."""

    ns: str
    host_if: str
    peer_if: str
    host_ip: str
    peer_ip: str

    def host_mac(self) -> str:
        return Path(f"/sys/class/net/{self.host_if}/address").read_text().strip()

    def peer_mac(self) -> str:
        return json.loads(sh("ip", "-j", "link", "show", self.peer_if, ns=self.ns).stdout)[0]["address"]


_subnet = [0]


@contextlib.contextmanager
def veth_ns():
    tag = uuid.uuid4().hex[:6]
    # A /24 no other device of this host uses: tests of other runs may hold 10.253.x too.
    taken = {a.split(".")[2] for a in json.dumps(json.loads(sh("ip", "-j", "-4", "addr").stdout)).split('"')
             if a.startswith("10.253.")}
    if not _subnet[0]:
        _subnet[0] = int(tag, 16) % 250
    for _ in range(250):
        _subnet[0] = (_subnet[0] + 1) % 250
        if str(_subnet[0] + 1) not in taken:
            break
    net = f"10.253.{_subnet[0] + 1}"
    env = VethNs(f"nst-{tag}", f"nsh{tag}", f"nsp{tag}", f"{net}.1", f"{net}.2")
    try:
        sh("ip", "netns", "add", env.ns)
        sh("ip", "link", "add", env.host_if, "type", "veth", "peer", "name", env.peer_if)
        sh("ip", "link", "set", env.peer_if, "netns", env.ns)
        sh("ip", "addr", "add", f"{env.host_ip}/24", "dev", env.host_if)
        sh("ip", "link", "set", env.host_if, "up")
        sh("ip", "addr", "add", f"{env.peer_ip}/24", "dev", env.peer_if, ns=env.ns)
        sh("ip", "link", "set", env.peer_if, "up", ns=env.ns)
        sh("ip", "link", "set", "lo", "up", ns=env.ns)
        # Static neighbours: no ARP traffic to wait for or to see dropped.
        sh("ip", "neigh", "replace", env.peer_ip, "lladdr", env.peer_mac(), "dev", env.host_if)
        sh("ip", "neigh", "replace", env.host_ip, "lladdr", env.host_mac(), "dev", env.peer_if, ns=env.ns)
        yield env
    finally:
        sh("ip", "link", "del", env.host_if, check=False)
        sh("ip", "netns", "del", env.ns, check=False)


@dataclass
class NsPair:
    """Two namespaces of our own joined by a veth pair: ``a_if`` (a_ip) in ``a`` <-> ``b_if``
    (b_ip) in ``b``.  Nothing of it is in the root namespace, so no other test's addresses
    or routes there can take its traffic; IPv6 is off (no router or MLD chatter)."""

    a: str
    b: str
    a_if: str
    b_if: str
    a_ip: str
    b_ip: str


@contextlib.contextmanager
def ns_pair(ifindex: int | None = None):
    """``ifindex``: both ends of the veth get it (ifindex is per namespace)."""
    tag = uuid.uuid4().hex[:6]
    env = NsPair(f"nsa-{tag}", f"nsb-{tag}", f"nsa{tag}", f"nsb{tag}", "10.253.254.1", "10.253.254.2")
    index = ["index", str(ifindex)] if ifindex else []
    try:
        for ns in (env.a, env.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", env.a_if, "netns", env.a, *index, "type", "veth", "peer", "name", env.b_if,
           "netns", env.b, *index)
        for ns, dev, ip in ((env.a, env.a_if, env.a_ip), (env.b, env.b_if, env.b_ip)):
            sh("ip", "addr", "add", f"{ip}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        yield env
    finally:
        sh("ip", "netns", "del", env.a, check=False)
        sh("ip", "netns", "del", env.b, check=False)


def ipv4_udp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes, ident: int = 1) -> bytes:
    """An IPv4/UDP packet with a correct header checksum (UDP checksum 0: none)."""
    import socket
    import struct

    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0, 64, 17, 0,
                               socket.inet_aton(src_ip), socket.inet_aton(dst_ip)))
    csum = sum(struct.unpack("!10H", bytes(ip)))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip[10:12] = struct.pack("!H", ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF)
    return bytes(ip) + udp


TUN, TAP = 0x1, 0x2  # device kinds for open_tun


@contextlib.contextmanager
def open_tun(kind: int, vnet_hdr: bool = False, name: str | None = None):
    """A new tun (L3) or tap (Ethernet) device (``name``, or a new one), up; yields
    (name, fd).  It goes away with its descriptor (closing it deletes the device)."""
    import fcntl
    import struct

    tunsetiff, iff_no_pi, iff_vnet_hdr = 0x400454CA, 0x1000, 0x4000
    name = name or f"nsv{uuid.uuid4().hex[:6]}"
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        flags = kind | iff_no_pi | (iff_vnet_hdr if vnet_hdr else 0)
        fcntl.ioctl(fd, tunsetiff, struct.pack("16sH", name.encode(), flags))
        sh("ip", "link", "set", name, "up")
        yield name, fd
    finally:
        with contextlib.suppress(OSError):  # a test may close it first, to delete the device
            os.close(fd)


def write_refused_by_tun(packets: list[bytes], kind: int) -> int:
    """Write each packet (an Ethernet frame to a TAP, an IP packet to a TUN) behind a
    virtio-net header whose GSO type no kernel knows (5): tun_get_user copies the packet
    in, refuses the header and frees the skb before it sets any header offset, so a probe
    sees the bare buffer.  Returns how many writes the kernel refused (EINVAL)."""
    import errno
    import struct

    refused = 0
    with open_tun(kind, vnet_hdr=True) as (_, fd):
        vnet_hdr = struct.pack("<BBHHHH", 0, 5, 0, 0, 0, 0)  # flags, gso_type, hdr_len, gso_size, csum_*
        for packet in packets:
            try:
                os.write(fd, vnet_hdr + packet)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                refused += 1
    return refused


@contextlib.contextmanager
def tun_in_namespace(address: str, kind: int = TUN):
    """A tun (L3) or tap device inside a new namespace, with ``address``/24 and no other
    route; yields (namespace, device name, fd).  Writing to the fd is receiving from the
    wire; nobody reads it, so what the namespace sends out of it fills its ring (a VM that
    does not read its tap)."""
    ns = f"nst-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        with open_tun(kind) as (name, fd):
            sh("ip", "link", "set", name, "netns", ns)
            sh("ip", "addr", "add", f"{address}/24", "dev", name, ns=ns)
            sh("ip", "link", "set", name, "up", ns=ns)
            yield ns, name, fd
    finally:
        sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def l3_tun_in_namespace(address: str):
    """A tun (L3) device inside a new namespace, with ``address``/24 and no other route:
    yields the fd to write IP packets in as if they came from the wire.  Nothing can leave
    (an ICMP error for them has no route)."""
    with tun_in_namespace(address, TUN) as (_, _, fd):
        yield fd


def send_udp(dst: str, port: int, count: int, payload: bytes = b"netsleuth", ns: str | None = None,
             sport: int = 0, gap: float = 0.0) -> None:
    """Send ``count`` UDP datagrams (from inside ``ns`` when given)."""
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.bind(('',{sport}))\n"
        f"for _ in range({count}):\n"
        f"    s.sendto({payload!r},({dst!r},{port}))\n"
        f"    time.sleep({gap})\n"
    )
    sh(sys.executable, "-c", code, ns=ns)


def send_icmp_echo(dst: str, count: int, ident: int = 0x4242, bad_checksum: bool = False) -> None:
    """``count`` ICMP echo requests (seq 1..count) from a raw socket; with ``bad_checksum``
    the ICMP checksum is off by one, so the receiver must drop them."""
    code = (
        "import socket,struct\n"
        "def csum(b):\n"
        "    s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16\n"
        "    return ~s&0xffff\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
        f"for seq in range(1,{count}+1):\n"
        f"    body=struct.pack('!BBHHH',8,0,0,{ident},seq)+b'netsleuth'+b'\\0'\n"
        f"    c=(csum(body)+{int(bad_checksum)})&0xffff\n"
        f"    s.sendto(body[:2]+struct.pack('!H',c)+body[4:],({dst!r},0))\n"
    )
    sh(sys.executable, "-c", code)


def send_tcp_syn(dst: str, port: int, ns: str | None = None) -> None:
    """One connect() attempt to a closed port (refused by RST)."""
    code = (
        "import socket\n"
        "s=socket.socket()\n"
        "s.settimeout(2)\n"
        f"try: s.connect(({dst!r},{port}))\n"
        "except OSError: pass\n"
    )
    sh(sys.executable, "-c", code, ns=ns)


def our_bpf_programs(pid: int | None = None) -> list[int]:
    """Ids of the BPF programs ``pid`` (this process by default) holds open.

    Read from /proc/PID/fdinfo (a BPF program fd shows ``prog_id``): Debian's
    bpftool does not list the holding pids."""
    pid = pid or os.getpid()
    ids = []
    for info in Path(f"/proc/{pid}/fdinfo").glob("*"):
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.append(int(line.split()[1]))
    return ids


def still_loaded(ids, grace_s: float = 2.0) -> set[int]:
    """Which of the programs ``ids`` are loaded once ``grace_s`` has passed (or none is): a
    closed raw tracepoint link puts its program after an RCU grace period, so a program can
    outlive the process that held it by milliseconds."""
    deadline = time.monotonic() + grace_s
    while (left := set(ids) & loaded_bpf_programs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def loaded_bpf_programs(mine_only: bool = False) -> set[int]:
    """Ids of the BPF programs loaded in the kernel (bpftool prog show); with ``mine_only``,
    only those held by this process or its descendants (another test run on the machine
    loads and unloads its own meanwhile)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    progs = json.loads(out)
    if not mine_only:
        return {p["id"] for p in progs}
    import psutil

    me = psutil.Process()
    ours = {me.pid} | {c.pid for c in me.children(recursive=True)}
    return {p["id"] for p in progs if any(h.get("pid") in ours for h in p.get("pids", ()))}


# A UDP flood for SECONDS to DST:PORT (from source port SPORT, 0: any), as fast as Python sends.
FLOOD = (
    "import socket,sys,time\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "s.bind(('',int(sys.argv[4])))\n"
    "dst=(sys.argv[1],int(sys.argv[2])); end=time.monotonic()+float(sys.argv[3])\n"
    "while time.monotonic()<end:\n"
    "    for _ in range(100): s.sendto(b'flood',dst)\n"
)


def flood_udp(dst: str, port: int, seconds: float, ns: str | None = None, sport: int = 0) -> subprocess.Popen:
    """The flood as a child process (from inside namespace ``ns`` when given)."""
    cmd = [sys.executable, "-c", FLOOD, dst, str(port), str(seconds), str(sport)]
    return subprocess.Popen((["ip", "netns", "exec", ns] if ns else []) + cmd)


def udp_no_ports(ns: str | None = None) -> int:
    """The kernel's own count of UDP datagrams to a closed port (Udp NoPorts) in ``ns``."""
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", ns=ns).stdout.splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


@contextlib.contextmanager
def lo_namespace():
    """A new network namespace with only its loopback, up; removed afterwards."""
    ns = f"nst-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)


class ProbeProcess:
    """`netsleuth probe ...` as a subprocess: waits until attached, collects JSON lines.

    stdout is drained by a thread as the probe prints: a long run would otherwise
    fill the pipe, block the probe in print() and lose its events."""

    def __init__(self, *args: str, ignoring: tuple[int, ...] = ()):
        """``ignoring``: signals the probe starts with ignored (as under nohup, or as a shell's
        background job); every other stop signal starts at its default, as from a terminal,
        whatever this test run inherited."""
        def signals_at_start():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN if sig in ignoring else signal.SIG_DFL)

        self.proc = subprocess.Popen(NETSLEUTH + ["probe", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=signals_at_start)
        line = self.proc.stderr.readline()
        if "Tracing" not in line:
            rest = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"probe did not attach: {line}{rest}")
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._lines.extend, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _finish(self, timeout: float) -> list[dict]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout)
        self.stderr = self.proc.stderr.read()
        self.returncode = self.proc.returncode
        return [json.loads(line) for line in self._lines if line.startswith("{")]

    def stop(self, sig: int = 2, timeout: float = 20) -> list[dict]:
        self.proc.send_signal(sig)
        return self._finish(timeout)

    def wait(self, timeout: float = 60) -> list[dict]:
        return self._finish(timeout)


def settle(seconds: float = 0.3) -> None:
    """Let softirq processing of just-sent packets finish before reading counters."""
    time.sleep(seconds)
