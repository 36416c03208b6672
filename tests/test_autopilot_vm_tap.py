"""The VM symptom on the real kernel: a tap whose reader does not read (a VM that stopped
taking packets) drops at its full ring; `--symptom vm-network` must look at the tap's drops
before it calls the path healthy, and name the ring (exit 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netenv import NETSLEUTH, ROOT, TAP, send_udp, sh, tun_in_namespace

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]

ADDR, PEER, PEER_MAC = "10.253.88.1", "10.253.88.2", "02:00:00:00:88:02"

# Sends UDP to the VM side of the tap at a steady pace until killed; prints how many it sent.
_SENDER = """
import signal, socket, sys, time
sent = 0
def done(*_):
    print(sent, flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, done)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    s.sendto(b"for-the-vm", (sys.argv[1], 9088)); sent += 1
    time.sleep(0.005)
"""


def tx_dropped(ns: str, dev: str) -> int:
    return int(sh("cat", f"/sys/class/net/{dev}/statistics/tx_dropped", ns=ns).stdout)


def test_vm_symptom_counts_the_drops_on_a_tap_nobody_reads(tmp_path: Path):
    with tun_in_namespace(ADDR, TAP) as (ns, tap, _fd):
        sh("ip", "neigh", "add", PEER, "lladdr", PEER_MAC, "dev", tap, ns=ns)
        send_udp(PEER, 9088, 1100, ns=ns)  # fills the tap's ring (txqueuelen 1000): from here on it drops
        before = tx_dropped(ns, tap)
        assert before > 0
        sender = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER, PEER],
                                  stdout=subprocess.PIPE, text=True)
        try:
            proc = subprocess.run(["ip", "netns", "exec", ns, *NETSLEUTH, "diagnose", "--symptom", "vm-network",
                                   "--vm-interface", tap, "--autopilot", "--duration", "3", "--max-steps", "2",
                                   "--report", str(tmp_path / "report"), "--sessions", str(tmp_path / "s")],
                                  cwd=ROOT, capture_output=True, text=True, timeout=180)
        finally:
            sender.terminate()
            sender.communicate(timeout=10)
        dropped = tx_dropped(ns, tap) - before
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    steps = [t for t in report["timeline"] if t["kind"] == "step"]
    # The walk starts at the VM's tap: its drops need no kprobe.
    assert steps[0]["probe"] == "tun-ring-monitor" and steps[0]["status"] == "ok"
    assert steps[0]["params"]["device"] == tap
    causes = [f for f in report["findings"] if f["explains"]]
    assert causes and causes[0]["rule"] == "tun-ring-overflow", [f["rule"] for f in report["findings"]]
    ev = causes[0]["evidence"]
    assert ev["device"] == tap and ev["queue"] == 0
    # Every drop the probe counted is one the tap counted too (the run is inside the bracket).
    assert 0 < ev["total_full_ring_drops"] <= dropped
    assert report["conclusion"]["cause_found"] is True
