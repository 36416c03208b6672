"""Attaching a compiled program to a kernel function's entry through a BPF trampoline (fentry).

BCC compiles the program; it is loaded here with the bpf() syscall because Debian 12's bcc
(0.26) finds fentry targets in vmlinux's BTF only, and the per-packet functions (OVS, tun,
vhost, kvm) are in modules: a module's function is named by its BTF object's fd
(``attach_btf_obj_fd``, 5.11+).  Why and what it costs: docs/bpf.md#trampolines.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .bpf_syscall import (BPF_BTF_GET_FD_BY_ID, BPF_BTF_GET_NEXT_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_GET_FD_BY_ID,
                          BPF_PROG_GET_NEXT_ID, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN, LOG_SIZE, NR_BPF, BtfInfo,
                          IdAttr, InfoAttr, ProgInfo, ProgLoadAttr, RawTracepointOpenAttr)
from .bpf_syscall import call as _bpf
from .btf import VMLINUX_BTF, BTFError, function_type, string_section, type_count, type_header
from .kernel import kernel_version, module_functions

BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, BPF_TRACE_FEXIT = 26, 24, 25
ENOTSUPP = 524  # the kernel's own errno: the trampoline cannot take the function
MIN_KERNEL = (5, 11)  # trampolines came in 5.5; on module functions (attach_btf_obj_fd) in 5.11


class TrampolineError(Exception):
    """The kernel refused a trampoline on a function; the message says why.  ``everywhere``:
    it would refuse any (a policy, EPERM as root), so trying the other hooks is no use."""

    def __init__(self, message: str, everywhere: bool = False):
        super().__init__(message)
        self.everywhere = everywhere


@dataclass(frozen=True)
class Target:
    """Where a function's BTF lives: its type id in its BTF object ("vmlinux" or a module), and
    how many arguments it takes (an fexit program finds the return value after them)."""

    function: str
    btf_id: int
    btf_object: str
    arity: int


def why_no_trampolines(release: str | None = None) -> str | None:
    """Why this kernel cannot take any trampoline at all, or None."""
    release = release or platform.release()
    if platform.machine() not in NR_BPF:
        return f"BPF trampolines are not used on {platform.machine()} by netsleuth"
    if kernel_version(release) < MIN_KERNEL:
        return (f"kernel {release} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}: no BPF trampolines "
                "on module functions")
    if not VMLINUX_BTF.exists():
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux): fentry needs it"
    return None


def module_of(function: str) -> str | None:
    """The module a function is in ("openvswitch"), None for vmlinux's."""
    return module_functions().get(function)


@lru_cache(maxsize=None)
def _btf_of(obj: str) -> tuple[bytes, bytes, int]:
    """(a BTF object's blob, the strings and type count its ids continue: vmlinux's for a module)."""
    vmlinux = VMLINUX_BTF.read_bytes()
    if obj == "vmlinux":
        return vmlinux, b"", 0
    return (VMLINUX_BTF.parent / obj).read_bytes(), string_section(vmlinux), type_count(vmlinux)


def target(function: str) -> Target:
    """The BTF description of ``function``, or a TrampolineError saying why there is none."""
    obj = module_of(function) or "vmlinux"
    if obj != "vmlinux" and not (VMLINUX_BTF.parent / obj).exists():
        raise TrampolineError(f"module {obj} has no BTF (/sys/kernel/btf/{obj})")
    try:
        blob, base_strings, id_base = _btf_of(obj)
        found = function_type(blob, function, base_strings, id_base)
        if found is None:
            raise TrampolineError(f"{function} is not in the BTF of {obj} (inlined or static)")
        proto = type_header(blob, found, id_base)[2]
        in_blob = proto > id_base  # a module's prototype may be one of vmlinux's
        arity = type_header(blob if in_blob else _btf_of("vmlinux")[0], proto, id_base if in_blob else 0)[1]
    except (OSError, BTFError) as e:
        raise TrampolineError(f"cannot read the BTF of {obj}: {e}") from None
    return Target(function, found, obj, arity)


def return_slot(function: str) -> int:
    """Where an fexit program on ``function`` finds its return value: after its arguments,
    64 bits each.  0 where it has no BTF (then it takes no trampoline: a kretprobe runs)."""
    try:
        return target(function).arity
    except TrampolineError:
        return 0


def _objects(next_cmd: int, fd_cmd: int, new_info: Callable[[], ct.Structure]):
    """Each kernel object of a kind (BTF objects, programs), as (fd, a ``new_info()`` the kernel
    filled in); the fd is closed when the caller asks for the next one.  Objects freed meanwhile
    are skipped."""
    next_id = 0
    while True:
        ids = IdAttr(id=next_id)
        try:
            _bpf(next_cmd, ids)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return  # the last one
            raise TrampolineError(f"cannot list the kernel's BPF objects: {e.strerror}") from None
        next_id = ids.next_id
        try:
            fd = _bpf(fd_cmd, IdAttr(id=next_id))
        except OSError:
            continue
        info = new_info()
        try:
            _bpf(BPF_OBJ_GET_INFO_BY_FD, InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=ct.addressof(info)))
            yield fd, info
        except OSError:
            pass
        finally:
            os.close(fd)


def _btf_object_fd(name: str) -> int:
    """An fd of its own for the kernel's BTF object called ``name`` (a module's)."""
    buf = ct.create_string_buffer(64)
    for fd, info in _objects(BPF_BTF_GET_NEXT_ID, BPF_BTF_GET_FD_BY_ID,
                             lambda: BtfInfo(name=ct.addressof(buf), name_len=len(buf))):
        if info.kernel_btf and buf.value.decode() == name:
            return os.dup(fd)
    raise TrampolineError(f"the kernel lists no BTF object for module {name}")


def _load(insns: bytes, name: str, tgt: Target, at_return: bool = False) -> int:
    """Load ``insns`` as a trampoline program for ``tgt``'s entry (or return); its fd.  A refusal
    says the kernel's reason (the verifier's last lines when it was the verifier)."""
    way = "fexit" if at_return else "fentry"
    obj_fd = _btf_object_fd(tgt.btf_object) if tgt.btf_object != "vmlinux" else 0
    log = ct.create_string_buffer(LOG_SIZE)
    code = ct.create_string_buffer(insns, len(insns))
    license = ct.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=len(insns) // 8, insns=ct.addressof(code),
                        license=ct.addressof(license), prog_name=name.encode()[:15],
                        expected_attach_type=BPF_TRACE_FEXIT if at_return else BPF_TRACE_FENTRY, attach_btf_id=tgt.btf_id, attach_btf_obj_fd=obj_fd)
    try:
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as first:
            if first.errno != errno.EACCES:  # EACCES is the verifier's: run again for its reason
                raise TrampolineError(f"the kernel refused an {way} program on {tgt.function}: "
                                      f"{first.strerror}", everywhere=first.errno == errno.EPERM) from None
        attr.log_level, attr.log_size, attr.log_buf = 1, LOG_SIZE, ct.addressof(log)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError:
            last = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise TrampolineError(f"the verifier refused the {way} program on {tgt.function}: "
                                  + " / ".join(last)) from None
    finally:
        if obj_fd:
            os.close(obj_fd)


def load_and_attach(insns: bytes, name: str, tgt: Target, at_return: bool = False) -> tuple[int, int]:
    """Load ``insns`` (BCC's compiled program, its maps' fds in place) on ``tgt``'s entry (or
    return) and attach it; (program fd, link fd).  Closing the link fd detaches it."""
    prog_fd = _load(insns, name, tgt, at_return)
    try:
        return prog_fd, attach(prog_fd, tgt.function)
    except TrampolineError:
        os.close(prog_fd)
        raise


def attach(prog_fd: int, function: str) -> int:
    """Attach a loaded trampoline program (to the function it was loaded for); the link's fd."""
    try:
        return _bpf(BPF_RAW_TRACEPOINT_OPEN, RawTracepointOpenAttr(name=0, prog_fd=prog_fd))
    except OSError as e:
        why = ("the trampoline cannot take this function (x86 before 6.5: at most 6 arguments)"
               if e.errno == ENOTSUPP else e.strerror)
        raise TrampolineError(f"could not attach a trampoline to {function}: {why}") from None


TRIAL_FUNCTION = "ip_rcv"  # any vmlinux function with BTF; loading alone attaches nothing
_RETURN_0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


def trial() -> str | None:
    """Why this kernel takes no trampoline program (a policy, no BTF, too old), or None when it
    takes one: a two-instruction program is loaded for TRIAL_FUNCTION and freed, never attached."""
    why = why_no_trampolines()
    if why:
        return why
    try:
        os.close(_load(_RETURN_0, "netsleuth_trial", target(TRIAL_FUNCTION)))
    except TrampolineError as e:
        return str(e)
    return None


def trampoline_programs() -> list[str]:
    """The names of the trampoline (tracing) programs loaded in the kernel now: after a probe
    detached, none of its own may be left (what kprobe_events shows for kprobes)."""
    return [info.name.decode(errors="replace")
            for _, info in _objects(BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, ProgInfo)
            if info.type == BPF_PROG_TYPE_TRACING]
