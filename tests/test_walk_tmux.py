"""The junior's walk in a real terminal (tmux, 80x24 and 100x30), with keys: a real fault
inside a namespace (an nftables rule dropping one UDP flow, a closed port; 200 packets/s
each) is named with its namespace from the live table to the next step's filters; and a
step this kernel cannot run (no kprobes) offers what can, with no dead Run button."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from probes.runtime.kernel import detect
from tests.autopilot_scenario import CLOSED, DROPPED, drop_scenario
from tests.netenv import our_bpf_programs
from tests.tmux_term import ended
from tests.test_wizard_tmux import Tmux, wait_gone

pytestmark = [
    pytest.mark.tmux, pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF (needs root)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]
SIZES = [(80, 24), (100, 30)]


def words(screen: str) -> str:
    """The screen's words on one line, without the findings' left bar and scrollbars."""
    return " ".join(screen.translate({ord(c): " " for c in "█▁▂▃▄▅▆▇▉▊▋▌▍▎▏"}).split())


def to_context(term: Tmux, symptom_downs: int = 0) -> None:
    term.wait_for("The Summary probes (tier 1) can run on this host.")
    term.keys("Enter")
    term.wait_for("Packet loss")
    for _ in range(symptom_downs):
        term.keys("Down")
        time.sleep(0.3)
    term.keys("Enter")
    term.wait_for("what do you know?")
    time.sleep(1)


def typing_goes_to_a_field(screen: str) -> bool:
    """The footer hides the screen's letter keys (n = New diagnosis) while a text field has the focus."""
    return "New diagnosis" not in screen.rstrip().splitlines()[-1]


def focus_report_dir_emptied(term: Tmux) -> None:
    """Tab from the conclusion's text to the report directory (the only field), then empty it.
    A Tab pressed before the screen has focused its text is undone by that focus, and the typed
    path would reach the screen's keys: the test waits for the footer to say the field has it."""
    for _ in range(3):
        term.keys("Tab")
        deadline = time.monotonic() + 5
        while not typing_goes_to_a_field(term.screen()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if typing_goes_to_a_field(term.screen()):
            break
    else:
        raise AssertionError(f"the report directory never got the focus:\n{term.screen()}")
    term.keys("C-u")
    # the field is the line above the footer: empty once Ctrl+U has reached it
    deadline = time.monotonic() + 10
    while "/" in term.screen().rstrip().splitlines()[-2]:
        assert time.monotonic() < deadline, f"the report directory was not emptied:\n{term.screen()}"
        time.sleep(0.1)


def quit_app(term: Tmux, sessions) -> None:
    pid = term.pid()
    term.keys("C-q")  # also from a text field
    term.wait_for("Quit netsleuth?")
    term.keys("y")
    deadline = time.monotonic() + 20
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ended(pid), "the app did not exit"
    while term.exit_status() is None and time.monotonic() < deadline + 10:  # tmux reaps it, then says
        time.sleep(0.1)
    assert term.exit_status() == 0, term.screen()
    log = (sessions / "wizard.log").read_text()
    assert "shutting down: user quit" in log and "unexpected error" not in log and "Traceback" not in log


@pytest.mark.parametrize("width, height", SIZES)
def test_a_fault_in_a_namespace_is_named_from_the_live_table_to_the_next_step(tmp_path, width, height):
    with drop_scenario() as sc:
        env = sc.env
        sc.start_traffic(120, per_tick=(10, 10, 2))
        term = Tmux("exec .venv/bin/netsleuth", {"NETSLEUTH_SESSIONS": str(tmp_path)}, width, height)
        try:
            pid = term.pid()
            to_context(term)
            for _ in range(2):  # past the connection picker and the source address
                term.keys("Tab")
                time.sleep(0.7)
            term.keys(env.peer_ip)
            term.wait_for(env.peer_ip)
            term.keys("C-n")
            term.wait_for("Do you know roughly where the packets are dropped?")
            term.keys("Enter")
            term.wait_for("Run (Ctrl+R)")
            term.keys("C-r")
            live = term.wait_for(f"{env.peer_if}@{env.ns}", timeout=60)  # the table's Interface column
            progs = our_bpf_programs(pid)
            assert "NETFILTER_DROP" in live or "NO_SOCKET" in live
            time.sleep(3)
            term.keys("s")
            findings = words(term.wait_for("Findings", timeout=20))
            # The headline names the namespace; its advice is written for it.
            assert f"in namespace {env.ns}" in findings
            assert f"`ip netns exec {env.ns}" in findings
            assert wait_gone(progs) == []
            term.keys("Enter")  # the next steps: Details of the flow, in its namespace
            nxt = words(term.wait_for("cost: medium", timeout=20))  # the highlighted step's filters
            assert f"netns={env.ns}, interface={env.peer_if}" in nxt
            assert f"dst-port={DROPPED}" in nxt or f"dst-port={CLOSED}" in nxt
            # The conclusion, and the report written where the person types.
            term.keys("c")
            conclusion = words(term.wait_for("Write report", timeout=20))
            assert "Cause found." in conclusion and f"in namespace {env.ns}" in conclusion
            reports = tmp_path / "incident reports"
            focus_report_dir_emptied(term)
            term.keys("-l", str(reports))
            term.wait_for("incident reports")
            term.keys("Enter")
            term.wait_for("Report written", timeout=20)
            md = (reports / "report.md").read_text()
            assert f"nft delete rule inet nsltest input handle" in md and f"ip netns exec {env.ns}" in md
            assert re.search(r"\(\d+\.\d/s\)", md)  # counts said with their rate
            quit_app(term, tmp_path)
        finally:
            term.kill()
    assert our_bpf_programs(pid) == []


@pytest.mark.skipif(os.geteuid() == 0 and detect().kprobes, reason="this host has kprobes")
@pytest.mark.parametrize("width, height", SIZES)
def test_a_step_that_needs_kprobes_offers_what_can_run(tmp_path, width, height):
    term = Tmux("exec .venv/bin/netsleuth", {"NETSLEUTH_SESSIONS": str(tmp_path)}, width, height)
    try:
        to_context(term, symptom_downs=1)  # High latency
        term.keys("C-n")
        term.wait_for("Do you know which stage of the path is slow?")
        term.keys("Enter")
        term.wait_for("the host's own, or a VM's?")
        term.keys("Enter")
        screen = term.wait_for("Cannot run on this host")
        flat = words(screen)
        assert "needs kprobes" in flat and "What it would add:" in flat
        assert "Instead, what can run here" in flat and "Instead: drop-summary (Ctrl+R)" in flat
        assert "Run (Ctrl+R)" not in flat and "marked in red" not in flat  # no dead button, no red form
        term.keys("C-r")
        step = words(term.wait_for("Next step: Where does the kernel drop packets?"))
        assert "Run (Ctrl+R)" in step
        quit_app(term, tmp_path)
    finally:
        term.kill()


@pytest.mark.parametrize("width, height", SIZES)
def test_the_guide_opens_from_the_symptom_screen_and_the_help(tmp_path, width, height):
    term = Tmux("exec .venv/bin/netsleuth", {"NETSLEUTH_SESSIONS": str(tmp_path)}, width, height)
    try:
        term.wait_for("The Summary probes (tier 1) can run on this host.")
        term.keys("Enter")
        assert "g The guide" in words(term.wait_for("The guide"))  # the footer says so
        term.keys("g")
        term.wait_for("Three tiers, from cheap and coarse")
        term.keys("Escape")
        deadline = time.monotonic() + 10  # the guide closes (the symptoms show behind it all along)
        while "Three tiers" in term.screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        term.keys("F1")
        shown = words(term.wait_for("The method"))  # the symptom list shows beside the dialog
        assert "The method behind the wizard" in shown and "docs/guide.md" in shown
        term.keys("g")
        term.wait_for("Three tiers, from cheap and coarse")
        term.keys("Escape", "Escape")
        term.wait_for("Packet loss")
        quit_app(term, tmp_path)
    finally:
        term.kill()
