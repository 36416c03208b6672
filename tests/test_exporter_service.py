"""The systemd unit's capability set is enough: the exporter run as root's uid with
exactly the unit's CapabilityBoundingSet (setpriv) attaches drop-summary, symbolizes
drop locations and counts a real drop."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.netenv import ROOT, send_udp, veth_ns
from tests.promenv import Exporter, wait_until

UNIT = ROOT / "deploy/systemd/netsleuth-exporter.service"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")


def unit_capabilities() -> list[str]:
    (line,) = [x for x in UNIT.read_text().splitlines() if x.startswith("CapabilityBoundingSet=")]
    return line.split("=", 1)[1].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_unit_verifies_and_is_hardened(tmp_path):
    """systemd-analyze offline (no running systemd needed); ExecStart pointed at a binary that
    exists here, since verify checks it."""
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/netsleuth", shutil.which("true")))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True)
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))
    assert level <= 3.0, security.stdout  # 2.3 when written; a unit with ExecStart alone: 9.6


@pytest.mark.bpf
@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_the_units_capabilities_are_enough():
    caps = unit_capabilities()
    assert caps and "CAP_SYS_ADMIN" not in caps
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    setpriv = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--"]
    exp = Exporter("--probes", "drop-summary", wrapper=setpriv)
    try:
        exp.wait_probe("drop-summary")
        status = dict(line.split(":\t", 1) for line in open(f"/proc/{exp.proc.pid}/status").read().splitlines()
                      if line.startswith("Cap"))
        held = int(status["CapEff"], 16)
        assert held == sum(1 << {"CAP_BPF": 39, "CAP_PERFMON": 38, "CAP_SYSLOG": 34}[c] for c in caps)
        with veth_ns() as env:
            netns = os.stat(f"/run/netns/{env.ns}").st_ino
            send_udp(env.peer_ip, 9999, 3, ns=env.ns)
            line = (f'netsleuth_drops_total{{device="lo",location="__udp4_lib_rcv",netns="{netns}",'
                    f'reason="NO_SOCKET"}} 3.0')
            wait_until("the drops, symbolized", lambda: line in exp.metrics().splitlines(), 30)
    finally:
        exp.stop()
