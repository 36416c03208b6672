"""The app's screens one by one over recorded data: live views as they update, help, quitting,
resuming, errors (panel + log, never a traceback), and probes closed on every way out."""

from __future__ import annotations

import pytest

from probes.runtime.loader import ProbeError
from tests.wizard_pilot import (PACKET_LOSS, SIZE, choose, flat_text, pick, recorded_facts, replay_app, screen_text, to_context,
                                type_into, wait_for, wait_screen)
from wizard.app import NetsleuthApp
from wizard.backends import ReplayBackend
from wizard.replay import Recording
from wizard.screens.context import ContextScreen
from wizard.screens.dialogs import ConfirmDiscard, ConfirmQuit, HelpScreen
from wizard.screens.findings import FindingsScreen, NextStepScreen
from rich.text import Text

from wizard.screens.live import LiveDetailsScreen, LiveSummaryScreen, event_text
from wizard.screens.preflight import PreflightScreen
from wizard.screens.question import QuestionScreen
from wizard.screens.step import StepScreen
from wizard.screens.symptom import SymptomScreen
from wizard.session import read_journal

pytestmark = pytest.mark.asyncio


class CountingBackend(ReplayBackend):
    """The recorded backend, counting how often each source it hands out is started and closed
    (a test double around the real recorded runs: the point is the app's lifecycle handling)."""

    def __init__(self, speed: float, fail_start: bool = False):
        super().__init__(Recording.load(PACKET_LOSS), speed)
        self.sources: list[CountingSource] = []
        self.fail_start = fail_start

    def source(self, name, values):
        src = CountingSource(super().source(name, values), self.fail_start)
        self.sources.append(src)
        return src


class CountingSource:
    def __init__(self, inner, fail_start: bool):
        self.inner, self.fail_start = inner, fail_start
        self.started = self.closed = 0

    def start(self):
        self.started += 1
        if self.fail_start:
            raise ProbeError("could not load drop_summary.bpf.c: test failure at load")
        self.inner.start()

    def close(self):
        self.closed += 1
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def to_step(pilot, dst_ip: str = "10.253.2.1"):
    await to_context(pilot)
    await type_into(pilot, "f-dst_ip", dst_ip)
    await choose(pilot, "f-l4_protocol", "udp")
    await pilot.press("ctrl+n")
    await wait_screen(pilot, QuestionScreen)
    await pilot.press("enter")
    return await wait_screen(pilot, StepScreen)


async def shot(pilot) -> tuple[str, str]:
    """(body, footer) of what the 80x24 terminal shows: the words between the header and the
    footer line, and the footer's, each on one line."""
    await pilot.pause(0.2)  # let the footer and late layout settle
    lines = screen_text(pilot.app).splitlines()
    assert len(lines) == SIZE[1]
    return " ".join(" ".join(lines[1:-1]).split()), " ".join(lines[-1].split())


async def test_live_summary_updates_then_stop_keeps_what_was_seen(tmp_path):
    backend = CountingBackend(speed=1.0)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    truth = recorded_facts()
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        await wait_for(pilot, lambda: live.result.get("total", 0) > 0, what="first counts")
        first = live.result["total"]
        text = screen_text(app)
        assert "running" in text and "NO_SOCKET" in text and truth["device"] in text
        assert "recorded with: Destination IP 10.253.2.1" in text
        assert f"total {first:,}" in text
        await wait_for(pilot, lambda: live.result.get("total", 0) > first, what="counts to grow")
        assert live.query_one("#live-chart").samples, "the rate chart got points"
        # the full entry, cut in the table at 80 columns, is shown under it
        assert "10.253.2.2:40000 -> 10.253.2.1:6353 (UDP)" in flat_text(app)
        await pilot.press("s")
        findings = await wait_screen(pilot, FindingsScreen)
        assert findings.result.status == "stopped"
        assert 0 < findings.result.result["total"] < truth["summary_total"]
        # stopped early: as long as it was replayed, not the whole recorded run
        recorded = next(r for r in Recording.load(PACKET_LOSS).runs if r.probe == "drop-summary")
        assert 0 < findings.result.duration_s < recorded.duration_s
        assert findings.result.result["duration_s"] == findings.result.duration_s
    assert [(s.started, s.closed) for s in backend.sources] == [(1, 1)]


async def test_live_details_shows_packet_fields_and_stack(tmp_path):
    backend = CountingBackend(speed=1.0)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen, timeout=20)
        await pilot.press("enter")
        await wait_screen(pilot, NextStepScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveDetailsScreen)
        table = live.query_one("#live-events")
        await wait_for(pilot, lambda: len(table.items) >= 3, what="events in the stream")
        text = screen_text(app)
        assert "NO_SOCKET" in text and "__udp4_lib_rcv" in text
        detail = str(live.query_one("#event-detail").render())
        assert "flow: 10.253.2.2:40000 -> 10.253.2.1:6353 (UDP)" in detail and "reason: NO_SOCKET" in detail
        assert "stack" in detail and "__udp4_lib_rcv" in detail
        # where and what first, the stack right after (not under a screenful of header fields)
        assert [line.split(":")[0] for line in detail.splitlines()[:5]] == ["flow", "reason", "location", "device",
                                                                          "stack"]
        # moving up the list shows that packet's fields (and the stream no longer drags the cursor)
        await pilot.press("up")
        await wait_for(pilot, lambda: table.cursor_row < len(table.items) - 1, what="the cursor off the newest row")

        def detail_is_the_cursor_rows() -> bool:  # the pane follows the highlight by a message: waited for
            row = table.cursor_row
            return str(live.query_one("#event-detail").render()) == str(Text.from_markup(event_text(table.items[row])))
        await wait_for(pilot, detail_is_the_cursor_rows, timeout=5, what="the detail pane showing the row moved to")
        assert table.cursor_row < len(table.items) - 1, "the stream dragged the cursor back to the newest row"
        await wait_screen(pilot, FindingsScreen, timeout=20)
    assert all(s.started == 1 and s.closed == 1 for s in backend.sources) and len(backend.sources) == 2


async def test_escape_during_a_run_discards_it_and_closes_the_probe(tmp_path):
    backend = CountingBackend(speed=0.5)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        step = await to_step(pilot)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        await wait_for(pilot, lambda: live.state == "running", what="running")
        await pilot.press("escape")  # asks first: the run is not thrown away by one key
        await wait_screen(pilot, ConfirmDiscard)
        assert "Discard this run?" in flat_text(app)
        await pilot.press("n")
        assert await wait_screen(pilot, LiveSummaryScreen) is live and live.state == "running"
        assert backend.sources[0].closed == 0
        await pilot.press("escape")
        await wait_screen(pilot, ConfirmDiscard)
        await pilot.press("y")
        assert await wait_screen(pilot, StepScreen) is step
        await wait_for(pilot, lambda: backend.sources[0].closed == 1, what="probe closed")
        assert app.walk.current_result is None  # nothing recorded for a discarded run
        await pilot.pause(0.3)
        assert isinstance(app.screen, StepScreen)  # the late 'finished' message changed nothing


async def test_quit_during_a_run_closes_the_probe_and_leaves_a_resumable_session(tmp_path):
    backend = CountingBackend(speed=0.3)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        await wait_for(pilot, lambda: live.result.get("total", 0) > 0, what="first counts")
        await pilot.press("q")
        dialog = await wait_screen(pilot, ConfirmQuit)
        assert "Resume it with: netsleuth --resume" in flat_text(app)
        await pilot.press("n")  # stay
        await wait_screen(pilot, LiveSummaryScreen)
        assert not app._exit and dialog is not app.screen
        await pilot.press("q")
        await wait_screen(pilot, ConfirmQuit)
        await pilot.press("y")
        await wait_for(pilot, lambda: app._exit, what="exit")
    assert backend.sources[0].closed == 1
    journals = list((tmp_path / "sessions").glob("*.jsonl"))
    assert len(journals) == 1
    _, events = read_journal(journals[0])
    assert events[-1]["event"] == "note" and "resume with: netsleuth --resume" in events[-1]["text"]
    assert not any(e["event"] == "end" for e in events)
    # what the run saw until the quit is in the session, as a stopped run
    (stopped,) = [e for e in events if e["event"] == "result"]
    assert stopped["status"] == "stopped" and 0 < stopped["result"]["total"] < recorded_facts()["summary_total"]

    # resume: the walk comes back at the step it was on, with what it saw, and can go on from there
    app = NetsleuthApp(ReplayBackend(Recording.load(PACKET_LOSS), 0.0), tmp_path / "sessions", resume=journals[0])
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await wait_for(pilot, lambda: not pilot.app.screen.query_one("#continue").disabled, what="preflight")
        await pilot.press("enter")
        findings = await wait_screen(pilot, FindingsScreen)
        assert findings.result.status == "stopped"
        await pilot.press("escape")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.probe == "drop-summary" and step.view.params["dst-ip"] == "10.253.2.1"
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        # Esc twice: back to the step, then (the walk's first frame is the question) to the question
        await pilot.press("escape")
        await wait_screen(pilot, StepScreen)
        await pilot.press("escape")
        await wait_screen(pilot, QuestionScreen)
        assert len(app.walk.frames) == 1
    _, events = read_journal(journals[0])
    assert any(e.get("text") == "session resumed" for e in events)
    assert [e["event"] for e in events].count("result") == 2


async def test_probe_failure_shows_in_the_panel_and_the_log_not_as_a_traceback(tmp_path):
    backend = CountingBackend(speed=0.0, fail_start=True)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        await wait_for(pilot, lambda: live.state == "failed", what="failure")
        text = flat_text(app)
        assert "Error: drop-summary: could not load drop_summary.bpf.c: test failure at load" in text
        assert "Traceback" not in text
        panel = str(app.screen.query_one("#error-panel").render())
        assert f"details: {tmp_path / 'sessions' / 'wizard.log'}" in panel
        assert app.walk.current_result.status == "error"
        await pilot.press("escape")
        await wait_screen(pilot, StepScreen)
    assert backend.sources[0].closed == 1
    log = (tmp_path / "sessions" / "wizard.log").read_text()
    assert "ERROR netsleuth.wizard: probe drop-summary: error: could not load drop_summary.bpf.c: test failure at load" \
        in log


async def test_a_bug_in_a_handler_goes_to_the_panel_and_the_app_stays_up(tmp_path):
    class Broken(ReplayBackend):
        def command_line(self, name, values):
            raise RuntimeError("boom in command_line")

    app = NetsleuthApp(Broken(Recording.load(PACKET_LOSS), 0.0), tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)  # the step screen builds its command line on mount: the bug fires
        await wait_for(pilot, lambda: "boom in command_line" in flat_text(app), what="panel")
        assert "Traceback" not in screen_text(app)
        await pilot.press("escape")  # still responsive
        await wait_screen(pilot, QuestionScreen)
    log = (tmp_path / "sessions" / "wizard.log").read_text()
    assert "Traceback" in log and "boom in command_line" in log


async def test_a_crash_no_handler_guards_stops_the_probe_and_keeps_the_session(tmp_path, monkeypatch):
    """The last resort: an error outside any handler (here the live view's timer) ends the app;
    the probe is stopped and closed at once, the traceback is in the log, the session kept."""
    backend = CountingBackend(speed=0.3)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    with pytest.raises(RuntimeError, match="boom in the timer"):
        async with app.run_test(size=SIZE) as pilot:
            await to_step(pilot)
            await pilot.press("ctrl+r")
            live = await wait_screen(pilot, LiveSummaryScreen)
            await wait_for(pilot, lambda: live.result.get("total", 0) > 0, what="first counts")

            def boom(_self):
                raise RuntimeError("boom in the timer")

            monkeypatch.setattr(LiveSummaryScreen, "counters", boom)
            await pilot.pause(2)
    # told to stop as the app ended: run() waits for the worker threads, which then end at once
    assert live.run.stop_requested.is_set()
    line = app.close_after_crash()
    log_path = tmp_path / "sessions" / "wizard.log"
    assert line == f"netsleuth stopped on an internal error; details: {log_path}"
    assert backend.sources[0].closed == 1
    log = log_path.read_text()
    assert "CRITICAL netsleuth.wizard: unexpected error" in log and "boom in the timer" in log
    (journal,) = (tmp_path / "sessions").glob("*.jsonl")
    _, events = read_journal(journal)
    assert events[-1]["event"] == "note" and "stopped on an internal error; resume with" in events[-1]["text"]
    (stopped,) = [e for e in events if e["event"] == "result"]
    assert stopped["status"] == "stopped" and stopped["result"]["total"] > 0


async def test_help_shows_the_screen_keys_and_closes(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("question_mark")
        await wait_screen(pilot, HelpScreen)
        text = flat_text(app)
        assert "On this screen" in text and "Run probe" in text and "filters already filled in" in text
        assert "Esc Back" in text  # inherited from every screen, listed too
        await pilot.press("escape")
        await wait_screen(pilot, StepScreen)


async def test_key_screens_at_80x24(tmp_path):
    """Snapshot-style: each key screen at 80x24 shows what a person needs without scrolling."""
    app = replay_app(tmp_path)
    truth = recorded_facts()
    shots = {}
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await wait_for(pilot, lambda: not pilot.app.screen.query_one("#continue").disabled, what="preflight")
        shots["preflight"] = await shot(pilot)
        await pilot.press("enter")
        await wait_screen(pilot, SymptomScreen)
        shots["symptom"] = await shot(pilot)
        await pick(pilot, "#symptoms", "symptom:packet-loss")
        await wait_screen(pilot, ContextScreen)
        shots["context"] = await shot(pilot)
        await type_into(pilot, "f-dst_ip", "10.253.2.1")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        shots["step"] = await shot(pilot)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        shots["findings"] = await shot(pilot)
        await pilot.press("enter")
        await wait_screen(pilot, NextStepScreen)
        shots["next"] = await shot(pilot)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        shots["details-step"] = await shot(pilot)
    expect = {  # what a person needs, in the body of the screen (not only in the footer's keys)
        "preflight": ["Replay: what was recorded", "drop-summary", "Continue (Enter)"],
        "symptom": ["Packet loss", "High latency", "OVS is slow", "VM network problem", "quick reference"],
        "context": ["Destination IP", "Interface", "Packets reported lost", "Continue (Ctrl+N)"],
        "step": ["drop-summary", "tier 1", "cost", "command:", "--dst-ip", "Run (Ctrl+R)"],
        "findings": ["CRITICAL", "Nothing listens", "NO_SOCKET", truth["device"], "drop-summary ran"],
        "next": ["Capture each dropped packet of this flow", "drop-details", "Conclude"],
        "details-step": ["drop-details", "tier 2", "10.253.2.2", "6353", "command:", "Run (Ctrl+R)"],
    }
    for name, words in expect.items():
        body, footer = shots[name]
        missing = [w for w in words if w not in body]
        assert not missing, f"{name} screen lacks {missing} in: {body}"
        assert "Help" in footer and "Quit" in footer, f"{name}: footer keys: {footer}"
    assert "Next steps" in shots["findings"][1] and "Run probe" in shots["step"][1]


async def test_quick_reference_row_starts_at_its_summary_step(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await pilot.press("enter")  # early Enter: continues once the checks are done
        await wait_screen(pilot, SymptomScreen)
        row = next(i for i, r in enumerate(app.lib.quick_reference) if r.problem == "Drops")
        await pick(pilot, "#symptoms", f"quick:{row}")
        await wait_screen(pilot, ContextScreen)
        await pilot.press("ctrl+n")
        step = await wait_screen(pilot, StepScreen)  # no question: straight to the Summary
        assert step.view.ref == "packet-loss/drop-summary"
        assert len(app.walk.frames) == 1


async def test_a_step_that_cannot_run_says_why_and_does_not_run(tmp_path):
    backend = CountingBackend(speed=0.0)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_context(pilot, "symptom:high-latency")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.unavailable  # this recording has no latency run
        assert "Cannot run on this host: not in this recording" in flat_text(app)
        # No dead Run button, no form to fill: what it would add, and what can run instead.
        assert not step.query("#run") and not step.query("#step-form")
        assert "What it would add: Timestamps each packet of the flow at every stage" in flat_text(app)
        assert "Instead, what can run here (Ctrl+R: the first): • Where does the kernel drop packets? " \
               "(drop-summary, tier 1: Summary)" in flat_text(app)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None
                       and app.screen.view.ref == "packet-loss/drop-summary", what="the drop Summary step")
        await pilot.press("escape")  # back to the step that cannot run, then to the question
        await wait_for(pilot, lambda: app.screen.view.ref == "high-latency/system-latency-summary", what="back")
        await pilot.press("escape")
        await wait_screen(pilot, QuestionScreen)
    assert backend.sources == []


async def test_the_mouse_works_too(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await wait_for(pilot, lambda: not pilot.app.screen.query_one("#continue").disabled, what="preflight")
        await pilot.click("#continue")
        await wait_screen(pilot, SymptomScreen)
        symptoms = app.screen.query_one("#symptoms")
        assert symptoms.get_option_at_index(0).id == "symptom:packet-loss"  # the guide's first symptom
        await pilot.click("#symptoms", offset=(4, 0))
        await wait_screen(pilot, ContextScreen)
        await pilot.click("#continue")
        await wait_screen(pilot, QuestionScreen)
        await pilot.click("#answers", offset=(4, 0))
        await wait_screen(pilot, StepScreen)
        await pilot.click("#run")
        await wait_screen(pilot, FindingsScreen)


async def test_a_run_ending_under_the_help_shows_its_findings_once_help_closes(tmp_path):
    # The recorded 6 s at full speed: 2 s (speed 3) ended before the live view was seen once in CI.
    backend = CountingBackend(speed=1.0)
    app = NetsleuthApp(backend, tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot)
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        await pilot.press("question_mark")
        await wait_screen(pilot, HelpScreen)
        await wait_for(pilot, lambda: backend.sources and backend.sources[0].closed == 1, timeout=30,
                       what="run over")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HelpScreen)  # nothing jumped under the user's eyes
        await pilot.press("escape")
        await wait_screen(pilot, FindingsScreen)
        await pilot.press("escape")  # back goes to the step's form, not to a finished live view
        await wait_screen(pilot, StepScreen)
        assert live not in app.screen_stack


async def _tab_through(pilot, where: str) -> list[str]:
    """Tab through every focusable widget of the screen once; what was focused but not fully
    visible (outside its scroll area, under the command line or the footer)."""
    screen = pilot.app.screen
    hidden, seen = [], []
    for _ in range(60):
        w = screen.focused
        if w is None or w in seen:
            break
        seen.append(w)
        await pilot.pause()  # focus scrolls the widget into view after a refresh
        shown = screen._compositor.visible_widgets.get(w)
        if shown is None or not shown[1].contains_region(shown[0]) or \
                not screen.region.contains_region(shown[0]):
            hidden.append(f"{where}: #{w.id or type(w).__name__}")
        screen.focus_next()  # what Tab does, without a key round trip per field
    assert len(seen) > 1, f"{where}: nothing to focus"
    return hidden


async def test_every_form_field_is_visible_when_focused_at_80x24(tmp_path):
    """Every step of every playbook and every context form: each field the user can tab to is
    scrolled into view at 80x24 (none hides under the command line or the footer)."""
    from playbooks import Walk

    app = replay_app(tmp_path)
    hidden: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await wait_for(pilot, lambda: not app.screen.query_one("#continue").disabled, what="preflight")
        for ref, step in sorted(app.lib.steps.items()):
            if not app.backend.flags(step.probe):
                continue  # not implemented here: no form
            app.push_screen(app.step_screen(Walk(app.lib, {}, start=ref).current, 1))
            await pilot.pause(0.05)
            hidden += await _tab_through(pilot, ref)
            app.pop_screen()
        for pb in app.lib.playbooks.values():
            app.push_screen(app.context_screen(pb, pb.start))
            await pilot.pause(0.05)
            hidden += await _tab_through(pilot, f"context of {pb.id}")
            app.pop_screen()
    assert not hidden, hidden


async def test_a_report_written_then_moved_past_is_rewritten_and_the_session_stays_resumable(tmp_path):
    import json

    from wizard.app import find_session
    from wizard.screens.conclusion import ConclusionScreen

    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await to_step(pilot, "10.253.2.1")
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        await pilot.press("c")
        await wait_screen(pilot, ConclusionScreen)
        await pilot.press("w")
        await wait_for(pilot, lambda: app.report_paths, what="report written")
        paths = dict(app.report_paths)
        # the user goes on: back to the findings, the next step, runs it
        await pilot.press("escape")
        await wait_screen(pilot, FindingsScreen)
        await pilot.press("enter")
        await wait_screen(pilot, NextStepScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        sid = app.session.id
        await pilot.press("q")
        dialog = await wait_screen(pilot, ConfirmQuit)
        assert "The report is rewritten" in flat_text(app)
        # a long path wraps on screen: the dialog's text holds it whole
        assert f"Resume it with: netsleuth --resume {sid} --sessions {tmp_path / 'sessions'}" in dialog.detail
        await pilot.press("y")
        await wait_for(pilot, lambda: app._exit, what="exit")
    rep = json.loads(open(paths["json"]).read())
    assert [t["probe"] for t in rep["timeline"] if t["kind"] == "step"] == ["drop-summary", "drop-details"]
    journal = find_session("", tmp_path / "sessions")  # still offered by --resume
    _, events = read_journal(journal)
    assert not any(e["event"] == "end" for e in events)
    assert events[-2]["text"].startswith("report rewritten") and events[-2]["reports"] == paths
    assert events[-1]["text"].endswith(f"resume with: netsleuth --resume {sid} --sessions {tmp_path / 'sessions'}")


async def test_fill_from_a_listening_socket_fills_the_destination_and_continues(tmp_path):
    import os
    import socket

    from wizard import discovery

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 0))
    port = server.getsockname()[1]

    class WithSockets(ReplayBackend):
        """The recorded backend, with this host's real sockets of this test in the picker."""

        def inventory(self):
            inv = super().inventory()
            inv.flows = [f for f in discovery.find_flows(10000) if f.pid == os.getpid() and f.local_port == port]
            return inv

    app = NetsleuthApp(WithSockets(Recording.load(PACKET_LOSS), 0.0), tmp_path / "sessions")
    try:
        async with app.run_test(size=SIZE) as pilot:
            ctx = await to_context(pilot)
            await type_into(pilot, "f-src_port", "1234")  # left over from an earlier choice: cleared
            (label,) = [f.label for f in ctx.flow_filters]
            assert label.startswith(f"UDP to the service on 0.0.0.0:{port}")
            await choose(pilot, "flow-picker", 0)
            flow_fields = ("src_ip", "dst_ip", "src_port", "dst_port", "l4_protocol")
            values = {k: v for k, v in ctx.query_one("#context-form").values().items() if k in flow_fields}
            # any address (never 0.0.0.0), the recording's prefilled dst_ip cleared, no source port
            assert values == {"dst_port": str(port), "l4_protocol": "udp"}
            await pilot.press("ctrl+n")
            await wait_screen(pilot, QuestionScreen)
            assert {k: v for k, v in app.walk.context.items() if k in flow_fields} == {"dst_port": port,
                                                                                       "l4_protocol": "udp"}
    finally:
        server.close()


async def test_tun_drops_row_offers_drop_details_on_the_tap_instead(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await pilot.press("enter")
        await wait_screen(pilot, SymptomScreen)
        row = next(i for i, r in enumerate(app.lib.quick_reference) if r.problem == "TUN drops")
        await pick(pilot, "#symptoms", f"quick:{row}")
        await wait_screen(pilot, ContextScreen)
        await pilot.press("ctrl+n")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.ref == "vm-network/tun-ring-monitor" and step.view.unavailable
        text = flat_text(app)
        assert "Cannot run on this host: not in this recording" in text
        assert "Instead, what can run here (Ctrl+R: the first): • Capture the packets dropped on the VM's tap " \
               "device (drop-details" in text, text
        await pilot.press("ctrl+r")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.ref == "vm-network/tun-drop-details" and step.view.unavailable is None
        assert step.query_one("#f-interface") is not None
        await pilot.press("escape")  # back to the step that could not run
        step = await wait_screen(pilot, StepScreen)
        assert step.view.ref == "vm-network/tun-ring-monitor"


async def test_a_fields_help_shows_only_while_it_has_the_focus(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        ctx = await to_context(pilot)
        for _ in range(3):
            shown = [f.flag.dest for f in ctx.query(".param-field") if f.query_one(".param-help").display]
            assert shown == [app.screen.focused.id[2:]]
            await pilot.press("tab")
            await pilot.pause(0.05)
        help_of = {f.flag.dest: str(f.query_one(".param-help").render()) for f in ctx.query(".param-field")}
        focused = app.screen.focused.id[2:]
        assert focused != "src_ip" and help_of[focused] in flat_text(app)
        assert help_of["src_ip"] not in flat_text(app)  # the first field's help went with its focus


async def test_findings_are_ranked_the_latency_lesson_first(tmp_path):
    """Evaluated after the drop sites, the lesson ranks first (critical, priority 10), in words
    that do not contradict them: X of N reported are real drops."""
    truth = recorded_facts()
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await to_context(pilot)
        await type_into(pilot, "f-reported_loss", "1000")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        await pilot.press("ctrl+r")
        findings = await wait_screen(pilot, FindingsScreen)
        evaluated = [f.rule for f in app.walk.frames[-1].findings]
        assert evaluated.index("reason-no-socket") < evaluated.index("latency-not-loss")
        shown = [f.rule for f in findings.findings]
        assert shown[0] == "latency-not-loss"
        first = str(findings.query(".finding").first().render())
        late = 1000 - truth["summary_total"]
        assert first.startswith(f"CRITICAL Only {truth['summary_total']} of 1,000 packets reported lost were "
                                f"dropped: the other {late} are latency")
