"""Autopilot over recordings (no root, no BPF), recording format, exit codes, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.autopilot_scenario import RECORDING
from tests.netenv import NETSLEUTH, ROOT
from wizard.replay import RecordedBackend, RecordedProbe, Recorder, Recording, RecordingError

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []


def run(*args: str, user: list[str] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*user, *NETSLEUTH, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def shared():
    """A directory an unprivileged user can reach and write to (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="netsleuth-test-"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_replay_headless_without_root_reaches_the_recorded_causes(shared):
    rec = shared / "rec.jsonl.gz"
    shutil.copy(RECORDING, rec)
    os.chmod(rec, 0o644)
    proc = run("replay", str(rec), "--autopilot", "--report", str(shared / "report"),
               "--sessions", str(shared / "sessions"), user=AS_NOBODY)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads((shared / "report" / "report.json").read_text())
    assert data["mode"] == "autopilot" and data["host"]["replayed_from"] == str(rec)
    causes = {f["rule"]: f for f in data["findings"] if f["explains"]}
    assert set(causes) == {"reason-netfilter", "reason-no-socket"}
    assert causes["reason-netfilter"]["evidence"]["flow"]["dst_port"] == 9999
    assert causes["reason-no-socket"]["evidence"]["flow"]["dst_port"] == 9997
    steps = [t for t in data["timeline"] if t["kind"] == "step"]
    recorded = Recording.load(rec)
    assert [(t["probe"], t["params"]) for t in steps] == [(r.probe, r.params) for r in recorded.runs]
    assert [t["command"] for t in steps] == [r.command for r in recorded.runs]
    assert all(t["duration_s"] == r.duration_s for t, r in zip(steps, recorded.runs))
    # The session was journaled as the unprivileged user, privately.
    (journal,) = (shared / "sessions").glob("*.jsonl")
    assert journal.stat().st_mode & 0o777 == 0o600


def test_replay_with_no_drops_finds_no_cause_and_says_what_is_next(shared):
    rec = shared / "quiet.jsonl"
    r = Recorder(rec, {"hostname": "quiet-host"}, "packet-loss", {"dst_ip": "10.9.9.9", "reported_loss": 50})
    run_id = r.start_run("drop-summary", {"dst-ip": "10.9.9.9"}, "packet-loss/drop-summary",
                         "netsleuth probe drop-summary --dst-ip 10.9.9.9 --duration 3")
    for i in range(3):
        r.records(run_id, i + 1.0, [{"type": "drop_summary", "time": "2026-11-25T10:00:00+00:00",
                                     "interval_s": 1.0, "total": 0, "uncounted_table_full": 0,
                                     "attach": "tracepoint skb:kfree_skb", "group_by": "all", "entries": []}])
    r.end_run(run_id, "ok", 3.0)
    r.close()
    os.chmod(rec, 0o644)
    proc = run("replay", str(rec), "--autopilot", "--report", str(shared / "out"), "--sessions", str(shared / "s"),
               user=AS_NOBODY)
    assert proc.returncode == 4, proc.stderr
    data = json.loads((shared / "out" / "report.json").read_text())
    assert data["conclusion"]["cause_found"] is False and data["conclusion"]["state"] == "open"
    # the lesson (all 50 are late) and, as the typo in an address it may be, the advice to check the filters
    assert [f["rule"] for f in data["findings"]] == ["latency-not-loss", "no-drops"]
    assert data["conclusion"]["summary"].startswith("0 of the 50 packets reported lost are real drops; "
                                                    "the other 50 are latency: not measured yet.")
    assert any(f.startswith("Check the filters") for f in data["conclusion"]["fixes"])
    nxt = data["next_steps"][0]
    assert nxt["step"] == "high-latency/system-latency-summary"
    assert nxt["unavailable"].startswith("not in this recording")
    assert "Next step: Which stage of the host path is slow?" in data["conclusion"]["summary"]


@pytest.mark.parametrize("args, exit_code, message", [
    (["diagnose", "--symptom", "packet-loss", "--dst-ip", "300.1.1.1", "--autopilot", "--report", "R"], 2,
     "netsleuth diagnose: --dst-ip: '300.1.1.1' is not valid; expected an IPv4 address"),
    (["diagnose", "--symptom", "printer-on-fire", "--autopilot", "--report", "R"], 2,
     "netsleuth diagnose: --symptom: 'printer-on-fire' is not valid; expected one of high-latency, ovs-slow"),
    (["diagnose", "--symptom", "packet-loss", "--autopilot"], 2, "--autopilot needs --report DIR"),
    (["diagnose", "--symptom", "packet-loss", "--device", "no-such-if0", "--autopilot", "--report", "R"], 2,
     "--device: 'no-such-if0' is not valid; expected an existing interface"),
    (["diagnose", "--symptom", "packet-loss", "--duration", "soon", "--autopilot", "--report", "R"], 2,
     "--duration: 'soon' is not valid; expected a number of seconds"),
    (["replay", "/etc/hostname", "--autopilot", "--report", "R"], 2,
     "netsleuth replay: /etc/hostname:1: not JSON"),
    (["replay", "/nonexistent.jsonl", "--autopilot", "--report", "R"], 2, "cannot read"),
    (["replay", "CORRUPT", "--autopilot", "--report", "R"], 2, "corrupt.jsonl:3: 'record' line: 't' must be a number"),
    (["replay", "CORRUPT"], 2, "corrupt.jsonl:3: 'record' line: 't' must be a number"),
    (["diagnose", "--symptom", "packet-loss", "--autopilot", "--report", "R", "--record", "CORRUPT"], 2,
     "--record: CORRUPT exists; give a new file name (or remove it)"),
    (["diagnose", "--symptom", "packet-loss", "--autopilot", "--report", "R", "--record", "CORRUPT/x.jsonl"], 2,
     "--record: cannot write CORRUPT/x.jsonl: CORRUPT is not a writable directory"),
])
def test_bad_input_is_one_line_and_exit_2(args, exit_code, message, tmp_path):
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"type": "recording", "version": 1}\n{"type": "run", "run": 1, "probe": "drop-summary"}\n'
                       '{"type": "record", "run": 1, "t": "abc", "record": {}}\n')
    names = {"R": str(tmp_path / "R"), "CORRUPT": str(corrupt)}
    proc = run(*[names.get(a, a).replace("CORRUPT/", f"{corrupt}/") for a in args]
               + ["--sessions", str(tmp_path / "sessions")])
    assert proc.returncode == exit_code
    assert message.replace("CORRUPT", str(corrupt)) in one_line_error(proc)
    # nothing half-started is left behind: no session journal, the existing file untouched
    assert not list((tmp_path / "sessions").glob("*.jsonl"))
    assert corrupt.read_text().startswith('{"type": "recording"')


@pytest.mark.skipif(os.geteuid() != 0, reason="shows the unprivileged path by dropping root")
def test_diagnose_without_privileges_exits_3_and_still_reports(shared):
    proc = run("diagnose", "--symptom", "packet-loss", "--dst-ip", "10.9.9.9", "--autopilot", "--duration", "1",
               "--report", str(shared / "out"), "--sessions", str(shared / "s"), user=AS_NOBODY)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "needs root" in proc.stderr
    data = json.loads((shared / "out" / "report.json").read_text())
    (step,) = [t for t in data["timeline"] if t["kind"] == "step"]
    assert step["status"] == "unavailable" and "needs root" in step["error"]
    assert step["command"] == "netsleuth probe drop-summary --dst-ip 10.9.9.9"
    # The conclusion says what could not run and why (not "nothing abnormal"), once.
    c = data["conclusion"]
    assert c["state"] == "nothing-ran" and c["summary"].startswith("Nothing could run: drop-summary: ")
    assert "needs root" in c["summary"]
    md = (shared / "out" / "report.md").read_text()
    assert "**No result.** Nothing could run: drop-summary:" in md and "No cause found" not in md


# --- the recording format ----------------------------------------------------------------------

def test_a_recording_is_a_new_private_file(tmp_path):
    old = os.umask(0)
    try:
        r = Recorder(tmp_path / "new.jsonl", {}, "packet-loss", {})
        r.close()
    finally:
        os.umask(old)
    assert (tmp_path / "new.jsonl").stat().st_mode & 0o777 == 0o600
    (tmp_path / "mine.jsonl").write_text("my notes\n")
    with pytest.raises(RecordingError, match="mine.jsonl exists"):
        Recorder(tmp_path / "mine.jsonl", {}, "packet-loss", {})
    assert (tmp_path / "mine.jsonl").read_text() == "my notes\n"


def test_recorded_probe_paces_or_serves_at_once(tmp_path):
    rec = tmp_path / "r.jsonl"
    r = Recorder(rec, {}, "packet-loss", {})
    run_id = r.start_run("drop-details", {"dst-ip": "10.0.0.2"})
    r.records(run_id, 0.0, [{"type": "drop", "n": 1}])
    r.records(run_id, 0.4, [{"type": "drop", "n": 2}, {"type": "drop", "n": 3}])
    r.end_run(run_id, "ok", 0.5)
    r.close()
    recording = Recording.load(rec)
    paced = RecordedProbe(recording.runs[0], speed=1.0)
    paced.start()
    assert [x["n"] for x in paced.read()] == [1]
    t0 = time.monotonic()
    paced.wait(2.0)
    assert 0.2 < time.monotonic() - t0 < 1.0  # waited for the next record's offset, not the timeout
    assert [x["n"] for x in paced.read()] == [2, 3] and not paced.exhausted  # 0.4 s of a 0.5 s run
    paced.wait(2.0)  # all served: waits for the end of the recorded run, not the timeout
    assert paced.exhausted and time.monotonic() - t0 < 1.5
    at_once = RecordedBackend(recording).build("drop-details", {"dst_ip": "10.0.0.2"})
    at_once.start()
    assert [x["n"] for x in at_once.read()] == [1, 2, 3]


def test_recorded_backend_matches_runs_by_params(tmp_path):
    rec = tmp_path / "r.jsonl"
    r = Recorder(rec, {}, "packet-loss", {})
    for port in (9999, 9997):
        run_id = r.start_run("drop-details", {"dst-port": port}, command=f"cmd {port}")
        r.records(run_id, 0.1, [{"type": "drop", "port": port}])
        r.end_run(run_id, "ok", 1.0)
    r.close()
    b = RecordedBackend(Recording.load(rec))
    assert b.availability("drop-details") is None
    assert b.availability("drop-summary").startswith("not in this recording")
    assert b.availability("no-such-probe") == "not implemented in this version of netsleuth"
    p = b.build("drop-details", {"dst_port": 9997, "duration": 86400})
    p.start()
    assert p.read() == [{"type": "drop", "port": 9997}] and p.command_line() == "cmd 9997"
    assert b.command_line("drop-details", {"dst_port": 9999}) == "cmd 9999"


@pytest.mark.parametrize("lines, message", [
    (['{"type": "session"}'], "no 'recording' header line"),
    (['{"type": "recording", "version": 99}'], "recording version 99"),
    (['{"type": "recording", "version": 1}', '{"type": "record", "run": 5, "t": 0, "record": {}}',
      '{"type": "run_end", "run": 5}'], "record of run 5 before its 'run' line"),
    (['{"type": "recording", "version": 1}', '{"type": "banana"}', '{}'], "unknown line type 'banana'"),
    (['{"type": "recording", "version": 1}', '{"type": "ru', '{"type": "run_end", "run": 1}'], r"bad.jsonl:2: not JSON"),
    (['{"type": "recor'], r"bad.jsonl:1: not JSON"),
    ([], "empty file"),
    (['{"type": "recording", "version": 1}', '{"type": "run", "probe": "drop-summary"}', '{}'],
     r"bad.jsonl:2: 'run' line: 'run' must be an integer, got None"),
    (['{"type": "recording", "version": 1}', '{"type": "run", "run": 1}', '{}'],
     r"bad.jsonl:2: 'run' line: 'probe' must be text, got None"),
    (['{"type": "recording", "version": 1}', '{"type": "run", "run": 1, "probe": "x", "params": [1]}', '{}'],
     r"bad.jsonl:2: 'run' line: 'params' must be an object"),
    (['{"type": "recording", "version": 1}', '{"type": "run", "run": 1, "probe": "x"}',
      '{"type": "record", "run": 1, "t": 1.0}', '{}'], r"bad.jsonl:3: 'record' line: 'record' must be an object"),
    (['{"type": "recording", "version": 1}', '{"type": "run", "run": 1, "probe": "x"}',
      '{"type": "record", "run": 1, "t": "abc", "record": {}}', '{}'],
     r"bad.jsonl:3: 'record' line: 't' must be a number, got 'abc'"),
])
def test_bad_recordings(tmp_path, lines, message):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match=message):
        Recording.load(p)


def test_a_recording_cut_short_by_a_crash_keeps_what_was_written(tmp_path):
    p = tmp_path / "cut.jsonl"
    p.write_text("\n".join([
        '{"type": "recording", "version": 1, "symptom": "packet-loss"}',
        '{"type": "run", "run": 1, "probe": "drop-summary", "params": {"dst_port": 53}}',
        '{"type": "record", "run": 1, "t": 0.5, "record": {"type": "drop_summary", "total": 3}}',
        '{"type": "record", "run": 1, "t": 1.0, "rec',
    ]))
    rec = Recording.load(p)
    (run,) = rec.runs
    assert rec.symptom == "packet-loss" and run.probe == "drop-summary"
    assert run.records == [(0.5, {"type": "drop_summary", "total": 3})]


def test_autopilot_takes_the_fallback_of_a_step_that_cannot_run():
    from playbooks import Walk, load_library
    from probes.registry import PROBES
    from wizard.autopilot import Autopilot

    lib = load_library(probes=PROBES)
    backend = RecordedBackend(Recording.load(RECORDING))
    walk = Walk(lib, {"vm_interface": "veth-nf0"}, start="vm-network/tun-ring-monitor",
                availability=backend.availability)
    said: list[str] = []
    statuses = Autopilot(lib, backend, log=said.append).walk(walk, max_steps=2)
    assert statuses == ["unavailable", "ok"]
    assert [fr.ref for fr in walk.frames][:2] == ["vm-network/tun-ring-monitor", "vm-network/tun-drop-details"]
    assert any("cannot run tun-ring-monitor here" in line for line in said)


def test_an_interrupted_autopilot_exits_5_with_a_report(shared):
    """SIGTERM while a (paced) recorded run plays: a distinct exit code, not 'no cause found'."""
    import signal

    rec = shared / "rec.jsonl.gz"
    shutil.copy(RECORDING, rec)
    os.chmod(rec, 0o644)
    proc = subprocess.Popen([*AS_NOBODY, *NETSLEUTH, "replay", str(rec), "--autopilot", "--speed", "0.5",
                             "--report", str(shared / "out"), "--sessions", str(shared / "s")],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.lstrip().startswith("running:") for line in lines):
            lines.append(proc.stderr.readline())
            assert lines[-1], "".join(lines)
        time.sleep(1.0)  # into the first run (6 s at this pace)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        assert proc.wait(30) == 5, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err
    data = json.loads((shared / "out" / "report.json").read_text())
    (step,) = [t for t in data["timeline"] if t["kind"] == "step"]
    assert step["status"] == "stopped" and 0 < step["duration_s"] < Recording.load(rec).runs[0].duration_s
