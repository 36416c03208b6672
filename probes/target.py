"""The process and threads a root-cause probe looks at (read from /proc)."""

from __future__ import annotations

import os
import re

from .runtime.stop import ProbeStopped
from .runtime.params import ParamError


def thread_name(tid: int) -> str | None:
    try:
        with open(f"/proc/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def tgid_of(tid: int) -> int:
    """The process a thread belongs to (0 when it is gone)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited: its threads and maps are gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")


def stop_if_gone(pid: int) -> None:
    """End the run (like Ctrl-C: the last report is still read) once the target exited."""
    if pid and not alive(pid):
        raise ProbeStopped(f"process {pid} exited")


def threads(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def check_threads_of(flag: str, tids: tuple[int, ...], pid: int) -> None:
    """Each thread of ``--tid`` must belong to ``--pid`` when both are given."""
    for tid in tids:
        if pid and not os.path.exists(f"/proc/{pid}/task/{tid}"):
            raise ParamError(flag, str(tid), f"a thread of process {pid} (see /proc/{pid}/task)")


_MAPS_LINE = re.compile(r"^\S+ \S+ \S+ \S+ (\d+)\s+(/\S.*)$")


def mapped_libraries(pid: int) -> list[tuple[str, int]]:
    """(path, inode) of the files ``pid`` maps, in map order, each once."""
    seen: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                m = _MAPS_LINE.match(line.rstrip("\n"))
                if m and m.group(1) != "0" and not m.group(2).endswith(" (deleted)"):
                    seen.setdefault(m.group(2), int(m.group(1)))
    except OSError:
        return []
    return list(seen.items())


def reachable_path(pid: int, path: str, inode: int) -> str:
    """``path`` as this process can open it: directly when it is the same file,
    else through the target's root (a container or another mount namespace)."""
    try:
        if os.stat(path).st_ino == inode:
            return path
    except OSError:
        pass
    return f"/proc/{pid}/root{path}"


def library_defining(pid: int, symbol: str, name_hints=("libpthread", "libc")) -> str | None:
    """The library mapped by ``pid`` that defines ``symbol`` (libpthread on glibc < 2.34,
    libc on newer ones), as a path this process can open; None when none does."""
    from bcc import BPF

    libs = mapped_libraries(pid)
    for hint in name_hints:
        for path, inode in libs:
            base = os.path.basename(path)
            if not (base.startswith(hint + ".") or base.startswith(hint + "-")):
                continue
            usable = reachable_path(pid, path, inode)
            try:
                found = BPF.get_user_functions_and_addresses(usable.encode(), f"^{symbol}$")
            except Exception:  # unreadable or not an ELF file
                continue
            if found:
                return usable
    return None


def filter_defines(d, pid: int, tids: tuple[int, ...]) -> None:
    """Constants of the thread filter (probes/netsleuth_threads.inc.c)."""
    d.set("NS_F_TGID", pid).set("NS_F_TIDS", bool(tids)).set("NS_SELF_TGID", os.getpid())
    d.set("NS_MAX_TIDS", max(1, len(tids)))


def fill_thread_filter(bpf, tids: tuple[int, ...]) -> None:
    """Put the ``--tid`` threads in the filter's map (after load, before attach)."""
    import ctypes as ct

    for tid in tids:
        bpf[b"tids"][ct.c_uint32(tid)] = ct.c_uint8(1)


def describe_filter(pid: int, tids: tuple[int, ...]) -> str:
    """Whom the thread filter lets through, in words."""
    who = f"process {pid}" if pid else "all processes"
    if tids:
        who += ", threads " + ",".join(map(str, tids))
    return who
