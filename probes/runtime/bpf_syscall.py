"""The bpf() system call, for the programs netsleuth loads itself (BCC compiles them):
trampolines (fentry.py) and raw tracepoint programs with direct reads (direct_reads.py).
The attribute layouts are those of include/uapi/linux/bpf.h."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import platform

NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD, BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 5, 11, 13, 15
BPF_RAW_TRACEPOINT_OPEN, BPF_BTF_GET_FD_BY_ID, BPF_BTF_GET_NEXT_ID = 17, 19, 23
LOG_SIZE = 1 << 16

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


class ProgLoadAttr(ct.Structure):
    """union bpf_attr for BPF_PROG_LOAD, up to attach_btf_obj_fd (include/uapi/linux/bpf.h)."""

    _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32), ("prog_flags", ct.c_uint32),
                ("prog_name", ct.c_char * 16), ("prog_ifindex", ct.c_uint32),
                ("expected_attach_type", ct.c_uint32), ("prog_btf_fd", ct.c_uint32),
                ("func_info_rec_size", ct.c_uint32), ("func_info", ct.c_uint64), ("func_info_cnt", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("line_info", ct.c_uint64), ("line_info_cnt", ct.c_uint32),
                ("attach_btf_id", ct.c_uint32), ("attach_btf_obj_fd", ct.c_uint32)]


class RawTracepointOpenAttr(ct.Structure):
    _fields_ = [("name", ct.c_uint64), ("prog_fd", ct.c_uint32)]


class IdAttr(ct.Structure):
    """BPF_*_GET_NEXT_ID (start_id, next_id) and BPF_*_GET_FD_BY_ID (the id)."""

    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


class InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class BtfInfo(ct.Structure):
    _fields_ = [("btf", ct.c_uint64), ("btf_size", ct.c_uint32), ("id", ct.c_uint32),
                ("name", ct.c_uint64), ("name_len", ct.c_uint32), ("kernel_btf", ct.c_uint32)]


class ProgInfo(ct.Structure):
    """struct bpf_prog_info up to its name."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8), ("jited_prog_len", ct.c_uint32),
                ("xlated_prog_len", ct.c_uint32), ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32), ("nr_map_ids", ct.c_uint32),
                ("map_ids", ct.c_uint64), ("name", ct.c_char * 16)]


def call(cmd: int, attr: ct.Structure) -> int:
    """bpf(cmd, attr): its result, or an OSError with the kernel's errno."""
    nr = NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"netsleuth does not call bpf() itself on {platform.machine()}")
    ret = _libc.syscall(nr, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        raise OSError(ct.get_errno(), os.strerror(ct.get_errno()))
    return ret
