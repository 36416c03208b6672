"""Where the app's probes and host facts come from: this host (live) or a recording (replay).

The screens only talk to a backend (wizard.contracts.Backend): preflight facts,
discovered host inventory, whether a probe can run, the probe's flags, and a
*source* to pump (contracts.ProbeSource, e.g. a live probe).
"""

from __future__ import annotations

import os
from typing import Any

from playbooks.engine import NOT_IMPLEMENTED
from probes.base import Flag, Probe
from probes.registry import PROBES
from probes.runtime import params as P

from . import discovery
from .contracts import BackendDefaults
from .flagnames import dests
from .guestimport import GUEST_ONLY
from .replay import RecordedBackend


def flag_values(flags: tuple[Flag, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Playbook params (flag names, or dests) as the probe's options (dests), its flags only."""
    known = {f.dest for f in flags}
    return {k: v for k, v in dests(params).items() if k in known}


def namespaced(flags: tuple[Flag, ...], values: dict[str, Any]) -> dict[str, Any]:
    """An interface picked in another namespace (``name@ns``, discovery's Interface.choice) as
    the probe takes it: the name, and --netns when the probe has it."""
    ns_flag = next((f.dest for f in flags if f.kind == "netns"), None)
    out = dict(values)
    for f in flags:
        v = out.get(f.dest)
        if f.kind == "interface" and ns_flag and isinstance(v, str) and "@" in v:
            out[f.dest], out[ns_flag] = v.rsplit("@", 1)
    return out


class LiveBackend(BackendDefaults):
    """This host: real capabilities, real discovery, real probes."""

    mode = "live"

    def __init__(self, caps=None):
        from probes.runtime.kernel import detect

        self.caps = caps or detect()

    def describe(self) -> str:
        return f"live on {os.uname().nodename}"

    def host_facts(self) -> dict:
        from .report import host_facts

        return host_facts(self.caps)

    def preflight(self) -> dict:
        from probes.doctor import report

        return report(self.caps)

    def inventory(self) -> discovery.Inventory:
        return discovery.discover(all_namespaces=True)

    def known_fixes(self, causes: list) -> list[str]:
        """Fixes read from this host (the nftables rule that drops a flow...)."""
        from .fixes import known_fixes

        return known_fixes(causes)

    def validate(self, flag: Flag, value: Any) -> Any:
        """A form field: as the probe parses it, or an interface of another namespace (name@ns)."""
        from .contextvals import check_interface

        return check_interface(flag, value)

    def host_values(self, context: dict):
        """Values of context fields the user did not give that this host knows (hostvalues.py)."""
        from .hostvalues import discover_values

        return discover_values(context)

    def netns(self) -> int | None:
        try:
            return os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return None

    def probe_class(self, name: str) -> type[Probe] | None:
        return PROBES.get(name)

    def flags(self, name: str) -> tuple[Flag, ...]:
        cls = self.probe_class(name)
        return cls.flags if cls else ()

    def availability(self, name: str) -> str | None:
        cls = self.probe_class(name)
        if cls is None:
            return NOT_IMPLEMENTED
        if cls.runs_in_guest:  # here it would watch this host's own NICs, not the VM's
            return GUEST_ONLY
        return cls.unavailable_reason(self.caps)

    def build(self, name: str, values: dict[str, Any]) -> Probe:
        """A probe with validated options (ParamError on a bad value); not started.
        ``values`` may be keyed by flag name ("src-ip") or dest ("src_ip")."""
        cls = self.probe_class(name)
        if cls is None:
            raise KeyError(f"{name}: {NOT_IMPLEMENTED}")
        return cls(self.caps, **namespaced(cls.flags, flag_values(cls.flags, values)))

    def check(self, name: str, values: dict[str, Any]) -> None:
        """Validate a whole set of values the way the probe will (ParamError)."""
        self.build(name, values)

    def command_line(self, name: str, values: dict[str, Any]) -> str:
        return self.build(name, values).command_line()

    def source(self, name: str, values: dict[str, Any]) -> Probe:
        """What the live view pumps: here, the probe itself."""
        return self.build(name, values)


class ReplayBackend(RecordedBackend):
    """The app over a recording (``netsleuth replay FILE``): the recorded runs, plus what the
    screens ask a backend — preflight facts, pickers, validation that does not need the
    recorded host's interfaces or processes to exist here."""

    def preflight(self) -> dict:
        rec = self.recording
        runs = [{"probe": r.probe, "step": r.step, "status": r.status, "duration_s": r.duration_s,
                 "records": len(r.records)} for r in rec.runs]
        probes = {name: self.availability(name) for name in sorted(set(PROBES) | {r.probe for r in rec.runs})}
        return {"type": "replay", "path": rec.path, "host": rec.host, "symptom": rec.symptom,
                "context": rec.context, "runs": runs, "probes": probes, "tier1_ready": True}

    def inventory(self) -> discovery.Inventory:
        """The recorded host as far as the recording tells: the interfaces its records name."""
        names: list[str] = []
        for r in self.recording.runs:
            for _, rec in r.records:
                for e in [rec] + list(rec.get("entries") or []):
                    dev = e.get("device") if isinstance(e, dict) else None
                    if dev and dev not in names:
                        names.append(dev)
        for key in ("device", "phy_interface", "vm_interface"):
            dev = self.recording.context.get(key)
            if dev and dev not in names:
                names.append(dev)
        host = self.recording.host
        ifaces = [discovery.Interface(n, 0, "recorded", True) for n in names]
        return discovery.Inventory(host.get("hostname", "?"), host.get("kernel", "?"), ifaces, [], None, [],
                                   notes=[f"replaying {self.recording.path}: interfaces are those the recording names"])

    def validate(self, flag: Flag, value: Any) -> Any:
        """Like Flag.parse, except that interfaces and processes of the recorded host need not exist here."""
        if flag.kind == "interface" and value not in (None, ""):
            if not P.IFNAME_RE.match(str(value).strip()):
                P.interface("--" + flag.name, value)  # raises the usual message
            return value
        if flag.kind == "netns" and value not in (None, ""):
            return value  # a namespace of the recorded host
        if flag.kind in ("pid", "tids") and value not in (None, ""):
            text = str(value).replace(",", " ").split()
            if not text or not all(t.isdigit() for t in text):
                raise P.ParamError("--" + flag.name, value, "process/thread ids (numbers)")
            return value
        return flag.parse(value)

    def check(self, name: str, values: dict[str, Any]) -> None:
        for f in self.flags(name):
            self.validate(f, values.get(f.dest, values.get(f.name)))
