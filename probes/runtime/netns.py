"""Network namespaces: the one netsleuth runs in, and the others by name or by a process.

Interface names and ifindexes mean something only inside their namespace, so
device filters carry a namespace inode along, and every record that names a
device in another namespace names that namespace the way a person reaches it:
its name from `ip netns` (``/run/netns/NAME``), else a process that holds it
(``nsenter -t PID -n``).  See docs/output-drops.md ("namespace").
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from vocab.netns import RUN_NETNS, Namespace

PROC = Path("/proc")
CLONE_NEWNET = 0x40000000
PID_MAX_LIMIT = 4 * 1024 * 1024  # the highest pid a kernel gives; namespace inodes are larger
REFRESH_S = 1.0  # a namespace unknown to the cache is looked up at most this often


def current_netns() -> int:
    """Inode of this process's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino


def named() -> dict[int, str]:
    """inode -> name of the namespaces `ip netns` knows (the first name by sort order)."""
    out: dict[int, str] = {}
    try:
        entries = sorted(RUN_NETNS.iterdir())
    except OSError:
        return out
    for p in entries:
        try:
            out.setdefault(os.stat(p).st_ino, p.name)
        except OSError:
            continue
    return out


def holders() -> dict[int, tuple[int, str]]:
    """inode -> (lowest pid, its name) of a process in each namespace."""
    out: dict[int, tuple[int, str]] = {}
    for p in PROC.iterdir():
        if not p.name.isdigit():
            continue
        try:
            ino = os.stat(p / "ns" / "net").st_ino
        except OSError:
            continue
        pid = int(p.name)
        if ino not in out or pid < out[ino][0]:
            try:
                comm = (p / "comm").read_text().strip()
            except OSError:
                comm = ""
            out[ino] = (pid, comm)
    return out


def namespaces() -> list[Namespace]:
    """Every network namespace that has a name or a process, this one first, then by name/pid."""
    names, procs = named(), holders()
    own = current_netns()
    out = []
    for ino in set(names) | set(procs):
        pid, comm = procs.get(ino, (None, None))
        out.append(Namespace(ino, names.get(ino), pid, comm or None))
    return sorted(out, key=lambda n: (n.inode != own, n.name is None, n.name or "", n.pid or 0))


_cache: dict[int, Namespace] = {}
_cache_lock = threading.Lock()
_refreshed = 0.0


def _still(ns: Namespace) -> bool:
    """Does the name or process the cache gave this namespace still lead to it?"""
    try:
        return os.stat(ns.path).st_ino == ns.inode if (ns.name or ns.pid) else True
    except OSError:
        return False


def describe(inode: int | None) -> Namespace | None:
    """The namespace of this inode, or None when it is netsleuth's own (or 0/unknown)."""
    global _refreshed
    if not inode or inode == current_netns():
        return None
    with _cache_lock:
        if inode in _cache and not _still(_cache[inode]):  # an inode reused by a new namespace
            del _cache[inode]
        if inode not in _cache and time.monotonic() - _refreshed >= REFRESH_S:
            _refreshed = time.monotonic()
            _cache.clear()
            _cache.update({n.inode: n for n in namespaces()})
        if inode not in _cache and inode in (names := named()):  # cheap: /run/netns only
            _cache[inode] = Namespace(inode, names[inode])
        return _cache.get(inode) or Namespace(inode)


def ns_dict(inode: int | None) -> dict | None:
    """A record's "namespace" field: the device's namespace when it is not netsleuth's own."""
    ns = describe(inode)
    return ns.to_dict() if ns is not None else None


def resolve(ref: str | int) -> Namespace:
    """A namespace from a name of `ip netns`, a process id or an inode (ValueError when none)."""
    text = str(ref).strip()
    if text and (RUN_NETNS / text).exists() and "/" not in text and text not in (".", ".."):
        return Namespace(os.stat(RUN_NETNS / text).st_ino, name=text)
    if text.isdigit() and int(text) > PID_MAX_LIMIT:  # an inode, as the drop records give it
        found = describe(int(text))
        if found is None:
            return Namespace(current_netns())
        if not (found.name or found.pid):
            raise ValueError(f"no namespace with inode {text} has a name or a process")
        return found
    if text.isdigit():
        pid = int(text)
        try:
            ino = os.stat(PROC / text / "ns" / "net").st_ino
        except OSError:
            raise ValueError(f"no process {pid}") from None
        try:
            comm = (PROC / text / "comm").read_text().strip() or None
        except OSError:
            comm = None
        return Namespace(ino, named().get(ino), pid, comm)
    raise ValueError(f"no namespace {text!r} in `ip netns list`")


def run_in(ns: Namespace, fn: Callable[[], Any]) -> Any:
    """fn() run by a thread that has entered the namespace (setns only moves that thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(ns.path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns.path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=body, name="netsleuth-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def ifindex_in(ns: Namespace, name: str) -> int:
    """The ifindex of interface ``name`` inside ``ns`` (OSError when it has none)."""
    return run_in(ns, lambda: socket.if_nametoindex(name))
