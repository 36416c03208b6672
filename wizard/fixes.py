"""Fixes that can be known on this host, beyond the playbooks' look-up advice.

A finding says *that* the firewall drops a flow; the rule that does it is in
the ruleset of the drop's namespace.  Here netsleuth reads that ruleset
(``nft -a -j list ruleset``, through the namespace's ``ip netns exec`` /
``nsenter`` prefix) and names the rule, its handle and the command that removes
it.  Only on the live host: a replay's rules are those of another machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
from typing import Any

from playbooks.rules import Finding
from probes.runtime.netns import Namespace, holders

NETFILTER_RULES = ("reason-netfilter", "site-netfilter")  # rules-drops.yaml: the firewall drops the flow
NO_LISTENER_RULES = ("reason-no-socket", "site-udp-rcv", "site-tcp-rcv")  # nothing listens on the port
VERDICTS = ("drop", "reject")
# nft payload (protocol, field) -> the flow dict's key
FLOW_FIELDS = {("ip", "saddr"): "src_ip", ("ip", "daddr"): "dst_ip", ("tcp", "sport"): "src_port",
               ("tcp", "dport"): "dst_port", ("udp", "sport"): "src_port", ("udp", "dport"): "dst_port"}


def _matches(value: Any, right: Any) -> bool | None:
    """Does a flow value satisfy an nft ``==`` operand?  None when the operand is not understood."""
    if isinstance(right, (int, str)) and not isinstance(right, bool):
        if isinstance(value, int) or str(right).isdigit():
            return str(value) == str(right)
        try:
            return ipaddress.ip_address(str(value)) in ipaddress.ip_network(str(right), strict=False)
        except ValueError:
            return None
    if isinstance(right, dict) and "prefix" in right:
        p = right["prefix"]
        try:
            return ipaddress.ip_address(str(value)) in ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
        except (ValueError, KeyError, TypeError):
            return None
    if isinstance(right, dict) and "set" in right:
        results = [_matches(value, r) for r in right["set"]]
        return True if True in results else None if None in results else False
    return None


def rule_fits(rule: dict, flow: dict) -> bool:
    """A drop/reject rule whose flow matches all agree with the flow (and there is at least one)."""
    exprs = rule.get("expr") or []
    if not any(isinstance(e, dict) and any(v in e for v in VERDICTS) for e in exprs):
        return False
    proto, hits = flow.get("protocol"), 0
    for e in exprs:
        m = e.get("match") if isinstance(e, dict) else None
        if m is None:
            continue
        payload = (m.get("left") or {}).get("payload") if isinstance(m.get("left"), dict) else None
        key = FLOW_FIELDS.get((payload.get("protocol"), payload.get("field"))) if payload else None
        if key is None or m.get("op") not in ("==", "in"):
            return False  # a condition netsleuth cannot check against the flow: not named as the one
        if payload["protocol"] in ("tcp", "udp") and payload["protocol"] != proto:
            return False
        if _matches(flow.get(key), m.get("right")) is not True:
            return False
        hits += 1
    return hits > 0


def _ruleset(enter: str) -> list[dict]:
    out = subprocess.run(shlex.split(enter) + ["nft", "-a", "-j", "list", "ruleset"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return [item["rule"] for item in json.loads(out or "{}").get("nftables", []) if "rule" in item]


def _rule_text(enter: str, rule: dict) -> str | None:
    """The rule as `nft list` prints it (without its handle comment)."""
    try:
        out = subprocess.run(shlex.split(enter) + ["nft", "-a", "list", "chain", rule["family"], rule["table"],
                                                   rule["chain"]], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    tag = f"# handle {rule['handle']}"
    return next((line.strip()[: -len(tag)].strip() for line in out.splitlines() if line.strip().endswith(tag)), None)


def netfilter_fix(f: Finding) -> list[str]:
    flow = f.evidence.get("flow")
    if not isinstance(flow, dict):
        return []
    ns = Namespace.from_dict(f.evidence["namespace"]) if isinstance(f.evidence.get("namespace"), dict) else None
    enter = ns.enter if ns else ""
    try:
        rules = [r for r in _ruleset(enter) if rule_fits(r, flow)]
    except (subprocess.SubprocessError, OSError, ValueError):
        return []  # no nft, or not readable: the look-up advice stays
    prefix = f"{enter} " if enter else ""
    where = f" in namespace {ns.label}" if ns else ""
    out = []
    for r in rules:
        text = _rule_text(enter, r)
        out.append(f"Remove the nftables rule that drops it{where}"
                   + (f" (`{text}`, handle {r['handle']})" if text else f" (handle {r['handle']})")
                   + f": `{prefix}nft delete rule {r['family']} {r['table']} {r['chain']} handle {r['handle']}`"
                   " — if the rule is wanted, fix the sender instead.")
    return out


def _systemd_socket_unit(port: int) -> str | None:
    """The systemd socket unit that listens on this port when started (socket activation)."""
    try:
        out = subprocess.run(["systemctl", "list-sockets", "--all", "--no-legend", "--plain"], capture_output=True,
                             text=True, timeout=10).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].rsplit(":", 1)[-1] == str(port):
            return parts[1]
    return None


def no_listener_fix(f: Finding) -> list[str]:
    """What listens on the flow's port where it was dropped: another address or protocol (the
    fix is the service's address), or nothing (start the service; its socket unit if any)."""
    from .discovery import proc_net_sockets  # the namespace's own /proc/PID/net

    flow = f.evidence.get("flow")
    if not isinstance(flow, dict) or not flow.get("dst_port") or flow.get("protocol") not in ("tcp", "udp"):
        return []
    ns = Namespace.from_dict(f.evidence["namespace"]) if isinstance(f.evidence.get("namespace"), dict) else None
    pid = (ns.pid or next((p for ino, (p, _) in holders().items() if ino == ns.inode), None)) if ns else os.getpid()
    if pid is None:
        return []
    port, proto, dst = flow["dst_port"], flow["protocol"], flow.get("dst_ip")
    where = f" in namespace {ns.label}" if ns else ""
    prefix = f"{ns.enter} " if ns and ns.enter else ""
    check = f"`{prefix}ss -ln{proto[0]}p 'sport = :{port}'`"
    on_port = [s for s in proc_net_sockets(pid) if s[2] == port and (s[0] == "udp" or s[5] == "LISTEN")]
    same = [s for s in on_port if s[0] == proto]
    if same and dst and all(s[1] not in ("0.0.0.0", dst) for s in same):
        addrs = ", ".join(sorted({s[1] for s in same}))
        return [f"The service on {proto.upper()} port {port}{where} listens on {addrs} only, and the packets go to "
                f"{dst}: make it listen on {dst} (or 0.0.0.0), or send to {addrs}. Check: {check}."]
    if not same and on_port:
        other = on_port[0][0].upper()
        return [f"Something listens on {other} port {port}{where}, but these packets are {proto.upper()}: fix the "
                f"client's protocol or the service's. Check: {check}."]
    if same:
        return []  # a listener appeared since: the drops stopped or it is another address family
    unit = None if ns else _systemd_socket_unit(port)
    start = f"start it: `systemctl start {unit}`" if unit else "start the service that should receive it"
    return [f"Nothing listens on {proto.upper()} port {port}{where} (read from its /proc/{pid}/net/{proto}): {start}; "
            f"then {check} lists it."]


def known_fixes(findings: list[Finding]) -> list[str]:
    """Fixes read from this host for the causes found, most important first."""
    out: list[str] = []
    for f in findings:
        fixes = netfilter_fix(f) if f.rule in NETFILTER_RULES else no_listener_fix(f) \
            if f.rule in NO_LISTENER_RULES else []
        out += [x for x in fixes if x not in out]
    return out
