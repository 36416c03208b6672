"""The real app in a real terminal (tmux), driven with keys as a person would: pick packet
loss, run the Summary while the test makes real drops (UDP to a closed port on loopback),
watch the counts grow, stop, quit — and no BPF program of ours stays loaded."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time

import pytest

from tests.netenv import our_bpf_programs
from tests.tmux_term import Tmux, loaded, wait_gone
from wizard.session import read_journal

pytestmark = [
    pytest.mark.tmux, pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF (needs root)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]

SPORT, DPORT = 47998, 47999  # nothing listens on DPORT: every datagram is a NO_SOCKET drop


def start_summary(term: Tmux) -> None:
    """Keys a person presses: preflight → packet loss → no filters → the Summary → run."""
    term.wait_for("The Summary probes (tier 1) can run on this host.")
    term.keys("Enter")
    term.wait_for("Packet loss")
    term.keys("Enter")  # packet loss is the first symptom
    term.wait_for("what do you know?")
    term.keys("C-n")  # no filters: any flow, any interface
    term.wait_for("Do you know roughly where the packets are dropped?")
    term.keys("Enter")  # the recommended answer: the Summary
    term.wait_for("Run (Ctrl+R)")
    term.keys("C-r")
    term.wait_for("running", timeout=60)  # compiled and attached


def total_on(screen: str) -> int:
    m = re.search(r"total ([\d,]+)", screen)
    return int(m.group(1).replace(",", "")) if m else -1


def udp_flood(stop: threading.Event) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", SPORT))
    try:
        while not stop.is_set():
            s.sendto(b"netsleuth-tmux", ("127.0.0.1", DPORT))
            time.sleep(0.01)
    finally:
        s.close()


def test_real_app_in_tmux_shows_live_drops_and_detaches(tmp_path):
    sessions = tmp_path / "sessions"
    term = Tmux("exec .venv/bin/netsleuth", {"NETSLEUTH_SESSIONS": str(sessions)})
    stop = threading.Event()
    flood = threading.Thread(target=udp_flood, args=(stop,))
    try:
        pid = term.pid()
        start_summary(term)
        progs = our_bpf_programs(pid)
        assert progs and loaded(progs) == progs, "the Summary's BPF program is loaded while it runs"

        flood.start()
        first = total_on(term.wait_for(f"127.0.0.1:{DPORT}", timeout=20))
        time.sleep(3)
        screen = term.screen()
        second = total_on(screen)
        assert 0 < first < second, f"counts did not grow: {first} then {second}\n{screen}"
        assert "NO_SOCKET" in screen and f"127.0.0.1:{SPORT} -> 127.0.0.1:{DPORT} (UDP)" in screen

        term.keys("s")  # stop: findings of what was seen
        screen = term.wait_for("Findings", timeout=20)
        assert "Nothing listens on the destination port" in screen
        assert wait_gone(progs) == [], "the probe detached when the run ended (app still running)"
        assert our_bpf_programs(pid) == []

        term.keys("q")
        term.wait_for("Quit netsleuth?")
        term.keys("y")
        deadline = time.monotonic() + 60  # a loaded tmux server can take seconds to reap the app
        while term.exit_status() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert term.exit_status() == 0, f"the app did not exit cleanly: {term.exit_status()}\n{term.screen()}"
        assert "Traceback" not in term.screen() and "Error" not in term.screen()
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        stop.set()
        if flood.is_alive():
            flood.join()
        term.kill()
    assert our_bpf_programs(pid) == []
    journals = list(sessions.glob("*.jsonl"))
    assert len(journals) == 1
    _, events = read_journal(journals[0])
    assert [e["event"] for e in events][:3] == ["start", "answer", "result"]
    assert events[2]["status"] == "stopped" and events[2]["result"]["total"] >= second
    assert "resume with: netsleuth --resume" in events[-1]["text"]


def test_closing_the_terminal_during_a_run_detaches_and_saves(tmp_path):
    """SIGHUP (the terminal window closed, ssh dropped) while a probe runs."""
    sessions = tmp_path / "sessions"
    term = Tmux("exec .venv/bin/netsleuth", {"NETSLEUTH_SESSIONS": str(sessions)})
    try:
        pid = term.pid()
        start_summary(term)
        progs = our_bpf_programs(pid)
        assert progs
        term.hangup()
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{pid}"), "the app exited"
        assert loaded(progs) == []
    finally:
        term.kill()
    [journal] = sessions.glob("*.jsonl")
    _, events = read_journal(journal)
    assert events[-1]["text"].startswith("quit (signal SIGHUP); resume with: netsleuth --resume ")
    log = (sessions / "wizard.log").read_text()
    assert "shutting down: signal SIGHUP" in log and "Traceback" not in log
