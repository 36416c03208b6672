"""The whole packet-loss flow of the app, driven with the keyboard over recorded probe data:
symptom → context → question → step → live Summary → findings → next step (prefilled,
edited, with an invalid edit) → live Details → findings → conclusion → report.
Going back is exercised at each kind of screen.  No root, no BPF: a replay."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.wizard_pilot import (PACKET_LOSS, SIZE, choose, field_error, flat_text, recorded_facts, replay_app, screen_text, to_context,
                                type_into, wait_for, wait_screen)
from wizard.screens.conclusion import ConclusionScreen
from wizard.screens.context import ContextScreen
from wizard.screens.findings import FindingsScreen, NextStepScreen
from wizard.screens.question import QuestionScreen
from wizard.screens.step import StepScreen
from wizard.replay import Recording
from wizard.session import read_journal

pytestmark = pytest.mark.asyncio


async def test_packet_loss_flow_back_edit_and_report(tmp_path):
    truth = recorded_facts()
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        ctx = await to_context(pilot)
        # a replay's context form starts with what the recording was made with
        recorded = Recording.load(PACKET_LOSS).context
        assert ctx.query_one("#f-dst_ip").value == recorded["dst_ip"]
        assert ctx.query_one("#f-reported_loss").value == str(recorded["reported_loss"])

        # context: an invalid address is flagged under the field, and Continue refuses it
        await type_into(pilot, "f-dst_ip", "10.253.2.300")
        assert "Destination IP: '10.253.2.300' is not valid; expected an IPv4 address" in field_error(app, "dst_ip")
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, ContextScreen)
        assert "1 field(s) need fixing" in screen_text(app)
        await type_into(pilot, "f-dst_ip", "10.253.2.1")
        assert field_error(app, "dst_ip") == ""
        await choose(pilot, "f-l4_protocol", "udp")
        await type_into(pilot, "f-reported_loss", "40")
        await pilot.press("ctrl+n")

        # question, then back to the context and forward again
        q = await wait_screen(pilot, QuestionScreen)
        assert "Do you know roughly where the packets are dropped?" in screen_text(app)
        first_session = app.session.path
        await pilot.press("escape")
        await wait_screen(pilot, ContextScreen)
        assert app.walk is None
        _, events = read_journal(first_session)
        assert "went back to the context form" in events[-1]["text"]
        await pilot.press("ctrl+n")
        q = await wait_screen(pilot, QuestionScreen)
        assert q.query_one("#answers").highlighted == 0  # the recommended answer: the Summary
        await pilot.press("enter")

        # step: the Summary with the context's filters prefilled, and its command line
        step = await wait_screen(pilot, StepScreen)
        assert step.view.probe == "drop-summary"
        assert step.query_one("#f-dst_ip").value == "10.253.2.1"
        assert step.query_one("#f-l4_protocol").value == "udp"
        text = screen_text(app)
        assert "sudo netsleuth probe drop-summary --dst-ip 10.253.2.1 --l4-protocol udp" in flat_text(app)
        await pilot.press("ctrl+r")

        # the recorded run replays at once; its findings name the drop site, device, reason and flow
        findings = await wait_screen(pilot, FindingsScreen)
        text = screen_text(app)
        assert "Nothing listens on the destination port" in text
        assert "kernel drop reason: NO_SOCKET" in text and f"interface: {truth['device']}" in text
        assert "10.253.2.2:40000 -> 10.253.2.1:6353 (UDP)" in text
        assert findings.result.result["total"] == truth["summary_total"]

        # back to the step's form, run it again: same result, the walk did not grow
        await pilot.press("escape")
        await wait_screen(pilot, StepScreen)
        frames = len(app.walk.frames)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        assert len(app.walk.frames) == frames

        # next step: drop-details, prefilled from the evidence (flow and interface)
        await pilot.press("enter")
        nxt = await wait_screen(pilot, NextStepScreen)
        top = nxt.suggestions[0]
        assert top.probe == "drop-details" and top.unavailable is None
        assert "filters: src-ip=10.253.2.2, dst-ip=10.253.2.1" in screen_text(app)
        await pilot.press("enter")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.probe == "drop-details"
        prefilled = {k: step.query_one("#f-" + k).value for k in ("src_ip", "dst_ip", "dst_port", "interface")}
        assert prefilled == {"src_ip": "10.253.2.2", "dst_ip": "10.253.2.1", "dst_port": "6353",
                             "interface": truth["device"]}
        assert step.query_one("#f-l4_protocol").value == "udp"

        # Esc on a chosen step undoes the choice; choose it again
        depth = len(app.walk.frames)
        await pilot.press("escape")
        await wait_screen(pilot, NextStepScreen)
        assert len(app.walk.frames) == depth - 1
        await pilot.press("enter")
        step = await wait_screen(pilot, StepScreen)

        # edit a prefilled filter: an invalid port is refused inline, then a valid edit runs
        await type_into(pilot, "f-dst_port", "70000")
        assert "Destination port: '70000' is not valid; expected a port number 1-65535" in field_error(app, "dst_port")
        assert "fix the fields marked in red" in screen_text(app)
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, StepScreen)
        assert "need fixing" in screen_text(app)
        await type_into(pilot, "f-dst_port", "6353")
        await type_into(pilot, "f-src_port", "40000")
        assert "--src-port 40000" in flat_text(app)
        assert "A replay shows the run as recorded, not these filters: recorded with: Source IP 10.253.2.2" \
            in flat_text(app)
        await pilot.press("ctrl+r")
        await wait_screen(pilot, FindingsScreen)
        assert app.walk.current.params["src-port"] == 40000
        text = screen_text(app)
        assert "dropped packets captured" in text and "Nothing listens on the destination port" in text

        # conclusion and report
        await pilot.press("c")
        await wait_screen(pilot, ConclusionScreen)
        assert "Cause found." in screen_text(app)
        await pilot.press("w")
        await wait_for(pilot, lambda: app.report_paths, what="report written")
        paths = app.report_paths
        assert set(paths) == {"markdown", "json", "html"}
        for p in paths.values():
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        rep = json.loads(open(paths["json"]).read())
        assert rep["conclusion"]["cause_found"] is True
        steps = [t for t in rep["timeline"] if t["kind"] == "step"]
        assert [s["probe"] for s in steps] == ["drop-summary", "drop-details"]
        # a replay cannot measure again with the edited filter: the report says what was recorded
        recorded = next(r for r in Recording.load(PACKET_LOSS).runs if r.probe == "drop-details")
        assert steps[1]["params"] == recorded.params and "src-port" not in recorded.params
        assert steps[1]["asked_params"]["src-port"] == 40000
        assert steps[1]["command"] == recorded.command
        assert "asked for: " in open(paths["markdown"]).read()
        assert "Report written" in screen_text(app)
        md = open(paths["markdown"]).read()
        assert "Nothing listens on the destination port" in md

        # the journal has every move, in order, durably
        _, events = read_journal(app.session.path)
        kinds = [e["event"] for e in events]
        assert kinds[:3] == ["start", "answer", "result"]
        # one params event: the edit (running the unchanged Summary again edited nothing)
        assert kinds.count("params") == 1 and kinds.count("result") == 3 and "back" in kinds
        assert events[-1]["event"] == "note" and events[-1]["text"] == "report written"

        # quit: asks, then ends the session (a report was written: not resumable)
        await pilot.press("q")
        await pilot.press("y")
        await wait_for(pilot, lambda: app._exit, what="exit")
    _, events = read_journal(app_session(tmp_path, rep["session"]))
    assert events[-1]["event"] == "end" and events[-1]["conclusion"]["cause_found"] is True


def app_session(tmp_path, sid):
    return tmp_path / "sessions" / f"{sid}.jsonl"
