"""A clean path with a raw-socket pinger: every echo reply is answered, and the kernel frees
its own copy of each one (no ping socket wants it) with the drop reason NO_SOCKET.  The
packet-loss autopilot must count those frees apart as "not a loss" and claim no cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netenv import NETSLEUTH, ROOT, ns_pair

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]

# Pings from a raw ICMP socket (as `ping` does as root, and monitoring agents) every `gap`
# seconds until killed; prints how many it sent and how many were answered.
RAW_PINGER = """
import os, signal, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
dst, gap = sys.argv[1], float(sys.argv[2])
sent = got = 0
def done(*_):
    print(sent, got, flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, done)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1.0)
ident = os.getpid() & 0xffff
while True:
    sent += 1
    body = struct.pack("!BBHHH", 8, 0, 0, ident, sent & 0xffff) + b"netsleuth-raw-ping"
    s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (dst, 0))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            pkt = s.recv(2048)
        except socket.timeout:
            break
        ihl = (pkt[0] & 0xf) * 4
        kind, _, _, i, seq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
        if kind == 0 and i == ident and seq == sent & 0xffff:
            got += 1
            break
    time.sleep(gap)
"""


def test_raw_pinger_echo_replies_are_not_a_loss(tmp_path: Path):
    with ns_pair() as env:
        pinger = subprocess.Popen(["ip", "netns", "exec", env.a, sys.executable, "-c", RAW_PINGER, env.b_ip, "0.05"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            proc = subprocess.run(["ip", "netns", "exec", env.a, *NETSLEUTH, "diagnose", "--symptom", "packet-loss",
                                   "--device", env.a_if, "--autopilot", "--duration", "3",
                                   "--report", str(tmp_path / "report"), "--sessions", str(tmp_path / "s")],
                                  cwd=ROOT, capture_output=True, text=True, timeout=180)
        finally:
            pinger.terminate()
            sent, answered = map(int, pinger.communicate(timeout=10)[0].split())
    assert "Traceback" not in proc.stderr, proc.stderr
    # Ground truth: the pinger got every answer (the one in flight at the end aside).
    assert answered >= sent - 1 and answered > 20
    assert proc.returncode == 4, proc.stderr  # no cause found
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["conclusion"]["cause_found"] is False
    assert not [f for f in report["findings"] if f["explains"]]
    rules = [f["rule"] for f in report["findings"]]
    assert "reason-no-socket" not in rules and "normal-frees-apart" in rules, rules
    apart = next(f for f in report["findings"] if f["rule"] == "normal-frees-apart")
    result = apart["evidence"]
    # Counted apart, with the reason, and out of the drops the rules judge.
    assert result["total"] == 0 and "no-drops" in rules
    [row] = result["not_a_loss"]
    assert row["pattern"] == "echo-reply-no-socket" and row["reason"] == "NO_SOCKET"
    assert row["flow"]["src_ip"] == env.b_ip and row["flow"]["dst_ip"] == env.a_ip
    assert 0 < row["count"] == result["not_a_loss_total"] <= answered
    assert "raw-socket pinger" in apart["say"]
    summary = next(t for t in report["timeline"] if t["kind"] == "step" and t["probe"] == "drop-summary")
    assert summary["key_results"]["counters"]["not_a_loss"] == {"echo-reply-no-socket": row["count"]}
