"""A userspace process playing a VM behind a tap device, as QEMU does without vhost.

It creates the tap (``vnetN``) itself and then reads and writes Ethernet
frames on the tun fd: frames the bridge sends to the "VM" leave the host
through ``tun_net_xmit`` into the tap's ring and are read here; answers are
written back, entering the host through ``tun_get_user``.  It answers ARP for
its address and ICMP echo, and counts UDP datagrams per destination port.

Signals: SIGUSR1 detaches the tap's queue (the device stays up but has no
reader, as when a VM has not enabled a virtio queue), SIGUSR2 re-attaches it.
SIGSTOP/SIGCONT pause reading, so the ring fills.  SIGHUP makes it send
SEND_BURST UDP datagrams of its own (to SEND_TO:SEND_PORT from SEND_SPORT,
payload SEND_PAYLOAD), counting the writes the tap refused.  SIGTERM ends it;
it then prints its counters as JSON on stdout.

    python3 -m tests.lab.fake_vm --tap vnet0 --ip 10.251.0.20 --mac 52:54:00:00:00:20
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
from collections import Counter

TUNSETIFF = 0x400454CA
TUNSETQUEUE = 0x400454D9
TUNSETPERSIST = 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x0100
IFF_ATTACH_QUEUE, IFF_DETACH_QUEUE = 0x0200, 0x0400
ETH_P_ARP, ETH_P_IP = 0x0806, 0x0800
# What SIGHUP sends: the VM -> host direction (tun_get_user).
SEND_BURST, SEND_TO, SEND_SPORT, SEND_PORT, SEND_PAYLOAD = 15, "10.251.0.1", 40006, 7782, b"netsleuth-lab"


def open_tap(name: str, multi_queue: bool = True) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    # Multi-queue only so that the single queue can be detached and re-attached.
    flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    return fd


def make_persistent(fd: int) -> None:
    """Keep the tap when its last fd closes (what libvirt does for a VM's vnetN)."""
    fcntl.ioctl(fd, TUNSETPERSIST, 1)


def set_queue(fd: int, attached: bool) -> None:
    flag = IFF_ATTACH_QUEUE if attached else IFF_DETACH_QUEUE
    fcntl.ioctl(fd, TUNSETQUEUE, struct.pack("16sH22x", b"", flag))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


class FakeVM:
    def __init__(self, fd: int, ip: str, mac: str):
        self.fd = fd
        self.ip = socket.inet_aton(ip)
        self.mac = mac_bytes(mac)
        self.counts: Counter = Counter()
        self.udp_ports: Counter = Counter()

    def handle(self, frame: bytes) -> bytes | None:
        """The answer to one received frame, if any."""
        self.counts["rx_frames"] += 1
        if len(frame) < 14:
            return None
        src, ethertype = frame[6:12], struct.unpack("!H", frame[12:14])[0]
        if ethertype == ETH_P_ARP and len(frame) >= 42:
            return self._arp_reply(frame, src)
        if ethertype == ETH_P_IP and len(frame) >= 34 and frame[30:34] == self.ip:
            return self._ip(frame, src)
        return None

    def _arp_reply(self, frame: bytes, src: bytes) -> bytes | None:
        op = struct.unpack("!H", frame[20:22])[0]
        sender_mac, sender_ip, target_ip = frame[22:28], frame[28:32], frame[38:42]
        if op != 1 or target_ip != self.ip:
            return None
        self.counts["arp_replies"] += 1
        arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2) + self.mac + self.ip + sender_mac + sender_ip
        return src + self.mac + struct.pack("!H", ETH_P_ARP) + arp

    def _ip(self, frame: bytes, src: bytes) -> bytes | None:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        l4 = frame[14 + ihl:]
        if proto == 17 and len(l4) >= 8:
            self.udp_ports[struct.unpack("!H", l4[2:4])[0]] += 1
            return None
        if proto != 1 or len(l4) < 8 or l4[0] != 8:  # ICMP echo request only
            return None
        self.counts["echo_replies"] += 1
        icmp = b"\0\0\0\0" + l4[4:]
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        ip_hdr = bytearray(frame[14:14 + ihl])
        ip_hdr[12:16], ip_hdr[16:20] = self.ip, frame[26:30]
        ip_hdr[8] = 64
        ip_hdr[10:12] = b"\0\0"
        ip_hdr[10:12] = struct.pack("!H", checksum(bytes(ip_hdr)))
        return src + self.mac + struct.pack("!H", ETH_P_IP) + bytes(ip_hdr) + icmp

    def udp_frame(self, dst_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
        """A UDP datagram from the VM, broadcast at L2 (whoever it is for, the bridge floods it)."""
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none
        ip_hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, self.ip,
                                       socket.inet_aton(dst_ip)))
        ip_hdr[10:12] = struct.pack("!H", checksum(bytes(ip_hdr)))
        return b"\xff" * 6 + self.mac + struct.pack("!H", ETH_P_IP) + bytes(ip_hdr) + udp

    def send_burst(self) -> None:
        frame = self.udp_frame(SEND_TO, SEND_SPORT, SEND_PORT, SEND_PAYLOAD)
        for _ in range(SEND_BURST):
            try:
                os.write(self.fd, frame)
                self.counts["sent_frames"] += 1
            except OSError:  # the tap is down: tun_get_user refused (and freed) it
                self.counts["refused_frames"] += 1

    def serve(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
            except InterruptedError:
                continue
            if not ready:
                continue
            try:
                frame = os.read(self.fd, 65536)
            except OSError:  # queue detached: nothing to read until re-attached
                continue
            answer = self.handle(frame)
            if answer is not None:
                os.write(self.fd, answer)
                self.counts["tx_frames"] += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tap", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--mac", required=True)
    args = ap.parse_args(argv)
    fd = open_tap(args.tap)
    vm = FakeVM(fd, args.ip, args.mac)

    def stop(_sig, _frame):
        print(json.dumps({**vm.counts, "udp_ports": dict(vm.udp_ports)}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, lambda *_: set_queue(fd, False))
    signal.signal(signal.SIGUSR2, lambda *_: set_queue(fd, True))
    signal.signal(signal.SIGHUP, lambda *_: vm.send_burst())
    print("ready", flush=True)
    vm.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
