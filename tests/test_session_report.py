"""Session journal (durable per step, resumable) and the reports (atomic, 0600, SVG, commands)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from playbooks import Walk, load_library
from probes.registry import PROBES
from wizard.autopilot import command_for
from wizard.replay import RecordedBackend, Recording
from wizard.report import build_report, histogram_svg, host_facts, write_atomic, write_reports
from wizard.session import (Session, SessionError, interrupted_sessions, list_sessions, read_journal, resume,
                            sessions_dir)
from tests.autopilot_scenario import RECORDING
from tests.test_playbooks_engine import latency_summary, merged, pair

LIB = load_library(probes=PROBES)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def recording():
    return Recording.load(RECORDING)


def drive(walk: Walk, recording: Recording, runs: int) -> None:
    """Walk as a person would, feeding the recorded runs as the steps' results."""
    walk.answer(walk.current.default_index)
    for i, run in enumerate(recording.runs[:runs]):
        if i:
            walk.choose(walk.suggestions()[0])
        assert walk.current.probe == run.probe
        walk.complete("ok", merged(run.probe, [r for _, r in run.records], run.duration_s), run.duration_s,
                      "2026-11-25T09:29:26+00:00", command=run.command, params=run.params)


# --- journal -----------------------------------------------------------------------------

def test_sessions_dir_env_and_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("NETSLEUTH_SESSIONS", str(tmp_path / "x"))
    assert sessions_dir() == tmp_path / "x"
    monkeypatch.delenv("NETSLEUTH_SESSIONS")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert sessions_dir() == Path("/var/lib/netsleuth/sessions")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert sessions_dir() == tmp_path / "state" / "netsleuth" / "sessions"


def test_every_event_is_on_disk_when_the_walk_moves_on(tmp_path, recording, monkeypatch):
    s = Session.create("packet-loss", recording.context, {"hostname": "h"}, tmp_path / "sessions")
    assert mode(tmp_path / "sessions") == 0o700 and mode(s.path) == 0o600
    seen, synced = [], []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    def journal_then_check(event):
        before = synced.count(s._f.fileno())
        s.write(event)
        # Durable, not only in the page cache: the journal's file was fsynced for this event...
        assert synced.count(s._f.fileno()) == before + 1
        # ...and a separate reader sees the line before the walk continues.
        header, events = read_journal(s.path)
        seen.append(events[-1]["event"])
        assert events[-1]["event"] == event["event"]

    monkeypatch.setattr(os, "fsync", counting_fsync)
    w = Walk(LIB, recording.context, "packet-loss", on_event=journal_then_check)
    drive(w, recording, 2)
    assert seen == ["start", "answer", "result", "choose", "result"]
    header, events = read_journal(s.path)
    assert header["symptom"] == "packet-loss" and header["host"] == {"hostname": "h"}
    s.close()


def test_interrupted_session_resumes_to_the_same_state(tmp_path, recording):
    s = Session.create("packet-loss", recording.context, {}, tmp_path)
    w = Walk(LIB, recording.context, "packet-loss", on_event=s.write)
    drive(w, recording, 2)
    s.close()  # the process dies here: no "end" line
    with open(s.path, "a") as f:
        f.write('{"at": "x", "event": "cho')  # and the last line was cut short
    assert [x.id for x in interrupted_sessions(tmp_path)] == [s.id]
    s2, w2 = resume(s.path, LIB)
    assert w2.current == w.current
    assert [f.to_dict() for f in w2.findings] == [f.to_dict() for f in w.findings]
    assert [v.params for v in w2.suggestions()] == [v.params for v in w.suggestions()]
    # The resumed walk keeps journaling into the same file; ending it ends the session.
    w2.choose(w2.suggestions()[0])
    s2.end({"cause_found": True})
    s2.close()
    assert interrupted_sessions(tmp_path) == []
    (info,) = list_sessions(tmp_path)
    assert info.ended and info.symptom == "packet-loss"
    _, events = read_journal(s.path)
    assert [e["event"] for e in events][-3:] == ["note", "choose", "end"]


def test_not_a_journal(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"type": "something"}\n')
    with pytest.raises(SessionError, match="not a netsleuth session journal"):
        read_journal(p)
    with pytest.raises(SessionError, match="cannot read"):
        read_journal(tmp_path / "missing.jsonl")


# --- reports -------------------------------------------------------------------------------

def test_reports_from_the_recorded_session(tmp_path, recording):
    w = Walk(LIB, recording.context, "packet-loss")
    drive(w, recording, 2)
    backend = RecordedBackend(recording)
    rep = build_report(w, recording.host, "sid-1", command_for(backend), mode="replay")
    paths = write_reports(rep, tmp_path / "out")
    for p in paths.values():
        assert mode(Path(p)) == 0o600
    assert sorted(os.listdir(tmp_path / "out")) == ["report.html", "report.json", "report.md"]  # no temp files
    md = Path(paths["markdown"]).read_text()
    # Every step's reproducing command, as recorded from the probe's own command_line().
    for run in recording.runs[:2]:
        assert f"`sudo {run.command}`" in md  # pasted as it is: the probes need root
    assert "netsleuth probe drop-details" in md and "--dst-port 9999" in md
    # The next step not taken (the closed port's details) with its command too.
    assert "--dst-port 9997" in md and "## Next steps" in md
    assert "**Cause found.** The firewall (netfilter) drops" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert data["conclusion"]["cause_found"] is True
    steps = [t for t in data["timeline"] if t["kind"] == "step"]
    assert [t["probe"] for t in steps] == ["drop-summary", "drop-details"]
    assert steps[0]["key_results"]["rows"][0][3] == "NETFILTER_DROP"
    assert steps[1]["params"]["dst-port"] == 9999
    html = Path(paths["html"]).read_text()
    assert html.startswith("<!DOCTYPE html>") and "NETFILTER_DROP" in html


def test_html_draws_histograms_as_svg_and_escapes(tmp_path):
    w = Walk(LIB, {"phy_interface": "ens11"}, start="high-latency/system-latency-summary")
    recs = [latency_summary([pair("OVS_RX", "OVS_PROCESS", [10] * 990 + [150_000] * 10)])]
    w.complete("ok", merged("system-latency-summary", recs), 30)
    rep = build_report(w, {"hostname": "<script>alert(1)</script>"})
    paths = write_reports(rep, tmp_path)
    html = Path(paths["html"]).read_text()
    assert html.count("<svg") == 1 and "<rect" in html
    assert 'aria-label="rx OVS_RX → OVS_PROCESS"' in html  # the histogram says which stage it is
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    svg = histogram_svg(rep["timeline"][0]["key_results"]["histograms"][0])
    assert ">990<" in svg and ">10<" in svg  # bar labels are the bucket counts
    assert "131.072ms–262.144ms" in svg


def dir_fsyncs(monkeypatch) -> list[str]:
    """Record the directories fsynced (the real fsync still runs)."""
    real, seen = os.fsync, []

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_new_journals_and_renamed_reports_are_durable_names(tmp_path, monkeypatch, recording):
    seen = dir_fsyncs(monkeypatch)
    s = Session.create("packet-loss", {}, {}, tmp_path / "sessions")
    s.close()
    assert seen == [str(tmp_path / "sessions")]
    w = Walk(LIB, recording.context, "packet-loss")
    write_reports(build_report(w, {}), tmp_path / "out")
    assert seen[1:] == [str(tmp_path / "out")] * 3  # after each rename


def test_write_atomic_replaces_whole_files_only(tmp_path, monkeypatch):
    target = tmp_path / "r.md"
    write_atomic(target, "old")
    os.chmod(target, 0o644)

    def crash(src, dst):  # the machine dies between writing the new file and renaming it
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            write_atomic(target, "new")
    assert target.read_text() == "old"  # the old report is intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]  # and no temp file is left
    write_atomic(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o600


def test_host_facts_describe_this_machine():
    from probes.runtime.kernel import detect

    facts = host_facts(detect())
    assert facts["kernel"] == os.uname().release and facts["hostname"] == os.uname().nodename
    assert isinstance(facts["drop_reasons"], int) and facts["btf"] in (True, False)
