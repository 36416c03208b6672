"""The app as a trainee meets it: `netsleuth replay` in a real terminal (tmux), driven with keys
at 80x24 and 100x30 (no root, no BPF).  Forms speak in words, not flags; errors go away when
fixed; the flow is never cut in a table; a Details step without a filter says so; the
conclusion scrolls at once; and every shipped recording walks from the symptom screen to its
conclusion."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests.tmux_term import Tmux
from wizard.replay import Recording

pytestmark = [pytest.mark.tmux,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]

RECORDINGS = sorted((Path(__file__).parent / "data" / "recordings").glob("*.jsonl.gz"))
NETFILTER = Path(__file__).parent / "data" / "recordings" / "packet-loss-netfilter.jsonl.gz"
FLOWS = ("10.253.2.1:41999 -> 10.253.2.2:9999 (UDP)", "10.253.2.1:41997 -> 10.253.2.2:9997 (UDP)")
RAW_FLAGS = ("l4-protocol", "group-by", "no-stack-trace", "disable-normal-filter", "no-ovs-actions", "dst-ip:",
             "--dst-port:", "--reported-loss")


def replay(recording: Path, tmp_path: Path, size: tuple[int, int], speed: float) -> Tmux:
    return Tmux(f"exec .venv/bin/netsleuth replay {recording} --speed {speed} --sessions {tmp_path / 's'}",
                {}, *size)


def focus_field(term: Tmux, help_text: str, tabs: int) -> None:
    """Tab ``tabs`` times; the field's help line (shown while it has the focus) says it is there."""
    for _ in range(tabs):
        term.keys("Tab")
        time.sleep(0.1)
    term.wait_for(help_text)


def gone_after(term: Tmux, text: str, timeout: float = 5) -> float:
    t0 = time.monotonic()
    while text in term.screen():
        assert time.monotonic() - t0 < timeout, f"{text!r} stayed:\n{term.screen()}"
        time.sleep(0.05)
    return time.monotonic() - t0


def table_rows(screen: str) -> list[str]:
    """Lines of the screen that are table rows of a flow (a flow and something else)."""
    return [line for line in screen.splitlines() if "->" in line and not line.lstrip().startswith(("#", "flow"))]


def event_rows(screen: str) -> list[str]:
    """The Details table's rows (they begin with the event's time)."""
    return [r for r in table_rows(screen) if re.match(r"^ \d\d:\d\d:\d\d\.\d{3} ", r)]


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
def test_a_trainee_walks_the_netfilter_recording(tmp_path, size):
    term = replay(NETFILTER, tmp_path, size, speed=0.3)
    try:
        term.wait_for("Continue")
        term.keys("Enter")
        term.wait_for("Packet loss")
        # the symptom list's footer says how to move and choose
        footer = [line for line in term.wait_for("Choose").splitlines() if line.strip()][-1]
        assert "↑↓ Move" in footer and "⏎ Choose" in footer, footer
        term.keys("Enter")
        screen = term.wait_for("what do you know?")
        assert "Destination IP" in screen and "10.253.2.2" in screen

        # No filter and "Yes, I know the flow": the Details step says it will report everything.
        focus_field(term, "The receiver's IPv4 address", 1)
        term.keys(*["BSpace"] * 12)
        gone_after(term, "10.253.2.2")
        term.keys("C-n")
        term.wait_for("Do you know roughly where the packets are dropped?")
        term.keys("Down", "Enter")
        screen = term.wait_for("Capture each dropped packet")
        assert "No filter set" in " ".join(term.screen().split()), screen
        term.keys("Escape")
        term.wait_for("Do you know roughly where the packets are dropped?")
        term.keys("Escape")
        term.wait_for("what do you know?")

        # Errors in the form's words, with what the field wants; gone as soon as it is fixed.
        term.wait_for("The receiver's IPv4 address")  # the focus is back where it was
        term.keys("10.253.2.2")
        term.wait_for("10.253.2.2")
        focus_field(term, "The service port", 3)
        term.keys("99999")
        screen = term.wait_for("Destination port: '99999' is not valid")
        term.keys("C-n")
        term.wait_for("need fixing")
        term.keys(*["BSpace"] * 5)
        fixed_after = gone_after(term, "need fixing")
        focus_field(term, "How many packets", 3)  # past the namespace and the interface
        term.keys("50%")
        screen = term.wait_for("Packets reported lost: '50%' is not valid; expected")
        assert "How many packets" in screen  # the help says what it wants, beside the error
        assert not any(flag in screen for flag in RAW_FLAGS), screen
        term.keys(*["BSpace"] * 3)
        gone_after(term, "is not valid")
        term.keys("C-n")
        term.wait_for("Do you know roughly where the packets are dropped?")
        term.keys("Enter")

        # The Summary step: labels in words; the flags on the command line only.
        screen = term.wait_for("Run (Ctrl+R)")
        form = screen.split("command:")[0]
        assert "Interface" in form and "Protocol" in form, screen
        assert not any(flag in form for flag in RAW_FLAGS), screen
        assert "▐X▌ no" not in screen, "an unchecked box shows no X"
        assert "--l4-protocol udp" in " ".join(screen.split())
        term.keys("C-r")

        # Live Summary: both flows whole in the table, whatever else is long.
        deadline = time.monotonic() + 30
        while not all(any(f in row for row in table_rows(term.screen())) for f in FLOWS):
            assert time.monotonic() < deadline, term.screen()
            time.sleep(0.2)
        screen = term.wait_for("Findings", timeout=60)
        term.keys("Enter")
        term.wait_for("Next step")
        term.keys("Enter")
        term.wait_for("Run (Ctrl+R)")
        term.keys("C-r")
        # Live Details: the flow whole in every row, the time too.
        deadline = time.monotonic() + 30
        while not (rows := event_rows(screen := term.screen())):
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
        assert all(FLOWS[0] in r for r in rows), screen
        if size[0] >= 100:
            assert re.search(r"time +flow +reason +site +device +cpu +comm", screen), screen
        term.wait_for("Findings", timeout=60)

        # The conclusion scrolls with the arrows at once (no Tab first).
        term.keys("c")
        before = term.wait_for("w Write report")  # the footer (the button may sit past the edge)
        term.keys("PageDown")
        deadline = time.monotonic() + 10  # a loaded host can take seconds to redraw
        while (after := term.screen()).splitlines()[2:-3] == before.splitlines()[2:-3]:
            assert time.monotonic() < deadline, "PageDown scrolled nothing"
            time.sleep(0.1)
        term.keys("q")
        term.wait_for("Quit netsleuth?")
        term.keys("y")
        deadline = time.monotonic() + 60  # a loaded tmux server can take seconds to reap the app
        while term.exit_status() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert term.exit_status() == 0, term.screen()
    finally:
        term.kill()
    assert fixed_after < 1.0


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name.split(".")[0] for p in RECORDINGS])
def test_every_shipped_recording_replays_to_its_conclusion(tmp_path, recording):
    rec = Recording.load(recording)
    term = replay(recording, tmp_path, (100, 30), speed=0)
    try:
        term.wait_for("Continue")
        term.keys("Enter")
        term.wait_for("(the recording's: replays it)")
        term.keys("Enter")  # the recording's symptom is highlighted
        term.wait_for("what do you know?")
        term.keys("C-n")
        ran = 0
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, term.screen()
            screen = term.screen()
            if "Run (Ctrl+R)" in screen and "Cannot run on this host" not in screen:
                term.keys("C-r")
                ran += 1
                term.wait_for("Findings", timeout=30)
            elif "Findings" in screen:
                break
            elif "?" in (heading := screen.splitlines()[1]) and "→ " in screen:
                # a question (a step's heading asks too; Enter there would run it): the recommended answer
                term.keys("Enter")
                # the next screen before the next look: a second Enter on a stale screen would
                # answer the next one (seen: a run started by it, Findings skipped to Next step)
                while term.screen().splitlines()[1] == heading:
                    assert time.monotonic() < deadline, term.screen()
                    time.sleep(0.1)
            time.sleep(0.3)
            assert "Cannot run on this host" not in term.screen(), term.screen()
        term.keys("c")
        screen = " ".join(term.wait_for("w Write report").split())  # the footer: the button may sit past the edge
        assert "Cause found" in screen, screen
        assert ran >= 1 and rec.runs
    finally:
        term.kill()
