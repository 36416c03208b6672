"""Direct reads of kernel struct fields from a raw tracepoint program, without a helper call.

A raw tracepoint program reads kernel memory with bpf_probe_read_kernel: one helper call
each, 33 ns on this host's kernel (docs/bpf.md#direct-reads).  From 6.2 the kfunc
bpf_rdonly_cast turns a pointer into a typed (BTF) one whose loads the verifier makes
fault-safe plain loads.  BCC cannot emit a kfunc call, so the C calls a stand-in helper
(NS_KFUNC_RDONLY_CAST, netsleuth.h) and this module rewrites those calls into the kfunc's
before it loads and attaches the program itself.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import platform
import struct
from functools import lru_cache

from . import bpf_syscall, btf

# The stand-in's helper number in the compiled code: far past any real helper.
RDONLY_CAST_STANDIN = 0x7EC0_0001
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PSEUDO_KFUNC_CALL = 2
_CALL = 0x85  # BPF_JMP | BPF_CALL


class DirectReadsError(Exception):
    """The kernel would not take the rewritten program (its reason in the message)."""


@lru_cache(maxsize=None)
def _vmlinux_type(name: str, kind: int) -> int | None:
    try:
        return btf.type_id(btf.VMLINUX_BTF.read_bytes(), name, kind)
    except (OSError, btf.BTFError):
        return None


def struct_type_id(name: str) -> int:
    """The vmlinux BTF id of ``struct name`` (what bpf_rdonly_cast casts to)."""
    found = _vmlinux_type(name, btf.STRUCT)
    if found is None:
        raise DirectReadsError(f"struct {name} is not in the kernel's BTF")
    return found


def rewrite(insns: bytes) -> bytes:
    """``insns`` with each call of the stand-in turned into a call of bpf_rdonly_cast."""
    kfunc = _vmlinux_type("bpf_rdonly_cast", btf.FUNC)
    out = bytearray(insns)
    for pos in range(0, len(out), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", out, pos)
        if op == _CALL and imm == RDONLY_CAST_STANDIN and regs == 0:
            struct.pack_into("<BBhi", out, pos, op, BPF_PSEUDO_KFUNC_CALL << 4, 0, kfunc)
    return bytes(out)


def _load(insns: bytes, name: str) -> int:
    log = ct.create_string_buffer(bpf_syscall.LOG_SIZE)
    code = ct.create_string_buffer(insns, len(insns))
    license = ct.create_string_buffer(b"GPL")
    attr = bpf_syscall.ProgLoadAttr(prog_type=BPF_PROG_TYPE_RAW_TRACEPOINT, insn_cnt=len(insns) // 8,
                               insns=ct.addressof(code), license=ct.addressof(license),
                               prog_name=name.encode()[:15], log_level=1, log_size=bpf_syscall.LOG_SIZE,
                               log_buf=ct.addressof(log))
    try:
        return bpf_syscall.call(bpf_syscall.BPF_PROG_LOAD, attr)
    except OSError as e:
        last = " / ".join(log.value.decode(errors="replace").strip().splitlines()[-3:])
        raise DirectReadsError(f"the kernel refused {name} with direct reads: {e.strerror}"
                               + (f" ({last})" if last else "")) from None


def _open(prog_fd: int, tracepoint: str) -> int:
    name = ct.create_string_buffer(tracepoint.encode())
    try:
        return bpf_syscall.call(bpf_syscall.BPF_RAW_TRACEPOINT_OPEN,
                                bpf_syscall.RawTracepointOpenAttr(name=ct.addressof(name), prog_fd=prog_fd))
    except OSError as e:
        raise DirectReadsError(f"could not attach to the raw tracepoint {tracepoint}: {e.strerror}") from None


def attach_raw_tracepoint(bpf, tracepoint: str, fn_name: str) -> None:
    """Load BCC's compiled ``fn_name`` with its stand-in calls rewritten and attach it to the
    raw tracepoint, handed to BCC's bookkeeping: its detach_raw_tracepoint and cleanup close it."""
    from bcc import BPF  # present: the program was compiled with it

    prog_fd = _load(rewrite(bpf.dump_func(fn_name.encode())), fn_name)
    try:
        link_fd = _open(prog_fd, tracepoint)
    except DirectReadsError:
        os.close(prog_fd)
        raise
    key = fn_name.encode()
    bpf.funcs[key] = BPF.Function(bpf, key, prog_fd)
    bpf.raw_tracepoint_fds[tracepoint.encode()] = link_fd


@lru_cache(maxsize=None)
def unavailable() -> str | None:
    """Why this kernel cannot take direct reads in a raw tracepoint program, or None: a trial
    program that casts a pointer and loads through it."""
    if platform.machine() not in bpf_syscall.NR_BPF:
        return f"netsleuth does not load BPF itself on {platform.machine()}"
    if not btf.VMLINUX_BTF.exists():
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if _vmlinux_type("bpf_rdonly_cast", btf.FUNC) is None:
        return "the kernel has no bpf_rdonly_cast kfunc (6.2+)"
    try:
        skb = struct_type_id("sk_buff")
    except DirectReadsError as e:
        return str(e)

    def insn(op, dst=0, src=0, off=0, imm=0):
        return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
    trial = b"".join([
        insn(0x79, 1, 1, 0),                          # r1 = ctx->args[0]
        insn(0xB7, 2, 0, 0, skb),                     # r2 = struct sk_buff's BTF id
        insn(_CALL, 0, 0, 0, RDONLY_CAST_STANDIN),    # r0 = bpf_rdonly_cast(r1, r2)
        insn(0x79, 0, 0, 0),                          # r0 = *(u64 *)(r0 + 0)
        insn(0xB7, 0, 0, 0, 0), insn(0x95)])          # return 0
    try:
        os.close(_load(rewrite(trial), "ns_trial"))
    except DirectReadsError as e:
        return str(e)
    except OSError as e:
        return f"bpf() failed: {os.strerror(e.errno or errno.EINVAL)}"
    return None
