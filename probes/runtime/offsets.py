"""Kernel struct field offsets, resolved from BTF and cached per kernel.

Probes name the fields they read with short macro names (``SKB_HEAD``); the
BPF C reads ``NS_OFF_SKB_HEAD`` bytes into the struct.  With matching kernel
headers and no BTF we fall back to the compiler's ``offsetof``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from functools import lru_cache

from .btf import BTF, VMLINUX_BTF, BTFError
from .paths import cache_dir

# macro name -> (struct, field path).  Add what new probes read here.
FIELDS: dict[str, tuple[str, str]] = {
    "SKB_DEV": ("sk_buff", "dev"),
    "SKB_LEN": ("sk_buff", "len"),
    "SKB_DATA_LEN": ("sk_buff", "data_len"),
    "SKB_HEAD": ("sk_buff", "head"),
    "SKB_DATA": ("sk_buff", "data"),
    "SKB_PROTOCOL": ("sk_buff", "protocol"),
    "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "SKB_MAC_HEADER": ("sk_buff", "mac_header"),
    "SKB_VLAN_TCI": ("sk_buff", "vlan_tci"),
    "NETDEV_NAME": ("net_device", "name"),
    "NETDEV_IFINDEX": ("net_device", "ifindex"),
    "NETDEV_ND_NET": ("net_device", "nd_net"),
    "NET_NS_INUM": ("net", "ns.inum"),
    "NETDEV_QDISC": ("net_device", "qdisc"),
    "QDISC_HANDLE": ("Qdisc", "handle"),
    "TASK_PID": ("task_struct", "pid"),
    "SKB_QUEUE_MAPPING": ("sk_buff", "queue_mapping"),
    "SOCKET_OPS": ("socket", "ops"),
    "PROTO_OPS_RECVMSG": ("proto_ops", "recvmsg"),
    "PTR_RING_PRODUCER": ("ptr_ring", "producer"),
    "PTR_RING_CONSUMER_HEAD": ("ptr_ring", "consumer_head"),
    "PTR_RING_SIZE": ("ptr_ring", "size"),
    "PTR_RING_QUEUE": ("ptr_ring", "queue"),
    "TASK_TGID": ("task_struct", "tgid"),
    "TASK_SUM_EXEC": ("task_struct", "se.sum_exec_runtime"),
    "TASK_RUN_DELAY": ("task_struct", "sched_info.run_delay"),
    "NAPI_POLL": ("napi_struct", "poll"),
    "NAPI_DEV": ("napi_struct", "dev"),
}

# macro name -> struct whose size the program needs (e.g. netdev_priv() follows net_device).
SIZES: dict[str, str] = {
    "NETDEV_SIZE": "net_device",
}

# macro name -> (module, struct, field path, or None for the struct's size): structs private
# to a module, whose layout only the module's own BTF (/sys/kernel/btf/<module>) knows;
# kernel headers packages do not ship them.  docs/output-virt.md lists what each probe reads.
MODULE_FIELDS: dict[str, tuple[str, str, str | None]] = {
    "TUN_TFILES": ("tun", "tun_struct", "tfiles"),
    "TUN_NUMQUEUES": ("tun", "tun_struct", "numqueues"),
    "TUN_DEV": ("tun", "tun_struct", "dev"),
    "TFILE_TX_RING": ("tun", "tun_file", "tx_ring"),
    "TFILE_SOCKET": ("tun", "tun_file", "socket"),
    "TFILE_TUN": ("tun", "tun_file", "tun"),
    "TFILE_QUEUE_INDEX": ("tun", "tun_file", "queue_index"),
    # vhost (drivers/vhost/vhost.h): a virtqueue, its poll (wait-queue entry + work item)
    "VHOST_POLL_WAIT": ("vhost", "vhost_poll", "wait"),
    "VHOST_POLL_WORK": ("vhost", "vhost_poll", "work"),
    "VHOST_POLL_MASK": ("vhost", "vhost_poll", "mask"),
    "VHOST_POLL_SIZE": ("vhost", "vhost_poll", None),
    "VHOST_WORK_FN": ("vhost", "vhost_work", "fn"),
    "VQ_POLL": ("vhost", "vhost_virtqueue", "poll"),
    "VQ_PRIVATE_DATA": ("vhost", "vhost_virtqueue", "private_data"),
    "VQ_NUM": ("vhost", "vhost_virtqueue", "num"),
    "VQ_LAST_AVAIL_IDX": ("vhost", "vhost_virtqueue", "last_avail_idx"),
    "VQ_AVAIL_IDX": ("vhost", "vhost_virtqueue", "avail_idx"),
    "VQ_LAST_USED_IDX": ("vhost", "vhost_virtqueue", "last_used_idx"),
    "VQ_CALL_CTX": ("vhost", "vhost_virtqueue", "call_ctx.ctx"),  # struct vhost_vring_call since 5.9
    # vhost_net (drivers/vhost/net.c): the device holds its two vqs and the tap socket polls
    "VNET_VQS": ("vhost_net", "vhost_net", "vqs"),
    "VNET_POLL": ("vhost_net", "vhost_net", "poll"),
    "VNET_NVQ_SIZE": ("vhost_net", "vhost_net_virtqueue", None),
    "VNET_NVQ_VQ": ("vhost_net", "vhost_net_virtqueue", "vq"),
    "VNET_NVQ_RXQ_HEAD": ("vhost_net", "vhost_net_virtqueue", "rxq.head"),
    "VNET_NVQ_RXQ_TAIL": ("vhost_net", "vhost_net_virtqueue", "rxq.tail"),
    # virtio-net (drivers/net/virtio_net.c): an RX queue's NAPI and virtqueue; struct
    # virtqueue is public (include/linux/virtio.h) but lives where virtio is (module or built in)
    "VIRTNET_RQ_NAPI": ("virtio_net", "receive_queue", "napi"),
    "VIRTNET_RQ_VQ": ("virtio_net", "receive_queue", "vq"),
    "VIRTQUEUE_INDEX": ("virtio_net", "virtqueue", "index"),
    "VIRTQUEUE_NUM_FREE": ("virtio_net", "virtqueue", "num_free"),
    # kvm's public structs (include/linux/kvm_*.h): in vmlinux's BTF when types deduplicate there
    "IRQFD_KVM": ("kvm", "kvm_kernel_irqfd", "kvm"),
    "IRQFD_GSI": ("kvm", "kvm_kernel_irqfd", "gsi"),
    "IRQFD_WAIT": ("kvm", "kvm_kernel_irqfd", "wait"),
    "IRQFD_INJECT": ("kvm", "kvm_kernel_irqfd", "inject"),
    "IRQFD_EVENTFD": ("kvm", "kvm_kernel_irqfd", "eventfd"),  # the eventfd a vhost vq signals
    "KVM_USERSPACE_PID": ("kvm", "kvm", "userspace_pid"),
    "VCPU_KVM": ("kvm", "kvm_vcpu", "kvm"),
    "VCPU_ID": ("kvm", "kvm_vcpu", "vcpu_id"),
}

_CACHE_FORMAT = 1


class OffsetsUnavailable(Exception):
    """Neither BTF nor matching headers can tell where struct fields live."""


@dataclass(frozen=True)
class StructOffsets:
    source: str  # "btf" or "headers"
    values: dict[str, str]  # macro name -> C expression (a number for BTF)

    def cflags(self, names: list[str]) -> list[str]:
        out = []
        for name in names:
            if name in MODULE_FIELDS:
                out.append(f"-DNS_OFF_{name}={module_offset(name)}")
                continue
            if name in SIZES:
                if name not in self.values:
                    raise OffsetsUnavailable(f"the size of struct {SIZES[name]} is not known on this kernel")
                out.append(f"-DNS_OFF_{name}={self.values[name]}")
                continue
            if name not in self.values:
                raise OffsetsUnavailable(f"field {FIELDS[name][0]}.{FIELDS[name][1]} is not known on this kernel")
            out.append(f"-DNS_OFF_{name}={self.values[name]}")
        return out


# Fields read together, as one window when they sit close: the packet parser's sk_buff
# fields, and a device's ifindex and namespace.  Each bpf_probe_read_kernel costs tens
# of ns on the drop path (bench/drop_program_cost.py).
WINDOWS = {
    "NS_SKB_WIN": ("SKB_VLAN_TCI", "SKB_PROTOCOL", "SKB_NETWORK_HEADER", "SKB_MAC_HEADER", "SKB_HEAD", "SKB_DATA"),
    "NS_DEV_WIN": ("NETDEV_IFINDEX", "NETDEV_ND_NET"),
}
# Fields a window takes too (flag -D<WIN>_<NAME>) where the program reads them all and they fit:
# the packet's identity needs the skb's lengths beside the parser's fields.
WINDOW_EXTRAS = {"NS_SKB_WIN": ("LENS", ("SKB_LEN", "SKB_DATA_LEN"))}
_MAX_WINDOW = 128


def _span(offsets: "StructOffsets", fields) -> tuple[int, int] | None:
    """(start, length) of one read covering ``fields``, 8-byte aligned; None if too long or unknown."""
    try:
        offs = [int(offsets.values[n]) for n in fields]
    except (KeyError, ValueError):  # offsetof() expressions (headers) or missing fields
        return None
    start = min(offs) // 8 * 8
    length = (max(offs) + 8 - start + 7) // 8 * 8  # the last field may be a pointer
    return (start, length) if length <= _MAX_WINDOW else None


def window_cflags(offsets: "StructOffsets", names: list[str]) -> list[str]:
    """-D<WIN>_START/_LEN for each window whose fields the program reads and that fits one
    small read (the C falls back to one read per field without them)."""
    out = []
    for macro, window in WINDOWS.items():
        if not all(n in names for n in window):
            continue
        flag, extras = WINDOW_EXTRAS.get(macro, ("", ()))
        wider = _span(offsets, window + extras) if extras and all(n in names for n in extras) else None
        span = wider or _span(offsets, window)
        if span:
            out += [f"-D{macro}_START={span[0]}", f"-D{macro}_LEN={span[1]}"]
            out += [f"-D{macro}_{flag}=1"] if wider else []
    return out


def _cache_key(blob: bytes) -> str:
    """Changes with the kernel's BTF and with the set of fields asked for."""
    wanted = repr(sorted(FIELDS.items())) + repr(sorted(SIZES.items()))
    return hashlib.sha256(blob + wanted.encode()).hexdigest()[:20]


def from_btf(path=VMLINUX_BTF) -> StructOffsets:
    blob = path.read_bytes()
    cache = cache_dir() / f"offsets-{platform.release()}-{_cache_key(blob)}-v{_CACHE_FORMAT}.json"
    try:
        return StructOffsets("btf", json.loads(cache.read_text()))
    except (OSError, ValueError):
        pass
    btf = BTF(blob)
    values: dict[str, str] = {}
    for name, (struct_name, field) in FIELDS.items():
        try:
            f = btf.field(struct_name, field)
        except BTFError:
            continue  # a field this kernel lacks: probes needing it say so
        if f.bitfield_size:
            continue  # not addressable by byte offset
        values[name] = str(f.offset)
    for name, struct_name in SIZES.items():
        try:
            values[name] = str(btf.struct_size(struct_name))
        except BTFError:
            continue
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(values))
    os.replace(tmp, cache)
    return StructOffsets("btf", values)


def from_headers() -> StructOffsets:
    # Only valid when the BPF C includes the matching kernel headers.
    values = {}
    for name, (struct_name, field) in FIELDS.items():
        values[name] = f"__builtin_offsetof(struct {struct_name},{field})"
    for name, struct_name in SIZES.items():
        values[name] = f"sizeof(struct {struct_name})"
    return StructOffsets("headers", values)


@lru_cache(maxsize=None)
def _btf_of(module: str) -> BTF:
    """A loaded module's split BTF, or vmlinux's (where a built-in module's types are)."""
    if module != "vmlinux" and (VMLINUX_BTF.parent / module).exists():
        return BTF.load_module(module)
    return BTF.load(VMLINUX_BTF)


def _module_btf(module: str, struct_name: str) -> BTF:
    """The BTF that defines the struct: the module's, else vmlinux's (pahole moves a type
    that vmlinux also uses there, e.g. struct kvm on Debian 6.1)."""
    for source in (module, "vmlinux"):
        try:
            btf = _btf_of(source)
            if btf.find(4, struct_name) is not None:  # BTF_KIND_STRUCT
                return btf
        except BTFError:
            pass
    raise OffsetsUnavailable(
        f"needs the {module} module's BTF (/sys/kernel/btf/{module}) for struct {struct_name}: load the module "
        f"(`modprobe {module}`); a kernel without BTF for modules (CONFIG_DEBUG_INFO_BTF_MODULES) cannot tell "
        "where its private structs' fields are")


def module_offset(name: str) -> int:
    """Offset (or size) of a module-private struct field, from the module's BTF."""
    module, struct_name, field = MODULE_FIELDS[name]
    btf = _module_btf(module, struct_name)
    try:
        return btf.struct_size(struct_name) if field is None else btf.field(struct_name, field).offset
    except BTFError as e:
        raise OffsetsUnavailable(f"{module}: {e}") from None


def module_params(module: str, function: str) -> tuple[str, ...]:
    """Parameter names of a module function, from its BTF (choose arguments by name)."""
    try:
        return _btf_of(module).params(function)
    except BTFError as e:
        raise OffsetsUnavailable(f"{module}: {e}") from None


def resolve(have_matching_headers: bool) -> StructOffsets:
    if VMLINUX_BTF.exists():
        try:
            return from_btf()
        except (OSError, BTFError):
            if not have_matching_headers:
                raise
    if have_matching_headers:
        return from_headers()
    raise OffsetsUnavailable(
        "no BTF (/sys/kernel/btf/vmlinux) and no kernel headers matching this kernel: "
        "install the headers package for this kernel (Debian/Ubuntu: linux-headers-$(uname -r); "
        "RHEL/openEuler: kernel-devel-$(uname -r))"
    )
