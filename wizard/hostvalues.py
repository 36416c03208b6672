"""Values a step needs that the user did not give but this host knows (for the autopilot).

A symptom's playbook asks only for what its first steps need; the steps its
findings suggest in other playbooks may need more (system-latency-summary the
physical NIC, cpu-burst ovs-vswitchd's pid, the VM probes the VM's tap).  The
host knows these: the physical NIC behind the OVS bridge the traffic's route
leaves by (or that route's device), ovs-vswitchd's pid, the VM's tap from the
VM's address (its neighbour entry's MAC, which libvirt and QEMU give the tap
with the first byte fe).  What cannot be known is said, per field, so a step
that needs it is skipped with the reason (docs/autopilot.md).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from . import discovery
from .discovery import Inventory


@dataclass
class HostValues:
    values: dict = field(default_factory=dict)  # context field -> value found here
    how: dict = field(default_factory=dict)  # context field -> how it was found (one line)
    unknown: dict = field(default_factory=dict)  # context field -> why it could not be known


def _route_device(dst: str | None) -> tuple[str | None, str]:
    """The device the route to ``dst`` (else the default route) leaves by, and how it was found."""
    try:
        if dst:
            routes = discovery._ip_json(["route", "get", dst], None)
            where = f"the route to {dst}"
        else:
            routes = discovery._ip_json(["route", "show", "default"], None)
            where = "the default route"
    except (subprocess.SubprocessError, OSError, ValueError):
        return None, f"no route to {dst}" if dst else "no default route"
    dev = next((r.get("dev") for r in routes if r.get("dev")), None)
    return dev, where if dev else (f"no route to {dst}" if dst else "no default route")


def _physical_behind(inv: Inventory, dev: str) -> tuple[str | None, str]:
    """``dev`` itself, or the one physical port of the OVS or Linux bridge ``dev`` is."""
    iface = inv.interface(dev)
    if iface is not None and iface.kind == discovery.LOOPBACK:
        return None, "the destination is this host itself"
    ports: tuple[str, ...] = ()
    if inv.ovs and dev in inv.ovs.bridges:
        ports = inv.ovs.bridges[dev]
    elif iface is not None and iface.kind == discovery.OVS_INTERNAL and iface.ovs_bridge:
        ports = inv.ovs.bridges.get(iface.ovs_bridge, ()) if inv.ovs else ()
    elif iface is not None and iface.kind == discovery.BRIDGE:
        ports = tuple(i.name for i in inv.interfaces if i.master == dev)
    if not ports:
        return dev, ""
    phys = [p for p in ports if (inv.interface(p) or discovery.Interface(p, 0, "", False)).kind == discovery.PHYSICAL]
    if len(phys) == 1:
        return phys[0], f", the physical port of bridge {dev}"
    if not phys:
        return None, f"bridge {dev} has no physical port"
    return None, f"bridge {dev} has several physical ports ({', '.join(phys)})"


def _tap_of_address(inv: Inventory, ip: str) -> str | None:
    """The tap whose MAC is the VM's (the neighbour entry of ``ip``) with the first byte fe."""
    try:
        neigh = discovery._ip_json(["neigh", "show", "to", ip], None)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    mac = next((n.get("lladdr") for n in neigh if n.get("lladdr")), None)
    if not mac:
        return None
    tail = mac.lower().split(":", 1)[1]
    taps = [i.name for i in inv.by_kind(discovery.TAP) if i.mac and i.mac.lower().split(":", 1)[1] == tail]
    return taps[0] if len(taps) == 1 else None


def qemu_of_tap(inv: Inventory, tap: str) -> tuple[int | None, str]:
    """The pid of the QEMU holding ``tap`` (discovery's vnet -> VM map) and how it was found,
    else None and why not."""
    vm = next((v for v in inv.vms if tap in v.interfaces), None)
    if vm is None:
        return None, f"no QEMU process holds {tap}"
    return vm.pid, f"the QEMU process holding {tap} (VM {vm.name})"


def find_values(context: dict, inv: Inventory) -> HostValues:
    """phy_interface, ovs_pid, vm_interface and vm_pid, for those not in ``context``."""
    hv = HostValues()

    def found(name: str, value, how: str) -> None:
        if name not in context:
            hv.values[name], hv.how[name] = value, how

    dst = context.get("dst_ip")
    dev, where = _route_device(dst)
    if dev is None:
        hv.unknown["phy_interface"] = where
    else:
        phy, how = _physical_behind(inv, dev)
        if phy is None:
            hv.unknown["phy_interface"] = f"{where} leaves by {dev}, and {how}"
        else:
            found("phy_interface", phy, f"{where} leaves by {dev}{how}")

    pid = inv.ovs.vswitchd_pid if inv.ovs else None
    if pid:
        found("ovs_pid", pid, "the running ovs-vswitchd")
    else:
        hv.unknown["ovs_pid"] = "ovs-vswitchd is not running on this host"

    tap = context.get("vm_interface")
    for key in ("dst_ip", "src_ip"):
        if tap is None and context.get(key):
            tap = _tap_of_address(inv, context[key])
            if tap:
                found("vm_interface", tap, f"the tap whose MAC is the one of {context[key]} (its neighbour entry)")
    if tap is None:
        hv.unknown["vm_interface"] = ("no tap carries the MAC of " + " or ".join(
            context[k] for k in ("dst_ip", "src_ip") if context.get(k)) if context.get("dst_ip") or
            context.get("src_ip") else "no VM address given (--dst-ip or --src-ip) to find its tap by")
    pid, how = qemu_of_tap(inv, tap) if tap else (None, "the VM's tap is not known")
    if pid is not None:
        found("vm_pid", pid, how)
    else:
        hv.unknown["vm_pid"] = how
    hv.unknown = {k: v for k, v in hv.unknown.items() if k not in context}
    return hv


def discover_values(context: dict) -> HostValues:
    return find_values(context, discovery.discover(with_flows=False))
