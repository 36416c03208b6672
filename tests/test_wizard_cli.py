"""Starting the wizard from the command line: bad input is one clear line, never a traceback;
--record from the app writes a recording that replays; sessions are found by id."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.netenv import ROOT
from tests.wizard_pilot import PACKET_LOSS, SIZE, to_context, type_into, wait_for, wait_screen
from wizard.app import NetsleuthApp, find_session
from wizard.backends import ReplayBackend
from wizard.replay import Recording
from wizard.screens.context import ContextScreen
from wizard.screens.findings import FindingsScreen
from wizard.screens.question import QuestionScreen
from wizard.screens.step import StepScreen
from wizard.session import SessionError, Session

NETSLEUTH = [sys.executable, "-m", "wizard.main"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(NETSLEUTH + list(args), cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_replay_of_a_missing_file_is_one_line(tmp_path):
    r = run("replay", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2
    assert r.stderr.startswith("netsleuth replay: ") and "cannot read" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_replay_of_a_file_that_is_not_a_recording(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    r = run("replay", str(bad))
    assert r.returncode == 2 and f"netsleuth replay: {bad}:1: not JSON" in r.stderr and "Traceback" not in r.stderr


def test_resume_of_an_unknown_session_is_one_line(tmp_path):
    r = run("--sessions", str(tmp_path), "--resume", "no-such-session")
    assert r.returncode == 2
    assert r.stderr.strip() == f"netsleuth: no session 'no-such-session' in {tmp_path} (see the files there)"


def test_find_session_by_id_prefix_path_and_newest_open(tmp_path):
    a = Session.create("packet-loss", {}, {}, tmp_path)
    a.write({"event": "start", "symptom": "packet-loss", "start": "packet-loss/know-where", "context": {}})
    a.close()
    b = Session.create("high-latency", {}, {}, tmp_path)
    b.end()
    b.close()
    assert find_session(a.id, tmp_path) == a.path
    assert find_session(a.id[:20], tmp_path) == a.path
    assert find_session(str(b.path), tmp_path) == b.path
    assert find_session("", tmp_path) == a.path  # the newest one not ended
    with pytest.raises(SessionError):
        find_session("", tmp_path / "empty")


@pytest.mark.asyncio
async def test_record_from_the_app_replays(tmp_path):
    """--record: what the app's runs produced is a recording `netsleuth replay` accepts."""
    out = tmp_path / "again.jsonl.gz"
    app = NetsleuthApp(ReplayBackend(Recording.load(PACKET_LOSS), 0.0), tmp_path / "sessions", record=out)
    async with app.run_test(size=SIZE) as pilot:
        await to_context(pilot)
        await type_into(pilot, "f-dst_ip", "10.253.2.1")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, StepScreen)
        await pilot.press("ctrl+r")
        findings = await wait_screen(pilot, FindingsScreen)
        total = findings.result.result["total"]
        await pilot.press("ctrl+q")
        await pilot.press("y")
        await wait_for(pilot, lambda: app._exit, what="exit")
    again = Recording.load(out)
    assert again.symptom == "packet-loss" and again.context["dst_ip"] == "10.253.2.1"
    [run_] = again.runs
    assert run_.probe == "drop-summary" and run_.status == "ok" and run_.step == "packet-loss/drop-summary"
    assert sum(r["total"] for _, r in run_.records if r["type"] == "drop_summary") == total
    assert "--dst-ip 10.253.2.1" in run_.command


def test_record_to_an_existing_file_is_refused_before_the_app_starts(tmp_path):
    mine = tmp_path / "notes.jsonl"
    mine.write_text("keep me\n")
    r = run("--sessions", str(tmp_path / "s"), "--record", str(mine))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"netsleuth: --record: {mine} exists; give a new file name (or remove it)"
    assert mine.read_text() == "keep me\n"


@pytest.mark.asyncio
async def test_a_recording_that_cannot_be_opened_leaves_no_session(tmp_path):
    """The recorder opens before the session: each failed try used to leave a header-only
    journal that --resume then picked (and could not resume)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = NetsleuthApp(ReplayBackend(Recording.load(PACKET_LOSS), 0.0), tmp_path / "sessions",
                       record=blocker / "rec.jsonl")
    async with app.run_test(size=SIZE) as pilot:
        await to_context(pilot)
        for _ in range(2):
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: "is not a writable directory" in str(
                app.screen.query_one("#error-panel").render()), what="the error")
            assert isinstance(app.screen, ContextScreen) and app.session is None
    assert not list((tmp_path / "sessions").glob("*.jsonl"))


def test_resume_skips_a_journal_with_nothing_to_resume(tmp_path):
    a = Session.create("packet-loss", {}, {}, tmp_path)
    a.write({"event": "start", "symptom": "packet-loss", "start": "packet-loss/know-where", "context": {}})
    a.close()
    orphan = Session.create("packet-loss", {}, {}, tmp_path)  # newer, header only
    orphan.close()
    assert find_session("", tmp_path) == a.path


def test_every_other_command_works_without_prometheus_client(tmp_path):
    """The lab guest (and a host without the exporter's module) still runs probes and doctor."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'prometheus_client':\n"
        "            raise ImportError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    probe = subprocess.run([sys.executable, "-m", "wizard.main", "probe", "--help"], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=60)
    assert probe.returncode == 0 and "drop-summary" in probe.stdout, probe.stderr
    exporter = subprocess.run([sys.executable, "-m", "wizard.main", "exporter"], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=60)
    assert exporter.returncode == 1
    assert exporter.stderr.strip() == ("netsleuth exporter: needs the Python module prometheus_client "
                                       "(pip install prometheus-client)")
