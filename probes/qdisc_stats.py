"""A device's queueing disciplines and their statistics, read over rtnetlink (what
`tc -s qdisc show` reads), in the device's own network namespace.

pyroute2 rather than `tc -s -j`: one netlink socket opened once and asked every
sample (no process per sample, no parsing of a tool's output that changes between
iproute2 releases), and it enters a named namespace itself.  docs/output-qdisc.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from .runtime.netns import Namespace, current_netns
from .runtime.params import ParamError

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
COUNTERS = ("drops", "overlimits", "requeues")


def handle_text(handle: int) -> str:
    """tc's spelling of a handle: ``8001:`` (minor 0), ``1:10``."""
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:" if not minor else f"{major:x}:{minor:x}"


def parent_text(parent: int) -> str:
    if parent == TC_H_ROOT:
        return "root"
    if parent == TC_H_INGRESS:
        return "ingress"
    return handle_text(parent)


@dataclass
class QdiscSample:
    handle: int
    parent: int
    kind: str
    drops: int
    overlimits: int
    requeues: int
    backlog: int  # bytes queued now
    qlen: int  # packets queued now
    options: dict = field(default_factory=dict)

    @property
    def id(self) -> tuple[int, int]:
        """What tells a device's qdiscs apart: the children of mq all have handle 0."""
        return self.handle, self.parent

    @property
    def tc_target(self) -> str:
        """How tc names this qdisc on its device: ``root handle 5:``, ``parent 1:10 handle 10:``."""
        where = parent_text(self.parent)
        where = where if where in ("root", "ingress") else f"parent {where}"
        return f"{where} handle {handle_text(self.handle)}" if self.handle else where


@lru_cache(maxsize=1)
def _ticks_per_us() -> float:
    """psched ticks per microsecond (/proc/net/psched: t2us, us2t), to turn tbf's buffer into bytes."""
    try:
        t2us, us2t = (int(x, 16) for x in open("/proc/net/psched").read().split()[:2])
        return t2us / us2t
    except (OSError, ValueError):
        return 1.0


def _options(kind: str, opts) -> dict:
    """The settings the advice needs: limits, a tbf's rate and burst, codel's target."""
    if opts is None:
        return {}
    if kind == "tbf":
        p = opts.get_attr("TCA_TBF_PARMS") or {}
        rate = opts.get_attr("TCA_TBF_RATE64") or p.get("rate", 0)  # bytes/s
        burst = round(p.get("buffer", 0) / _ticks_per_us() * rate / 1e6) if rate else None
        return {"limit": p.get("limit"), "limit_unit": "bytes", "rate_bit": rate * 8, "burst": burst}
    if kind in ("pfifo", "bfifo", "pfifo_head_drop"):
        limit = opts.get("limit") if isinstance(opts, dict) else None
        return {"limit": limit, "limit_unit": "bytes" if kind == "bfifo" else "packets"}
    if kind in ("fq_codel", "codel"):
        prefix = "TCA_FQ_CODEL_" if kind == "fq_codel" else "TCA_CODEL_"
        return {"limit": opts.get_attr(prefix + "LIMIT"), "limit_unit": "packets",
                "target_us": opts.get_attr(prefix + "TARGET"), "interval_us": opts.get_attr(prefix + "INTERVAL")}
    return {}


def _ipr(ns: Namespace | None):
    from pyroute2 import IPRoute  # imported late: `netsleuth --help` must work without it
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return IPRoute(netns=ns.path) if ns else IPRoute()
    except (OSError, NetlinkError) as e:
        raise ParamError("--netns", ns.label if ns else None, f"a namespace netsleuth can enter ({e})") from None


def find_device(device: str, ns: Namespace | None) -> tuple[int, int]:
    """(ifindex, namespace inode) of ``device`` in namespace ``ns`` (None: ours); ParamError
    naming the flag when it is not there."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        try:
            found = ipr.link_lookup(ifname=device)
        except NetlinkError:
            found = []
    if not found:
        where = f"namespace {ns.label} (see `{ns.enter} ip link`)" if ns else \
            "this namespace (see `ip link`; a device in another namespace needs --netns)"
        raise ParamError("--device", device, f"an interface of {where}")
    return found[0], ns.inode if ns else current_netns()


class QdiscReader:
    """The qdiscs of the device ``ifindex`` in namespace ``ns`` (None: ours), over one
    netlink socket kept open until close()."""

    def __init__(self, ifindex: int, ns: Namespace | None):
        self.ifindex = ifindex
        self._ipr = _ipr(ns)

    def sample(self) -> list[QdiscSample]:
        out = []
        for msg in self._ipr.get_qdiscs(index=self.ifindex):
            stats = msg.get_attr("TCA_STATS2")
            queue = (stats.get_attr("TCA_STATS_QUEUE") if stats else None) or {}
            kind = msg.get_attr("TCA_KIND") or "?"
            out.append(QdiscSample(handle=msg["handle"], parent=msg["parent"], kind=kind,
                                   drops=queue.get("drops", 0), overlimits=queue.get("overlimits", 0),
                                   requeues=queue.get("requeues", 0), backlog=queue.get("backlog", 0),
                                   qlen=queue.get("qlen", 0), options=_options(kind, msg.get_attr("TCA_OPTIONS"))))
        return out

    def close(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            ipr.close()
