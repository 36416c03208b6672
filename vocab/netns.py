"""A network namespace as records name it (inode, `ip netns` name, a process inside)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_NETNS = Path("/run/netns")


@dataclass(frozen=True)
class Namespace:
    inode: int
    name: str | None = None  # from `ip netns`
    pid: int | None = None  # a process inside it (used when it has no name)
    comm: str | None = None

    @property
    def label(self) -> str:
        """How a person names it: "ux2", or "pid 4242 (dnsmasq)"."""
        if self.name:
            return self.name
        if self.pid:
            return f"pid {self.pid}" + (f" ({self.comm})" if self.comm else "")
        return f"inode {self.inode}"

    @property
    def ref(self) -> str:
        """What --netns takes to come back to it: the name, or the holder's pid."""
        return self.name or str(self.pid or "")

    @property
    def enter(self) -> str:
        """The command prefix that runs a command inside it."""
        if self.name:
            return f"ip netns exec {self.name}"
        if self.pid:
            return f"nsenter -t {self.pid} -n"
        return ""

    @property
    def path(self) -> str:
        return str(RUN_NETNS / self.name) if self.name else f"/proc/{self.pid}/ns/net"

    def to_dict(self) -> dict:
        return {"inode": self.inode, "name": self.name, "pid": self.pid, "comm": self.comm,
                "label": self.label, "enter": self.enter, "ref": self.ref or None}

    @classmethod
    def from_dict(cls, d: dict) -> "Namespace":
        return cls(int(d.get("inode") or 0), d.get("name"), d.get("pid"), d.get("comm"))
