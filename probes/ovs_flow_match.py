"""Which upcall a megaflow install answers (ovs-megaflow's user-space side; pure Python).

An install (FLOW_CMD_NEW) carries the flow key of the packet that missed,
unmasked, beside the mask ovs-vswitchd chose: a megaflow that wildcards the
addresses (usual with the NORMAL action) still names the packet's own
addresses in its key.  So an install answers the oldest waiting upcall whose
packet has the same value in every field both sides know (MACs, EtherType,
addresses, protocol, ports, ICMP type/code); none in common, no match.  The
mask is never used for matching: with it, one L2-only megaflow would
"answer" every upcall waiting, and the install latency would be measured
from the oldest unrelated one.

ovs-vswitchd answers an upcall with an install and then an execute of the
packet (in that order), with an install alone (a drop decision), or with an
execute alone (it believes the flow is installed already: a second packet of
a flow that missed while the first one was being answered, or a flow the
datapath lost behind its back).  So an execute also takes the oldest waiting
upcall of its flow, when no install took it first: otherwise that upcall
would wait on, and the next install of the same flow would be measured from
it.  Upcalls neither answers within WAIT_S are counted as unanswered and
dropped; installed flows are remembered (bounded) to flag upcalls that come
again after their megaflow was installed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

FIELDS = ("eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst", "ip_proto", "l4_src_port", "l4_dst_port",
          "icmp_type", "icmp_code")
_MAC_FIELDS = 2  # eth_src, eth_dst: every upcall and every Ethernet key has them
WAIT_S = 5.0  # an install later than this answers nothing waiting: the upcall is unanswered
MAX_WAITING = 65_536  # upcalls waiting for an install (beyond: the oldest count as unanswered)
MAX_INSTALLED = 65_536  # installed flows remembered to recognise repeated upcalls

FlowKey = tuple  # values of FIELDS, None where a side does not know the field


def flow_key(fields: dict) -> FlowKey:
    return tuple(fields.get(f) for f in FIELDS)


def flow_fields(key: FlowKey) -> dict:
    """The known fields of a key, for records."""
    return {f: v for f, v in zip(FIELDS, key) if v is not None}


def same_flow(a: FlowKey, b: FlowKey) -> bool:
    """Equal in every field both know, and at least one such field."""
    common = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return bool(common) and all(x == y for x, y in common)


@dataclass
class Interval:
    upcalls: int = 0
    installs: int = 0
    deletes: int = 0
    latencies_us: list = field(default_factory=list)
    executed_only: int = 0  # upcalls answered by an execute of their packet, without an install
    repeated: dict = field(default_factory=dict)  # flow key -> upcalls after its install
    unanswered: dict = field(default_factory=dict)  # flow key -> upcalls no install answered


class MegaflowTracker:
    def __init__(self, wait_s: float = WAIT_S, max_waiting: int = MAX_WAITING, max_installed: int = MAX_INSTALLED):
        self.wait_ns = int(wait_s * 1e9)
        self.max_waiting = max_waiting
        self.max_installed = max_installed
        self._waiting: dict[FlowKey, deque] = {}  # key -> deque of (upcall ktime, after install)
        self._by_macs: dict[tuple, set] = {}  # (eth_src, eth_dst) -> keys waiting
        self._order: deque = deque()  # (ktime, key) of every waiting upcall, oldest first
        self._n_waiting = 0
        self._installed: OrderedDict[FlowKey, str | None] = OrderedDict()  # key -> UFID, least recent first
        self._by_ufid: dict[str, FlowKey] = {}
        self.interval = Interval()

    # events --------------------------------------------------------------------
    def upcall(self, ts_ns: int, fields: dict) -> bool:
        """An upcall of a packet with ``fields``; True when its flow's megaflow was installed."""
        key = flow_key(fields)
        self.expire(ts_ns)
        after_install = key in self._installed
        self._waiting.setdefault(key, deque()).append((ts_ns, after_install))
        self._by_macs.setdefault(key[:_MAC_FIELDS], set()).add(key)
        self._order.append((ts_ns, key))
        self._n_waiting += 1
        self.interval.upcalls += 1
        if after_install:
            self.interval.repeated[key] = self.interval.repeated.get(key, 0) + 1
        # answered upcalls leave their place in _order behind until they age out: bound both
        while self._n_waiting > self.max_waiting or len(self._order) > 2 * self.max_waiting:
            self._expire_oldest()
        return after_install

    def install(self, ts_ns: int, fields: dict, ufid: str | None) -> tuple[float | None, dict | None]:
        """A FLOW_CMD_NEW with the key ``fields``: (install latency in µs from the oldest waiting
        upcall of that flow, that upcall's flow) or (None, None) when no upcall waits for it."""
        self.expire(ts_ns)
        key = flow_key(fields)
        self.interval.installs += 1
        self._remember(key, ufid)
        waited = self._take_oldest(key, ts_ns)
        if waited is None:
            return None, None
        upcall_ts, upcall_key = waited
        us = (ts_ns - upcall_ts) / 1000
        self.interval.latencies_us.append(us)
        return us, flow_fields(upcall_key)

    def executed(self, ts_ns: int, fields: dict) -> bool:
        """ovs-vswitchd sent a packet with ``fields`` back to be executed; True when that
        answered a waiting upcall (no install took it: the answer was the execute alone)."""
        self.expire(ts_ns)
        if self._take_oldest(flow_key(fields), ts_ns) is None:
            return False
        self.interval.executed_only += 1
        return True

    def delete(self, fields: dict, ufid: str | None) -> bool:
        """A FLOW_CMD_DEL (by UFID, or by key); True when it deletes a flow seen installed."""
        self.interval.deletes += 1
        key = self._by_ufid.pop(ufid, None) if ufid else None
        if key is None and fields:
            key = flow_key(fields)
        if key is None or key not in self._installed:
            return False
        old = self._installed.pop(key)
        if old and old != ufid:
            self._by_ufid.pop(old, None)
        return True

    def expire(self, now_ns: int) -> None:
        """Upcalls waiting longer than the wait limit are unanswered."""
        while self._order and self._order[0][0] < now_ns - self.wait_ns:
            self._expire_oldest()

    def take_interval(self) -> Interval:
        out, self.interval = self.interval, Interval()
        return out

    @property
    def waiting(self) -> int:
        return self._n_waiting

    # internals -----------------------------------------------------------------
    def _remember(self, key: FlowKey, ufid: str | None) -> None:
        old = self._installed.pop(key, None)
        if old:
            self._by_ufid.pop(old, None)
        self._installed[key] = ufid
        if ufid:
            self._by_ufid[ufid] = key
        while len(self._installed) > self.max_installed:
            _, dropped = self._installed.popitem(last=False)
            if dropped:
                self._by_ufid.pop(dropped, None)

    def _take_oldest(self, key: FlowKey, ts_ns: int) -> tuple[int, FlowKey] | None:
        """The oldest upcall waiting for this flow (same key, else same in every common field)."""
        candidates = [key] if key in self._waiting else [
            k for k in self._by_macs.get(key[:_MAC_FIELDS], ()) if same_flow(k, key)]
        if None in key[:_MAC_FIELDS]:  # a key without Ethernet addresses: look at everything
            candidates = candidates or [k for k in self._waiting if same_flow(k, key)]
        best = None
        for k in candidates:
            ts = self._waiting[k][0][0]
            if ts <= ts_ns and (best is None or ts < best[0]):
                best = (ts, k)
        if best is None:
            return None
        self._pop_front(best[1])
        return best

    def _pop_front(self, key: FlowKey) -> tuple[int, bool]:
        q = self._waiting[key]
        item = q.popleft()
        self._n_waiting -= 1
        if not q:
            del self._waiting[key]
            macs = self._by_macs.get(key[:_MAC_FIELDS])
            if macs is not None:
                macs.discard(key)
                if not macs:
                    del self._by_macs[key[:_MAC_FIELDS]]
        return item

    def _expire_oldest(self) -> None:
        ts, key = self._order.popleft()
        q = self._waiting.get(key)
        if not q or q[0][0] != ts:
            return  # answered meanwhile
        _, after_install = self._pop_front(key)
        if not after_install:  # an upcall after the install is counted as repeated instead
            self.interval.unanswered[key] = self.interval.unanswered.get(key, 0) + 1
