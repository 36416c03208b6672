"""Typed, validated probe parameters.

User input never reaches BPF C text: every value is parsed here into an int
and rendered as a ``-D`` numeric constant by :class:`CDefines`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct

from .netns import Namespace, ifindex_in, resolve


class ParamError(ValueError):
    """A flag's value is not acceptable.  The message names the flag and the accepted form."""

    def __init__(self, flag: str, value: object, accepted: str):
        self.flag, self.value, self.accepted = flag, value, accepted
        super().__init__(f"{flag}: {value!r} is not valid; expected {accepted}")


PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def ipv4(flag: str, value: str | None) -> int:
    """IPv4 address as the u32 a little-endian load of the packet bytes gives (0 = any)."""
    if value in (None, ""):
        return 0
    try:
        addr = ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise ParamError(flag, value, "an IPv4 address such as 10.0.0.1") from None
    if int(addr) == 0:
        raise ParamError(flag, value, "a non-zero IPv4 address (omit the flag to match any)")
    return struct.unpack("<I", addr.packed)[0]


def ipv4_text(value: int) -> str:
    return str(ipaddress.IPv4Address(struct.pack("<I", value)))


MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def mac(flag: str, value: str | None) -> str | None:
    """Ethernet address, normalised to lower case (None = any)."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not MAC_RE.match(text):
        raise ParamError(flag, value, "an Ethernet address such as 52:54:00:12:34:56")
    return text.lower()


def port(flag: str, value: str | int | None) -> int:
    if value in (None, ""):
        return 0
    try:
        n = int(str(value).strip(), 10)
    except ValueError:
        raise ParamError(flag, value, "a port number 1-65535") from None
    if not 1 <= n <= 65535:
        raise ParamError(flag, value, "a port number 1-65535")
    return n


def protocol(flag: str, value: str | None, allowed=("tcp", "udp", "icmp", "all")) -> int:
    """IP protocol number (0 = all)."""
    if value in (None, ""):
        return 0
    name = str(value).strip().lower()
    if name not in allowed:
        raise ParamError(flag, value, "one of " + ", ".join(allowed))
    return PROTOCOLS.get(name, 0)


def choice(flag: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    if value in (None, ""):
        return default
    name = str(value).strip().lower()
    if name not in allowed:
        raise ParamError(flag, value, "one of " + ", ".join(allowed))
    return name


def interface(flag: str, value: str | None, ns: "Namespace | None" = None) -> int:
    """Interface name -> ifindex in this network namespace, or in ``ns`` (0 = any)."""
    name = ifname(flag, value)
    if name is None:
        return 0
    try:
        return ifindex_in(ns, name) if ns is not None else socket.if_nametoindex(name)
    except OSError:
        where = f"`{ns.enter} ip link`" if ns is not None else "`ip link`; in another namespace also give --netns"
        raise ParamError(flag, value, f"an existing interface (see {where})") from None


def netns(flag: str, value: str | int | None) -> "Namespace | None":
    """A network namespace by its name in `ip netns`, or by a process id inside it (None = ours)."""
    if value in (None, ""):
        return None
    try:
        return resolve(value)
    except ValueError:
        raise ParamError(flag, value, "a network namespace: a name from `ip netns list`, the id of a "
                                      "process inside it, or its inode as the drop probes report it") from None


def ifname(flag: str, value: str | None) -> str | None:
    """An interface name, checked for form only: it may live in another namespace (None = any)."""
    if value in (None, ""):
        return None
    name = str(value).strip()
    if not IFNAME_RE.match(name):
        raise ParamError(flag, value, "an interface name (1-15 letters, digits, '_', '.', '-', ':', '@')")
    return name


def integer(flag: str, value: str | int | float | None, lo: int, hi: int, default: int | None = None,
            what: str = "an integer") -> int:
    if value in (None, ""):
        if default is None:
            raise ParamError(flag, value, f"{what} between {lo} and {hi}")
        return default
    try:
        n = int(str(value).strip(), 10)
    except ValueError:
        raise ParamError(flag, value, f"{what} between {lo} and {hi}") from None
    if not lo <= n <= hi:
        raise ParamError(flag, value, f"{what} between {lo} and {hi}")
    return n


def seconds(flag: str, value: str | float | None, lo: float, hi: float, default: float | None) -> float | None:
    if value in (None, ""):
        return default
    try:
        x = float(str(value).strip())
    except ValueError:
        raise ParamError(flag, value, f"a number of seconds between {lo:g} and {hi:g}") from None
    if not lo <= x <= hi or x != x:
        raise ParamError(flag, value, f"a number of seconds between {lo:g} and {hi:g}")
    return x


def pid(flag: str, value: str | int | None, must_exist: bool = True) -> int:
    if value in (None, ""):
        return 0
    n = integer(flag, value, 1, 4194304, what="a process id")
    if must_exist and not os.path.exists(f"/proc/{n}"):
        raise ParamError(flag, value, "the id of a running process")
    return n


def thread_ids(flag: str, value, pid_of: int = 0) -> tuple[int, ...]:
    """Thread ids from "12,34", a list of such strings (a repeated flag) or ints; () = any.

    With ``pid_of`` every thread must belong to that process."""
    if value in (None, "", [], ()):
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    tids: list[int] = []
    for item in items:
        for part in str(item).split(","):
            if not part.strip():
                raise ParamError(flag, value, "thread ids separated by commas, such as 1234,1240")
            tid = integer(flag, part, 1, 4194304, what="a thread id")
            # /proc/<tid> resolves for any thread, though only processes are listed.
            if not os.path.exists(f"/proc/{tid}"):
                raise ParamError(flag, part.strip(), "the id of a running thread")
            if pid_of and not os.path.exists(f"/proc/{pid_of}/task/{tid}"):
                raise ParamError(flag, part.strip(), f"a thread of process {pid_of} (see /proc/{pid_of}/task)")
            if tid not in tids:
                tids.append(tid)
    return tuple(tids)


def vlan(flag: str, value: str | int | None) -> int:
    """VLAN id 0-4094, 0 being a priority tag (-1: no filter); 4095 is reserved."""
    if value in (None, ""):
        return -1
    return integer(flag, value, 0, 4094, what="a VLAN id")


_DEFINE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class CDefines:
    """Numeric constants for BPF C, emitted as ``-DNAME=123`` compiler flags."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def set(self, name: str, value: int | bool) -> "CDefines":
        if not _DEFINE_RE.match(name):
            raise ValueError(f"bad C constant name {name!r}")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise TypeError(f"C constant {name} must be an int, got {type(value).__name__}")
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"C constant {name} out of range")
        self._values[name] = value
        return self

    def cflags(self) -> list[str]:
        out = []
        for name, value in self._values.items():
            suffix = "ULL" if value >= 0 else "LL"
            out.append(f"-D{name}={value}{suffix}")
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def items(self):
        return self._values.items()
