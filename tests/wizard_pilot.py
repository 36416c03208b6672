"""Helpers for driving the wizard with Textual's Pilot over recorded data."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from textual.widgets import Input, OptionList, Select

from wizard.app import NetsleuthApp
from wizard.backends import ReplayBackend
from wizard.replay import Recording
from wizard.screens.context import ContextScreen
from wizard.screens.preflight import PreflightScreen
from wizard.screens.symptom import SymptomScreen

RECORDINGS = Path(__file__).resolve().parent / "data" / "recordings"
# A real run on this host, made by record_fixture() below: `netsleuth diagnose --symptom
# packet-loss --autopilot --record` while UDP datagrams went from a namespace (10.253.2.2:40000)
# to a closed port (10.253.2.1:6353) over a veth pair: drop-summary, then drop-details with the
# flow's filters.  The tests assert the numbers it holds (104 drops, ...).
PACKET_LOSS = RECORDINGS / "wizard-packet-loss-closed-port.jsonl.gz"
SIZE = (80, 24)


def recorded_facts(recording: Path = PACKET_LOSS) -> dict:
    """Ground truth read straight from the recording: what the screens must show."""
    rec = Recording.load(recording)
    summary = next(r for r in rec.runs if r.probe == "drop-summary")
    records = [r for _, r in summary.records if r.get("type") == "drop_summary"]
    device = next(e["device"] for r in records for e in r["entries"])
    details = next(r for r in rec.runs if r.probe == "drop-details")
    return {"summary_total": sum(r["total"] for r in records), "device": device,
            "details_events": sum(1 for _, r in details.records if r.get("type") == "drop")}


def replay_app(tmp_path: Path, speed: float = 0.0, recording: Path = PACKET_LOSS, backend=None) -> NetsleuthApp:
    backend = backend or ReplayBackend(Recording.load(recording), speed)
    return NetsleuthApp(backend, tmp_path / "sessions")


def screen_text(app) -> str:
    """What the terminal shows, as plain text lines."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


# Box-drawing characters (a notification's or a panel's border): a wrapped line inside a box
# has one between its words.
_BOX = re.compile("[\u2500-\u257f]")


def flat_text(app) -> str:
    """The screen's words on one line (wrapped lines joined, borders and padding collapsed)."""
    return " ".join(_BOX.sub(" ", screen_text(app)).split())


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def wait_screen(pilot, cls, timeout: float = 10.0):
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, cls), timeout, f"screen {cls.__name__}")
    await pilot.pause(0.05)
    return pilot.app.screen


async def pick(pilot, selector: str, option_id: str) -> None:
    """Highlight an option by id with the keyboard (↓ until it is highlighted), then Enter."""
    ol = pilot.app.screen.query_one(selector, OptionList)
    ol.focus()
    for _ in range(ol.option_count + 1):
        if ol.highlighted is not None and ol.get_option_at_index(ol.highlighted).id == option_id:
            break
        await pilot.press("down")
    else:
        raise AssertionError(f"no option {option_id} in {selector}")
    await pilot.press("enter")


async def to_context(pilot, option: str = "symptom:packet-loss"):
    """Preflight (once its checks are done) -> symptom list -> `option` -> the context form."""
    await wait_screen(pilot, PreflightScreen)
    await wait_for(pilot, lambda: not pilot.app.screen.query_one("#continue").disabled, what="preflight")
    await pilot.press("enter")
    await wait_screen(pilot, SymptomScreen)
    await pick(pilot, "#symptoms", option)
    return await wait_screen(pilot, ContextScreen)


async def type_into(pilot, field_id: str, text: str) -> None:
    """Focus a form field, clear it and type like a person."""
    w = pilot.app.screen.query_one("#" + field_id, Input)
    w.focus()
    await pilot.pause(0.01)
    w.value = ""
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.pause(0.05)


async def choose(pilot, field_id: str, value: str) -> None:
    """Open a Select, move down to the value with the keyboard, press Enter."""
    sel = pilot.app.screen.query_one("#" + field_id, Select)
    values = [v for _, v in sel._options]  # as the overlay lists them (blank first when allowed)
    start = values.index(sel.value) if sel.value in values else 0
    sel.focus()
    await pilot.press("enter")
    await pilot.pause(0.05)
    for _ in range(values.index(value) - start):
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause(0.05)
    assert sel.value == value, f"{field_id}: wanted {value!r}, got {sel.value!r}"


def field_error(app, dest: str) -> str:
    """The inline error text under a form field ("" when valid)."""
    field = app.screen.query_one("#f-" + dest).parent.parent
    return str(field.query_one(".param-error").render())


def run(coro):
    return asyncio.run(coro)


def record_fixture(out: Path = PACKET_LOSS) -> None:
    """Regenerate PACKET_LOSS from a real run (as root): `python -m tests.wizard_pilot`."""
    import subprocess
    import tempfile
    import threading

    from tests.netenv import ROOT, send_udp, veth_ns

    out.unlink(missing_ok=True)  # regenerating: --record never overwrites a file
    with veth_ns() as env, tempfile.TemporaryDirectory() as tmp:
        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                send_udp(env.host_ip, 6353, 10, ns=env.ns, sport=40000, gap=0.05)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            subprocess.run([str(ROOT / ".venv/bin/netsleuth"), "diagnose", "--symptom", "packet-loss", "--autopilot",
                            "--duration", "6", "--report", tmp, "--record", str(out), "--sessions", tmp,
                            "--dst-ip", env.host_ip, "--l4-protocol", "udp", "--reported-loss", "40"], check=True)
        finally:
            stop.set()
            sender.join()


# Real tier-3 runs on this host, made by record_root_cause_fixture(): the root-cause probes on
# tests/rootcause_target.c — pthread-lock and offcpu while thread "holder" keeps a mutex 200 ms
# and thread "waiter" waits for it, cpu-burst while thread "burner" spins 2.5 s.
ROOT_CAUSE = RECORDINGS / "wizard-root-cause.jsonl.gz"


def record_root_cause_fixture(out: Path = ROOT_CAUSE) -> None:
    """Regenerate ROOT_CAUSE from real runs (as root): `python -m tests.wizard_pilot root-cause`.
    pthread-lock and offcpu watch the same "mutex" target at once; cpu-burst a "burst" one."""
    import subprocess
    import tempfile
    import threading

    from playbooks import load_library
    from probes.registry import PROBES
    from tests.rootcause_support import SOURCE, Target
    from wizard.backends import LiveBackend
    from wizard.flagnames import names
    from wizard.replay import Recorder
    from wizard.steprun import run_source

    lib, backend = load_library(probes=PROBES), LiveBackend()
    targets = [("mutex", [("ovs-slow/pthread-lock", "pthread-lock", {"min_wait_us": 1000}),
                          ("ovs-slow/offcpu", "offcpu", {"min_block_us": 10000})], 4),
               ("burst 2500", [("ovs-slow/cpu-burst", "cpu-burst", {"threshold": 50})], 6)]
    out.unlink(missing_ok=True)  # regenerating: --record never overwrites a file
    lock = threading.Lock()  # one recording, written from each probe's thread
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "target"
        subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", str(binary), str(SOURCE)],
                       check=True)
        recorder = None
        for mode, probes, seconds in targets:
            with Target(binary, *mode.split()) as target:
                if recorder is None:
                    recorder = Recorder(out, backend.host_facts(), "ovs-slow", {"ovs_pid": target.pid})
                workers = []
                for step, probe, options in probes:
                    values = {"pid": target.pid, **options}
                    source = backend.build(probe, values)
                    run = recorder.start_run(probe, names(values), step, source.command_line())
                    attached = threading.Event()

                    def work(source=source, probe=probe, run=run, attached=attached):
                        start = source.start
                        source.start = lambda: (start(), attached.set())

                        def keep(t, records):
                            with lock:
                                recorder.records(run, t, records)

                        o = run_source(source, probe, lib.probes[probe], seconds, on_records=keep)
                        attached.set()
                        with lock:
                            recorder.end_run(run, o.status, o.duration_s, o.error)

                    workers.append((threading.Thread(target=work), attached))
                for thread, attached in workers:
                    thread.start()
                    attached.wait(120)
                target.start()
                target.truth()
                for thread, _ in workers:
                    thread.join()
        recorder.close()


if __name__ == "__main__":
    import sys

    record_root_cause_fixture() if sys.argv[1:] == ["root-cause"] else record_fixture()
