"""The HTML report in a real browser (Debian's chromium, headless): it renders, its charts are
SVG in the page, and no Markdown leaks as text (`code`, **bold**, # headings).  And the TUI
writes the report to the directory the user types."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from playbooks import Walk, load_library
from probes.registry import PROBES
from tests.autopilot_scenario import RECORDING
from tests.test_playbooks_engine import latency_summary, merged, pair
from tests.test_session_report import drive
from tests.wizard_pilot import choose, flat_text, replay_app, to_context, type_into, wait_for, wait_screen
from wizard.autopilot import command_for
from wizard.replay import RecordedBackend, Recording
from wizard.report import build_report, write_reports
from wizard.screens.conclusion import ConclusionScreen
from wizard.screens.findings import FindingsScreen
from wizard.screens.question import QuestionScreen
from wizard.screens.step import StepScreen

LIB = load_library(probes=PROBES)
CHROMIUM = shutil.which("chromium")
browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by scripts/setup.sh --test")


def report_html(tmp_path: Path) -> tuple[dict, Path]:
    """A real recorded packet-loss walk (drop sites with advice in `code`, stacks), whose loss
    is mostly latency, then the latency Summary it suggests (a histogram)."""
    rec = Recording.load(RECORDING)
    w = Walk(LIB, {**rec.context, "reported_loss": 1_000_000}, "packet-loss")
    drive(w, rec, 1)
    w.choose("high-latency/system-latency-summary")
    w.complete("ok", merged("system-latency-summary", [latency_summary(
        [pair("OVS_RX", "OVS_PROCESS", [10] * 990 + [150_000] * 10)])]), 30)
    rep = build_report(w, rec.host, "sid-browser", command_for(RecordedBackend(rec)), mode="replay")
    return rep, Path(write_reports(rep, tmp_path / "report")["html"])


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


class Text(html.parser.HTMLParser):
    """The words a reader sees, and the tags they sit in."""

    def __init__(self):
        super().__init__()
        self.words, self.tags, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if "style" not in self.stack:
            self.words.append(data)


def png_colours(path: Path) -> int:
    """Distinct byte values of the decoded image rows: 1-2 for a blank page."""
    data, raw = path.read_bytes(), b""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i = 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            raw += data[i + 8:i + 8 + n]
        i += 12 + n
    return len(set(zlib.decompress(raw)))


@browser
def test_report_renders_in_chromium_with_its_charts_and_no_raw_markdown(tmp_path):
    rep, page = report_html(tmp_path)
    dom = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    t = Text()
    t.feed(dom.stdout)
    text = " ".join(" ".join(t.words).split())
    # It rendered the report: the conclusion, the steps, the findings.
    assert "netsleuth report: Packet loss" in text and "Conclusion" in text
    assert "The firewall (netfilter) drops" in text
    # The histogram is an SVG in the page, with its bars.
    assert t.tags.count("svg") == 1 and t.tags.count("rect") >= 2
    assert "rx OVS_RX → OVS_PROCESS" in text
    # Inline code is <code>, never backticks; no Markdown syntax in what a reader sees.
    assert "`" not in text and "**" not in text and "```" not in text
    assert "sudo netsleuth probe drop-summary" in text  # the reproduce line, pasted as is
    assert t.tags.count("code") > 10
    # Every entry's stack, not only the first one's.
    rows = [s for s in rep["timeline"] if s["kind"] == "step"][0]["key_results"]["rows"]
    assert len(rows) >= 2 and text.count("Stack of entry") >= 2
    assert "Stack of entry 2 (" in text

    shot = tmp_path / "shot.png"
    r = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr
    assert png_colours(shot) > 20  # text, tables and the conclusion's colours, not a blank page


@pytest.mark.asyncio
async def test_the_conclusion_writes_the_report_where_the_user_says(tmp_path):
    app = replay_app(tmp_path)
    target = tmp_path / "my reports" / "incident-42"
    async with app.run_test(size=(100, 30)) as pilot:
        await to_context(pilot)
        await type_into(pilot, "f-dst_ip", "10.253.2.1")
        await choose(pilot, "f-l4_protocol", "udp")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        await pilot.press("c")
        await wait_screen(pilot, ConclusionScreen)
        field = app.screen.query_one("#report-dir")
        assert field.value == str(app.report_dir())  # where it goes unless told otherwise
        await type_into(pilot, "report-dir", str(target))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.report_paths, what="report written")
        assert sorted(p.name for p in target.iterdir()) == ["report.html", "report.json", "report.md"]
        assert str(target / "report.md") in flat_text(app)
