"""Which processes a VM's devices belong to, from /proc: tap readers, vhost workers, KVM.

A tap's reader holds /dev/net/tun open with the device named in the fd's fdinfo
(`iff:`); QEMU with vhost=on also holds /dev/vhost-net, and its vhost worker is a
thread named `vhost-<QEMU pid>` (a kthread before 6.4, a thread of QEMU's group
since).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _fds(pid: int) -> list[tuple[str, str]]:
    """(fd number, link target) of a process's open files."""
    out = []
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                out.append((fd.name, os.readlink(fd)))
            except OSError:
                continue
    except OSError:
        pass
    return out


def tap_devices_of(pid: int) -> set[str]:
    """Tap/tun devices a process holds open (fdinfo of /dev/net/tun fds names them: `iff:`)."""
    names = set()
    for fd, target in _fds(pid):
        if target != "/dev/net/tun":
            continue
        try:
            for line in (PROC / str(pid) / "fdinfo" / fd).read_text().splitlines():
                if line.startswith("iff:"):
                    names.add(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def comm(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def vhost_workers(pid: int) -> list[int]:
    """Thread ids of the vhost workers serving process ``pid`` (its QEMU)."""
    name = f"vhost-{pid}"
    tids = set()
    for task in (PROC / str(pid) / "task").glob("*"):  # 6.4+: threads of QEMU's group
        if comm(int(task.name)) == name:
            tids.add(int(task.name))
    for proc in PROC.iterdir():  # before 6.4: kthreads
        if proc.name.isdigit() and comm(int(proc.name)) == name:
            tids.add(int(proc.name))
    return sorted(tids)


def is_kvm_process(pid: int) -> bool:
    """Does the process run a KVM guest (holds /dev/kvm or a VM's anon inode)?"""
    return any(t == "/dev/kvm" or t.startswith("anon_inode:kvm-vm") for _fd, t in _fds(pid))


def tap_readers(device: str) -> list[dict]:
    """Every process holding the tap open, with the vhost workers that read it for QEMU."""
    readers = []
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        if device not in tap_devices_of(pid):
            continue
        vhost = any(t == "/dev/vhost-net" for _fd, t in _fds(pid))
        readers.append({"pid": pid, "comm": comm(pid), "vhost_tids": vhost_workers(pid) if vhost else []})
    return readers
