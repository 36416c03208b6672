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
import shlex
import subprocess
from typing import Any

from playbooks.rules import Finding
from probes.runtime.netns import Namespace

NETFILTER_RULES = ("reason-netfilter", "site-netfilter")  # rules-drops.yaml: the firewall drops the flow
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


def known_fixes(findings: list[Finding]) -> list[str]:
    """Fixes read from this host for the causes found, most important first."""
    out: list[str] = []
    for f in findings:
        if f.rule in NETFILTER_RULES:
            out += [x for x in netfilter_fix(f) if x not in out]
    return out
