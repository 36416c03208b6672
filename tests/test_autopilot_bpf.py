"""The autopilot end to end on the real kernel: a drop scenario in namespaces, real probes,
a report that names the right drop sites, flows, device and reasons."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.autopilot_scenario import CLOSED, DROPPED, PASSING, SPORT_DROPPED, diagnose_cmd, drop_scenario
from tests.netenv import ROOT, our_bpf_programs

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]


def prog_exists(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def run_watching_bpf(cmd: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, set[int]]:
    """Run the command, noting every BPF program it holds while it runs."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: set[int] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        held.update(our_bpf_programs(proc.pid))
        time.sleep(0.2)
    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), held


@pytest.fixture(autouse=True)
def no_leaked_programs():
    yield
    assert our_bpf_programs() == [], "a probe left BPF programs loaded"


def test_autopilot_finds_the_dropped_flows_and_prefills_details(tmp_path):
    with drop_scenario() as sc:
        env = sc.env
        sc.start_traffic(60)
        proc, held = run_watching_bpf(diagnose_cmd(env, tmp_path / "report", tmp_path / "sessions",
                                                   "--record", str(tmp_path / "run.jsonl.gz")))
        sent, received = sc.stop()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # The probes really ran in the kernel, and nothing they loaded outlives the process.
    assert held, "the autopilot never held a BPF program"
    assert not [p for p in held if prog_exists(p)], "BPF programs outlived the autopilot"
    # The flow that passes was received in full, so it cannot be in any drop entry.
    assert received == sent[2] > 0

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["conclusion"]["cause_found"] is True
    causes = {f["rule"]: f for f in report["findings"] if f["explains"]}
    assert set(causes) == {"reason-netfilter", "reason-no-socket"}

    nf = causes["reason-netfilter"]["evidence"]
    assert nf["reason"] == "NETFILTER_DROP" and nf["device"] == env.peer_if
    assert nf["location"].split("+")[0] in ("nf_hook_slow", "nft_do_chain")
    assert nf["flow"] == {"protocol": "udp", "src_ip": env.host_ip, "dst_ip": env.peer_ip,
                          "src_port": SPORT_DROPPED, "dst_port": DROPPED}
    ns = causes["reason-no-socket"]["evidence"]
    assert ns["reason"] == "NO_SOCKET" and ns["device"] == env.peer_if and ns["flow"]["dst_port"] == CLOSED
    assert ns["location"].startswith("__udp4_lib_rcv+")

    steps = [t for t in report["timeline"] if t["kind"] == "step"]
    summary, details = steps[0], steps[1]
    assert summary["probe"] == "drop-summary" and summary["status"] == "ok"
    assert "kfree_skb" in summary["attached"], summary["attached"]  # the probe's start line: how it hooked
    dropped_ports = {row[5].rsplit(":", 1)[1].split()[0] for row in summary["key_results"]["rows"]}
    assert str(PASSING) not in dropped_ports and {str(DROPPED), str(CLOSED)} <= dropped_ports
    # The Details step carries the dominant flow's filters, prefilled from the Summary's evidence.
    assert details["probe"] == "drop-details" and details["status"] == "ok"
    assert details["params"] == {"src-ip": env.host_ip, "dst-ip": env.peer_ip, "l4-protocol": "udp",
                                 "dst-port": DROPPED, "interface": env.peer_if}
    assert details["suggested_by"] == "reason-netfilter"
    for flag in (f"--src-ip {env.host_ip}", f"--dst-ip {env.peer_ip}", "--l4-protocol udp",
                 f"--dst-port {DROPPED}", f"--interface {env.peer_if}"):
        assert flag in details["command"]
    # ...and it captured exactly that flow's packets.
    assert details["key_results"]["counters"]["total"] > 0
    assert all(f"-> {env.peer_ip}:{DROPPED} (UDP)" in row[4] for row in details["key_results"]["rows"])

    md = (tmp_path / "report" / "report.md").read_text()
    assert f"`sudo netsleuth probe drop-summary --dst-ip {env.peer_ip} --l4-protocol udp --duration 3`" in md
    assert details["command"] in md
    assert f"- attached: {summary['attached']}" in md
    # What the probes produced was recorded for replay.
    assert (tmp_path / "run.jsonl.gz").stat().st_size > 0
