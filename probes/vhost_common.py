"""What the two vhost-net probes share: hooks, symbols, offsets, flags and the VM's identity.

The C side is netsleuth_vhost.inc.c.  Kernel facts (what is inlined on Debian 6.1, which
structs are module-private) are in docs/output-virt.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .base import Flag, Probe, interval_flag, kprobe_reason
from .runtime import params as P
from .runtime.attach import FunctionHooks
from .runtime.fentry import return_slot
from .runtime.kernel import KernelCaps, function_symbol, symbol_address
from .runtime.loader import ProbeError
from .runtime.offsets import MODULE_FIELDS, OffsetsUnavailable, module_offset, module_params
from .runtime.params import CDefines
from .runtime.vmproc import is_kvm_process
from .stage_latency import FIELDS as STAGE_FIELDS
from .tun_ring import is_tap

VHOST_HINT = "load vhost-net: `modprobe vhost_net` (a VM with `-netdev tap,vhost=on` loads it)"

# The work functions vhost-net queues on its worker: C macro holding each one's address.
WORK_FNS = {
    "handle_tx_kick": "NS_VHOST_HANDLE_TX_KICK",
    "handle_rx_kick": "NS_VHOST_HANDLE_RX_KICK",
    "handle_tx_net": "NS_VHOST_HANDLE_TX_NET",
    "handle_rx_net": "NS_VHOST_HANDLE_RX_NET",
}
POLL_WAKEUP = "vhost_poll_wakeup"
TUN_RECVMSG = "tun_recvmsg"  # a tun socket's ops->recvmsg (netsleuth_vhost.inc.c)
MAX_VQS = 1024

# Fields the shared C reads (netsleuth.h's packet helpers, netsleuth_vhost.inc.c), vmlinux's
# and the modules'.
VQ_FIELDS = STAGE_FIELDS + [
    "SOCKET_OPS", "PROTO_OPS_RECVMSG", "TFILE_SOCKET", "TFILE_TUN", "TFILE_QUEUE_INDEX", "TUN_DEV",
    "VHOST_POLL_WAIT", "VHOST_POLL_WORK", "VHOST_POLL_MASK", "VHOST_POLL_SIZE", "VHOST_WORK_FN",
    "VQ_POLL", "VQ_PRIVATE_DATA", "VQ_CALL_CTX", "VNET_VQS", "VNET_POLL", "VNET_NVQ_SIZE", "VNET_NVQ_VQ"]

INTERVAL = interval_flag(5.0)  # the vhost probes' --interval
QEMU_PID = Flag("pid", "pid", "the VM's QEMU process (it holds /dev/kvm)", short="p", label="QEMU process PID")
TAP = Flag("device", "interface", "only the virtqueues of this tap device, e.g. vnet3", label="VM interface")


def check_vm_flags(raw: dict, values: dict) -> None:
    """--pid must be a QEMU/KVM process, --device a tun/tap: else a ParamError (exit 2)."""
    pid = values.get("pid")
    # Another user's descriptors cannot be listed: then the probe's own "needs root" says it.
    if pid and os.access(f"/proc/{pid}/fd", os.R_OK) and not is_kvm_process(pid):
        raise P.ParamError("--pid", raw.get("pid"), "a QEMU/KVM process (one holding /dev/kvm open)")
    device = raw.get("device")
    if values.get("device") and not is_tap(str(device)):
        raise P.ParamError("--device", device, "a tap device (a VM's vnetN: `ip -d link show` says tun)")


@dataclass(frozen=True)
class Hook:
    """One kernel function a probe hooks: its entry running ``entry`` and/or its return running
    ``ret`` (each a trampoline or a kprobe: FunctionHooks); ``ret_slot``: the C macro telling
    ``ret`` where a trampoline finds the return value; ``reads_args``: the entry reads arguments
    (then a .constprop clone is refused)."""

    function: str
    entry: str | None = None
    ret: str | None = None
    required: bool = True
    reads_args: bool = True
    ret_slot: str | None = None


def hooks_reason(caps: KernelCaps, hooks: tuple[Hook, ...], what: str) -> str | None:
    """Why these hooks cannot be placed, or None (kprobes, functions, clones, module BTF)."""
    missing = []
    for h in hooks:
        symbol, problem = _clone_problem(h, caps)
        if h.required and problem and caps.kprobes:
            return problem
        if h.required and symbol is None:
            missing.append(h.function)
    reason = kprobe_reason(caps, missing, what, hint=VHOST_HINT)
    if reason:
        return reason
    if symbol_address(TUN_RECVMSG) is None:
        return f"kernel function {TUN_RECVMSG} is missing: `modprobe tun` (and run as root to see addresses)"
    try:
        for name in VQ_FIELDS:
            if name in MODULE_FIELDS:
                module_offset(name)
    except OffsetsUnavailable as e:
        return str(e)
    return None


def _clone_problem(h: Hook, caps: KernelCaps | None = None) -> tuple[str | None, str | None]:
    """(the symbol to probe for ``h``, why there is none)."""
    if caps is not None and caps.function(h.function):
        return h.function, None
    symbol, problem = function_symbol(h.function)
    if symbol and symbol != h.function and h.reads_args:
        return None, (f"{h.function} is compiled as {symbol} here: the compiler dropped some of its "
                      "arguments, so they cannot be chosen by name")
    return symbol, problem


def attach_hooks(bpf, hooks: tuple[Hook, ...], mode: str) -> FunctionHooks:
    """Attach every hook whose function exists, by ``--attach``; how each one was."""
    attached = FunctionHooks(bpf, mode)
    for h in hooks:
        symbol, problem = _clone_problem(h)
        if symbol is None:
            if h.required:
                raise ProbeError(problem or f"kernel function {h.function} is missing ({VHOST_HINT})")
            continue
        if h.entry:
            attached.entry(h.function, h.entry, symbol)
        if h.ret:
            attached.exit(h.function, h.ret, symbol, maxactive=64)
    return attached


def set_return_slots(d: CDefines, hooks: tuple[Hook, ...]) -> CDefines:
    """Each ``ret_slot`` macro: where its function's trampoline finds the return value."""
    for h in hooks:
        if h.ret_slot:
            d.set(h.ret_slot, return_slot(h.function))
    return d


def arg_index(module: str, function: str, param: str) -> int:
    """1-based position of ``param`` in ``function``'s BTF prototype (signatures change)."""
    try:
        names = module_params(module, function)
    except OffsetsUnavailable as e:
        raise ProbeError(str(e)) from None
    if param not in names:
        raise ProbeError(f"{module}: {function} has no parameter {param!r} on this kernel ({', '.join(names)})")
    index = names.index(param) + 1
    if index > 6:
        raise ProbeError(f"{function}: parameter {param} is passed on the stack, not in a register")
    return index


def vq_defines() -> CDefines:
    """Addresses the shared C compares against: the work functions and tun_recvmsg."""
    d = CDefines().set("NS_MAX_VQS", MAX_VQS)
    for fn, macro in WORK_FNS.items():
        symbol, _ = function_symbol(fn)
        address = symbol_address(symbol) if symbol else None
        if address is None:
            raise ProbeError(f"no address for {fn} in /proc/kallsyms (run as root; {VHOST_HINT})")
        d.set(macro, address)
    recvmsg = symbol_address(TUN_RECVMSG)
    if recvmsg is None:
        raise ProbeError(f"no address for {TUN_RECVMSG} in /proc/kallsyms: `modprobe tun` (run as root)")
    return d.set("NS_TUN_RECVMSG", recvmsg)


_VHOST_COMM = re.compile(r"^vhost-(\d+)$")


def qemu_pid_of_worker(tid: int, tgid: int, comm: str) -> int | None:
    """The QEMU a vhost worker serves: its thread group on >= 6.4 (a vhost_task inside QEMU),
    else the owner pid in the kthread's name `vhost-<pid>` (<= 6.3)."""
    if tgid and tgid != tid:
        return tgid
    m = _VHOST_COMM.match(comm)
    return int(m.group(1)) if m else None


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def cpu_list(mask: int) -> list[int]:
    return [i for i in range(64) if mask >> i & 1]


class VhostProbe(Probe):
    """What the two vhost probes share: the VM's flags checked together, the hooks' reason."""

    hooks: tuple[Hook, ...] = ()

    @classmethod
    def parse_options(cls, raw):
        options = super().parse_options(raw)
        check_vm_flags(raw, options.values)
        return options

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        return super().unavailable_reason(caps) or hooks_reason(caps, cls.hooks, "on vhost-net's functions")
