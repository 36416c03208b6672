"""virtnet-poll-monitor (guide: virtnet_poll_monitor), run inside a guest: per virtio-net RX
queue and interval, NAPI polls, packets, polls that used their whole budget, interrupts,
packets per poll, polls per interrupt, free RX descriptors and the CPUs that polled.

Polls come from the napi:napi_poll tracepoint filtered to virtio-net's poll function (its
address from kallsyms), interrupts from the kernel's own count of the queues' MSI-X vectors
(/proc/interrupts: a BPF program misses those that land while another runs on the CPU):
no kprobes needed.  Record and fields: docs/output-virt.md.
"""

from __future__ import annotations

import array
import fcntl
import os
import platform
import re
import socket
import struct
import time
from datetime import datetime
from pathlib import Path

from . import drop_hook
from .base import Flag, Probe, Unavailable, btf_reason, tracepoint_reason
from .runtime.kernel import KernelCaps, symbol_address
from .runtime.loader import load
from .runtime.offsets import OffsetsUnavailable, module_offset
from .runtime.params import CDefines, ParamError
from .system_latency import DURATION, INTERVAL

DRIVER = "virtio_net"
POLL_FN = "virtnet_poll"
TRACEPOINTS = (("napi", "napi_poll"),)
# netsleuth.h's helpers read the drop probes' fields; ours follow.
FIELDS = drop_hook.FIELDS + ["NAPI_POLL", "NAPI_DEV", "VIRTNET_RQ_NAPI", "VIRTNET_RQ_VQ", "VIRTQUEUE_INDEX",
                             "VIRTQUEUE_NUM_FREE"]
COUNTERS = ("polls", "packets", "exhausted")
KERNEL_TEXT_MIN = 0xFFFF800000000000  # x86-64 / arm64 kernel half: a kallsyms address must be in it
SYS_NET = Path("/sys/class/net")
GUEST_HINT = "run it inside the VM, on a virtio-net interface (`modprobe virtio_net`)"


def driver_of(device: str, sys_net: Path = SYS_NET) -> str | None:
    """The kernel driver behind a network device (``virtio_net``), or None (virtual devices)."""
    try:
        return os.path.basename(os.readlink(sys_net / device / "device" / "driver"))
    except OSError:
        return None


def virtio_devices(sys_net: Path = SYS_NET) -> list[str]:
    """The virtio-net interfaces of this (guest) system."""
    try:
        names = sorted(p.name for p in sys_net.iterdir())
    except OSError:
        return []
    return [n for n in names if driver_of(n, sys_net) == DRIVER]


def rx_vectors(device: str, interrupts_text: str, sys_net: Path = SYS_NET) -> dict[int, int]:
    """irq number -> RX queue, from /proc/interrupts' per-queue MSI-X lines (``virtio3-input.0``).
    Empty when the device shares one vector for all its queues (no MSI-X)."""
    try:
        vdev = os.path.basename(os.readlink(sys_net / device / "device"))
    except OSError:
        return {}
    wanted = re.compile(rf"^{re.escape(vdev)}-input\.(\d+)$")
    out = {}
    for line in interrupts_text.splitlines():
        parts = line.split()
        if not parts or not parts[0].rstrip(":").isdigit():
            continue
        m = wanted.match(parts[-1])
        if m:
            out[int(parts[0].rstrip(":"))] = int(m.group(1))
    return out


def irq_counts(interrupts_text: str) -> dict[int, int]:
    """irq number -> interrupts so far, summed over CPUs (/proc/interrupts)."""
    lines = interrupts_text.splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if parts and parts[0].rstrip(":").isdigit():
            out[int(parts[0].rstrip(":"))] = sum(int(x) for x in parts[1:1 + ncpu] if x.isdigit())
    return out


SIOCETHTOOL, ETHTOOL_GRINGPARAM = 0x8946, 0x10


def rx_ring_size(device: str) -> int | None:
    """The RX ring's size in descriptors (`ethtool -g`'s current RX), or None."""
    ring = array.array("I", [ETHTOOL_GRINGPARAM] + [0] * 8)  # struct ethtool_ringparam
    ifreq = struct.pack("16sP", device.encode(), ring.buffer_info()[0]).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCETHTOOL, ifreq)
    except OSError:
        return None
    return ring[5] or None  # rx_pending


def rx_queue_count(device: str, sys_net: Path = SYS_NET) -> int:
    try:
        return sum(1 for p in (sys_net / device / "queues").iterdir() if p.name.startswith("rx-"))
    except OSError:
        return 0


def check_device(device: str | None) -> None:
    """A given --device must be a virtio-net interface (the guest probes watch no other)."""
    if device and driver_of(str(device)) != DRIVER:
        raise ParamError("--device", device, f"a virtio-net interface (this one's driver is "
                         f"{driver_of(str(device)) or 'none'}); {GUEST_HINT}")


def poll_address() -> int:
    """virtnet_poll's address, checked to be a kernel text address (it becomes a C constant)."""
    addr = symbol_address(POLL_FN)
    if addr is None or not KERNEL_TEXT_MIN <= addr < 2**64:
        raise Unavailable(f"virtnet-poll-monitor: no usable address for {POLL_FN} in /proc/kallsyms "
                          f"(got {addr!r}); is the virtio_net module loaded? {GUEST_HINT}")
    return addr


class VirtnetPollMonitor(Probe):
    name = "virtnet-poll-monitor"
    title = "virtio-net NAPI poll monitor (in the guest)"
    tier = 1
    runs_in_guest = True
    cost = "low: two tracepoints, per NAPI poll and per interrupt (not per packet); counters in the kernel"
    description = ("Inside a VM, per virtio-net RX queue: NAPI polls, packets, polls that used their whole "
                   "budget, interrupts, packets per poll, polls per interrupt, free RX descriptors, CPUs.")
    flags = (
        Flag("device", "interface", "the guest's virtio-net interface (default: every one)", short="n",
             label="Interface"),
        INTERVAL,
        DURATION,
    )

    @classmethod
    def parse_options(cls, raw):
        options = super().parse_options(raw)
        check_device(options.raw.get("device"))
        return options

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps) \
            or btf_reason(caps, "virtio-net's queue layout", "use a guest kernel built with BTF") \
            or tracepoint_reason(caps, TRACEPOINTS, "CONFIG_TRACEPOINTS")
        if reason:
            return reason
        if not caps.function(POLL_FN):
            return f"{POLL_FN} is not in /proc/kallsyms: no virtio-net driver here; {GUEST_HINT}"
        return None

    def c_defines(self) -> CDefines:
        return CDefines().set("NS_VIRTNET_POLL", poll_address()).set("NS_F_IFINDEX", self.options.device)

    def load(self):
        try:
            for name in FIELDS:
                if name.startswith(("VIRTNET_", "VIRTQUEUE_")):
                    module_offset(name)
        except OffsetsUnavailable as e:
            raise Unavailable(f"{self.name}: {e}") from None
        devices = [self.options.raw["device"]] if self.options.raw.get("device") else virtio_devices()
        if not devices:
            raise Unavailable(f"{self.name}: no virtio-net interface on this system; {GUEST_HINT}")
        bpf = load("virtnet_poll.bpf.c", self.c_defines(), FIELDS)
        text = Path("/proc/interrupts").read_text()
        self.vectors: dict[str, dict[int, int]] = {dev: rx_vectors(dev, text) for dev in devices}
        self._irq_queue = {irq: (socket.if_nametoindex(dev), queue)
                           for dev, vectors in self.vectors.items() for irq, queue in vectors.items()}
        self._seen: dict[tuple, int] = {}
        self._queue_interrupts()  # the count so far: each read reports what came since
        self._last_read = time.monotonic()
        return bpf

    def _queue_interrupts(self) -> dict[tuple[int, int], int]:
        """(ifindex, queue) -> its vector's interrupts since the last call (all CPUs)."""
        counts = irq_counts(Path("/proc/interrupts").read_text())
        return {key: self._delta((key, "interrupts"), counts.get(irq, 0)) for irq, key in self._irq_queue.items()}

    def describe_attach(self) -> str:
        return f"tracepoint napi:napi_poll ({POLL_FN} only); interrupts from /proc/interrupts (RX queues' vectors)"

    def _delta(self, key: tuple, total: int) -> int:
        delta = total - self._seen.get(key, 0)
        self._seen[key] = total
        return delta

    def _maxima(self, table: bytes) -> dict[tuple[int, int], int]:
        """Each queue's maximum since the last read, then cleared (a poll in between is missed)."""
        t = self.bpf[table]
        out = {(k.ifindex, k.queue): max(per_cpu) for k, per_cpu in t.items()}
        t.clear()
        return out

    def read(self) -> list[dict]:
        """One virtnet_poll record per RX queue that was polled or interrupted since the last read."""
        now = time.monotonic()
        interval, self._last_read = now - self._last_read, now
        interrupts = self._queue_interrupts()
        queues: dict[tuple[int, int], dict] = {}
        for k, per_cpu in self.bpf[b"counts"].items():
            key = (k.ifindex, k.queue)
            d = {c: self._delta((key, c), sum(getattr(v, c) for v in per_cpu)) for c in COUNTERS}
            d["interrupts"] = interrupts.get(key, 0)
            cpus = [cpu for cpu, v in enumerate(per_cpu) if self._delta((key, "cpu", cpu), v.polls) > 0]
            if d["polls"] or d["interrupts"]:
                queues[key] = dict(d, cpus=cpus, budget=max(v.budget for v in per_cpu))
        work_max, free_max = self._maxima(b"work_max"), self._maxima(b"free_max")
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        device_packets: dict[int, int] = {}
        for (ifindex, _), q in queues.items():
            device_packets[ifindex] = device_packets.get(ifindex, 0) + q["packets"]
        records = []
        for (ifindex, queue), q in sorted(queues.items()):
            try:
                device = socket.if_indextoname(ifindex)
            except OSError:
                device = f"ifindex {ifindex}"
            vectors = self.vectors.get(device, {})
            watched = queue in vectors.values()
            interrupts = q["interrupts"] if watched else None
            total = device_packets[ifindex]
            records.append({
                "type": "virtnet_poll", "time": stamp, "interval_s": round(interval, 3),
                "hostname": socket.gethostname(), "kernel": platform.release(),
                "device": device, "queue": queue, "rx_queues": rx_queue_count(device),
                "polls": q["polls"], "packets": q["packets"], "budget_exhausted": q["exhausted"],
                "budget": q["budget"], "interrupts": interrupts,
                "interrupts_unavailable": None if watched else
                "the queue has no MSI-X vector of its own (shared virtio interrupt)",
                "packets_per_poll": round(q["packets"] / q["polls"], 2) if q["polls"] else None,
                "polls_per_interrupt": round(q["polls"] / interrupts, 2) if interrupts else None,
                "max_work": work_max.get((ifindex, queue)),
                "rx_free_max": free_max.get((ifindex, queue)), "ring_size": rx_ring_size(device),
                "share_pct": round(100.0 * q["packets"] / total, 1) if total else None,
                "cpus": q["cpus"],
            })
        return records

    @staticmethod
    def format_text(record: dict) -> str:
        r = record
        irqs = (f"{r['interrupts']} interrupts ({r['polls_per_interrupt']} polls each)"
                if r["interrupts"] is not None else f"interrupts not counted: {r['interrupts_unavailable']}")
        return (f"[{r['time']}] {r['device']} rx queue {r['queue']}: {r['polls']} polls, {r['packets']} packets "
                f"({r['packets_per_poll']} per poll, most {r['max_work']}), budget {r['budget']} used up "
                f"{r['budget_exhausted']} times; {irqs}; free RX descriptors up to {r['rx_free_max']} of "
                f"{r['ring_size']}; CPUs {','.join(map(str, r['cpus'])) or '-'}")
