"""Which probe instances the exporter runs: `--probes` parsed and validated, or the default."""

from __future__ import annotations

from dataclasses import dataclass

from probes.base import HOOK_ATTACH, Probe
from probes.registry import PROBES
from probes.runtime.kernel import KernelCaps
from probes.runtime.params import ParamError

from .series import SERIES

# Flags that make no sense for an always-on exporter (it reads at each scrape, forever).
NOT_FOR_EXPORTER = {"interval", "duration", "top"}
# Flags the exporter sets where the user does not: drop-summary keyed by drop location
# only (flows are never labels, and keying by flow fills the kernel table on a port scan).
# Every probe with --attach by kprobes: a trampoline on a module's function holds the module, so an
# always-on exporter would make an OVS upgrade's module reload fail (`attach=fentry` to choose it).
EXPORTER_DEFAULTS = {"drop-summary": {"group_by": "stack"},
                     **{name: {"attach": "kprobe"} for name, cls in PROBES.items() if HOOK_ATTACH in cls.flags}}
# Probes one instance of which follows one VM (an example of its flags): never started by default.
PER_VM = {"vm-latency-summary": "vm-interface=VNET:phy-interface=NIC:direction=rx",
          "tun-ring-monitor": "device=VNET"}
SYNTAX = "NAME[:flag=value...][,NAME...]"
NO_SERIES = "the exporter has no metrics for this probe yet"


@dataclass
class Spec:
    """One probe instance: its id (the `probe` label), the probe object, or why it cannot run."""

    id: str
    name: str
    probe: Probe | None = None
    down_reason: str | None = None


def exportable() -> dict[str, type[Probe]]:
    """The tier-1 probes (Summaries: counters and histograms, no event streams)."""
    return {n: c for n, c in PROBES.items() if c.tier == 1 and not c.streaming}


def _raw_flags(cls: type[Probe], pairs: list[str], entry: str) -> dict[str, str]:
    allowed = {f.dest: f for f in cls.flags if f.name not in NOT_FOR_EXPORTER}
    raw = dict(EXPORTER_DEFAULTS.get(cls.name, {}))
    for pair in pairs:
        name, sep, value = pair.partition("=")
        dest = name.replace("-", "_")
        if not sep or dest not in allowed:
            names = ", ".join(f.name for f in allowed.values())
            raise ParamError("--probes", entry, f"{cls.name}'s flags as flag=value ({names})")
        raw[dest] = value
    return raw


def parse(text: str, caps: KernelCaps) -> list[Spec]:
    """``drop-summary,system-latency-summary:phy-interface=ens11:direction=rx``: one Spec each.
    A bad name or flag raises ParamError (one line); a probe this host cannot run is a
    Spec with its reason, so it shows as down."""
    probes = exportable()
    specs: list[Spec] = []
    seen: set[tuple] = set()
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, *pairs = entry.split(":")
        cls = probes.get(name)
        if cls is None:
            raise ParamError("--probes", entry, f"{SYNTAX} with NAME one of {', '.join(sorted(probes))}")
        raw = _raw_flags(cls, pairs, entry)
        identity = (name,) + (SERIES[name].instance_key(raw) if name in SERIES else (entry,))
        if identity in seen:
            raise ParamError("--probes", entry, "each probe once (the latency Summaries once per "
                                                "direction and interface): their series would collide")
        seen.add(identity)
        specs.append(_spec(cls, entry, raw, caps))
    if not specs:
        raise ParamError("--probes", text, SYNTAX)
    return specs


def _spec(cls: type[Probe], entry: str, raw: dict, caps: KernelCaps) -> Spec:
    reason = cls.unavailable_reason(caps)
    if reason:
        return Spec(entry, cls.name, down_reason=reason)
    return Spec(entry, cls.name, probe=cls(caps, **raw))  # ParamError: a bad flag value


def _default_spec(cls: type[Probe], entry: str, raw: dict, caps: KernelCaps) -> Spec:
    """As _spec; a probe the exporter has no metrics for, or that needs flags no default
    gives, is listed down with why instead of stopping the exporter."""
    if cls.name not in SERIES:
        return Spec(entry, cls.name, down_reason=NO_SERIES)
    try:
        return _spec(cls, entry, raw, caps)
    except ParamError as e:
        return Spec(entry, cls.name, down_reason=f"not started by default: {e}")


def default(caps: KernelCaps, physical_interfaces) -> list[Spec]:
    """Every tier-1 probe this host can run: the latency Summaries on each physical NIC
    (``physical_interfaces()``: names, asked only where they can run) in both directions;
    the others as they are.  The VM Summary needs a VM: it is only listed, with why."""
    specs = []
    for name, cls in sorted(exportable().items()):
        reason = cls.unavailable_reason(caps)
        if name in PER_VM and not reason:
            reason = f"one instance per VM, not started by default: --probes {name}:{PER_VM[name]}"
        if reason:
            specs.append(Spec(name, name, down_reason=reason))
            continue
        if any(f.name == "phy-interface" for f in cls.flags):
            nics = physical_interfaces()
            if not nics:
                specs.append(Spec(name, name, down_reason="no physical interface found to follow"))
            for nic in nics:
                for direction in ("rx", "tx"):
                    entry = f"{name}:phy-interface={nic}:direction={direction}"
                    specs.append(_default_spec(cls, entry, {"phy_interface": nic, "direction": direction}, caps))
            continue
        specs.append(_default_spec(cls, name, dict(EXPORTER_DEFAULTS.get(name, {})), caps))
    return specs
