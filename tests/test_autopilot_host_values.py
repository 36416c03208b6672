"""Values a suggested step needs that nobody gave: the autopilot takes them from this host
(the route's device, the VM's tap from its address), and a step whose value the host
cannot supply is skipped with the reason, exit 4 ("no cause found"), never 1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from playbooks import load_library
from probes.registry import PROBES
from tests.netenv import ROOT, TAP, ns_pair, sh, tun_in_namespace
from wizard.autopilot import EXIT_NO_CAUSE, run_autopilot
from wizard.backends import LiveBackend
from wizard.discovery import find_process

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

_VALUES = ("import json, sys; from wizard.hostvalues import discover_values; "
           "hv = discover_values(json.loads(sys.argv[1])); print(json.dumps(hv.__dict__))")


def values_in(ns: str, context: dict) -> dict:
    out = sh(sys.executable, "-c", _VALUES, json.dumps(context), ns=ns, cwd=ROOT).stdout
    return json.loads(out)


@root
def test_the_route_to_the_destination_names_the_interface():
    with ns_pair() as env:
        hv = values_in(env.a, {"dst_ip": env.b_ip})
    assert hv["values"]["phy_interface"] == env.a_if
    assert f"the route to {env.b_ip} leaves by {env.a_if}" in hv["how"]["phy_interface"]
    if find_process("ovs-vswitchd") is None:
        assert hv["unknown"]["ovs_pid"] == "ovs-vswitchd is not running on this host"
    with ns_pair() as env:
        local = values_in(env.a, {"dst_ip": env.a_ip})
    assert local["unknown"]["phy_interface"] == (f"the route to {env.a_ip} leaves by lo, "
                                                 "and the destination is this host itself")


@root
def test_the_vms_tap_from_its_address():
    vm_ip, vm_mac, tap_mac = "10.253.87.2", "52:54:00:12:34:56", "fe:54:00:12:34:56"
    with tun_in_namespace("10.253.87.1", TAP) as (ns, tap, _fd):
        sh("ip", "link", "set", tap, "address", tap_mac, ns=ns)
        sh("ip", "neigh", "replace", vm_ip, "lladdr", vm_mac, "dev", tap, ns=ns)
        hv = values_in(ns, {"dst_ip": vm_ip})
        told = values_in(ns, {"dst_ip": vm_ip, "vm_interface": tap})
        nobody = values_in(ns, {"dst_ip": "10.253.87.3"})
    assert hv["values"]["vm_interface"] == tap and vm_ip in hv["how"]["vm_interface"]
    assert "vm_interface" not in told["values"] and "vm_interface" not in told["unknown"]
    assert "vm_interface" not in nobody["values"]
    assert nobody["unknown"]["vm_interface"] == "no tap carries the MAC of 10.253.87.3"


@root
@pytest.mark.skipif(find_process("ovs-vswitchd") is not None, reason="ovs-vswitchd runs here: its pid is known")
def test_a_step_whose_value_this_host_lacks_is_skipped_with_the_reason(tmp_path: Path):
    lines: list[str] = []
    result = run_autopilot(load_library(probes=PROBES), LiveBackend(), "ovs-slow", {}, str(tmp_path / "report"),
                           sessions=str(tmp_path / "s"), start="ovs-slow/cpu-burst", log=lines.append)
    assert result.exit_code == EXIT_NO_CAUSE and result.statuses == ["skipped"]
    why = "--pid is required: the process to watch (ovs_pid: ovs-vswitchd is not running on this host)"
    assert f"  skipped: {why}" in lines
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    [step] = [t for t in report["timeline"] if t["kind"] == "step"]
    assert step["probe"] == "cpu-burst" and step["status"] == "skipped" and why in step["error"]
    assert report["conclusion"]["cause_found"] is False


def test_the_exit_codes_are_documented_alike():
    from wizard.autopilot import EXIT_CODES_HELP, __doc__ as module_doc

    doc = (ROOT / "docs" / "autopilot.md").read_text()
    for code in range(6):
        assert f"| {code} |" in doc and f"  {code}  " in module_doc and f"{code} " in EXIT_CODES_HELP
    assert "skipped" in doc and "skipped" in EXIT_CODES_HELP
