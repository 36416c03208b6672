"""Whether what an attached probe follows is still there (docs/exporter.md, "Detached probes").

A probe stays loaded when its hooks go: a kernel module unloaded takes its kprobes with
it (and one loaded again does not get them back), a deleted device's ifindex never comes
back (a new device of that name gets another), an exited process's pid filters nothing.
``snapshot()`` notes them at attach; ``gone()`` says which one went, cheaply enough for
every read (a stat per module, an ifindex lookup per device, a read per process).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Namespace, ifindex_in

SYS_MODULE = Path("/sys/module")
PROC = Path("/proc")
# BCC names a kprobe's perf event "p_"/"r_" + the function, '.' and '+' made '_'.
_KPROBE_EVENT = re.compile(rb"^[pr]_(.+)$")


@dataclass(frozen=True)
class Device:
    flag: str
    name: str
    ifindex: int
    ns: Namespace | None


@dataclass
class Following:
    modules: dict[str, int] = field(default_factory=dict)  # module -> /sys/module/M's inode at attach
    devices: list[Device] = field(default_factory=list)
    processes: dict[int, str] = field(default_factory=dict)  # pid -> its start time (/proc/PID/stat)


def _module_inode(module: str) -> int | None:
    # kernfs numbers inodes cyclically: a module loaded again gets a new one.
    try:
        return os.stat(SYS_MODULE / module).st_ino
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime (comm may hold spaces)


def module_of_functions(functions: set[bytes], kallsyms: Path = Path("/proc/kallsyms")) -> dict[bytes, str]:
    """Function (as BCC names its kprobe event: '.' made '_') -> the module it is in; vmlinux's are left out."""
    out = {}
    if not functions:  # no kprobe: spare every probe start a read of the whole symbol table
        return out
    try:
        with open(kallsyms, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and parts[1] in (b"t", b"T", b"w", b"W"):
                    name = parts[2].replace(b".", b"_")
                    if name in functions:
                        out[name] = parts[3].strip(b"[]").decode()
    except OSError:
        pass
    return out


def kprobed_functions(bpf) -> set[bytes]:
    """The functions a BCC object holds kprobes and kretprobes on (their event names' tails)."""
    return {m.group(1) for ev in getattr(bpf, "kprobe_fds", {}) if (m := _KPROBE_EVENT.match(ev))}


def snapshot(bpf, devices: list[Device], pids: list[int]) -> Following:
    modules = {}
    for module in set(module_of_functions(kprobed_functions(bpf)).values()) if bpf is not None else ():
        inode = _module_inode(module)
        if inode is not None:
            modules[module] = inode
    return Following(modules, devices, {pid: start for pid in pids if (start := _start_time(pid)) is not None})


def gone(f: Following) -> str | None:
    """Why the probe no longer sees what it was attached to, or None."""
    for module, inode in sorted(f.modules.items()):
        now = _module_inode(module)
        if now is None:
            return f"kernel module {module} was unloaded: the probe's kprobes in it are gone"
        if now != inode:
            return (f"kernel module {module} was unloaded and loaded again: the probe's kprobes in it are "
                    "gone (restart the exporter to attach to the new one)")
    for d in f.devices:
        try:
            now = ifindex_in(d.ns, d.name) if d.ns is not None else socket.if_nametoindex(d.name)
        except OSError:
            return f"device {d.name} (--{d.flag}) was deleted"
        if now != d.ifindex:
            return (f"device {d.name} (--{d.flag}) was deleted and created again (ifindex {d.ifindex} -> {now}): "
                    "the probe follows the old one (restart the exporter to follow the new one)")
    for pid, start in sorted(f.processes.items()):
        if _start_time(pid) != start:
            return f"process {pid} (--pid) exited"
    return None

