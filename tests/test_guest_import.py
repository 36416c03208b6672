"""A guest probe's `--json` file brought back into a session: checked, merged and judged by the
rules, from `netsleuth diagnose --guest-records` and from the wizard's step; a file that is not
such a record is one line and the session goes on.

tests/data/virtnet_records.json holds what the probe wrote in the lab guest on a real virtio-net
NIC, with the NIC's own counts (tests/lab/virtio_checks.py); the probe's counts are checked
there, the import and the rules here."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from playbooks import Walk
from tests.netenv import NETSLEUTH, ROOT
from tests.test_playbooks_engine import LIB, merged
from tests.wizard_pilot import SIZE, flat_text, pick, replay_app, to_context, wait_for, wait_screen
from wizard.guestimport import GuestFileError, load_guest_file

DATA = json.loads((Path(__file__).resolve().parent / "data" / "virtnet_records.json").read_text())
STEP = "vm-network/virtnet-poll-monitor"


def write(tmp_path: Path, records: list, name: str = "guest.json") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def rules(records: list[dict]) -> dict:
    w = Walk(LIB, {}, "vm-network", start=STEP)
    return {f.rule: f for f in w.complete("ok", merged("virtnet-poll-monitor", records))}


def test_the_records_have_the_documented_fields():
    from tests.test_ovs_output_doc import documented
    doc = Path(__file__).resolve().parent.parent / "docs" / "output-virt.md"
    for r in DATA["burst"] + DATA["trickle"]:
        assert set(r) == documented('"virtnet_poll"', doc)


def test_a_burst_runs_the_budget_out_on_a_single_queue():
    found = rules(DATA["burst"])
    assert set(found) == {"napi-budget-exhausted", "virtnet-single-queue"}
    f = found["napi-budget-exhausted"]
    assert f.evidence["total_packets"] == DATA["burst_truth"]["rx_packets"]
    assert f.evidence["total_budget_exhausted"] > 0 and f.evidence["max_budget"] == DATA["weight"]
    text = " ".join(f.advice)
    assert "net.core.netdev_budget" in text and f"ethtool -L {DATA['device']} combined" in text
    assert f"ethtool -C {DATA['device']}" in text


def test_a_trickle_finds_nothing():
    assert rules(DATA["trickle"]) == {}


def test_an_interrupt_per_packet_is_interrupt_bound():
    """The trickle's records, made fast: one packet per poll and per interrupt, 40,000 a second."""
    records = copy.deepcopy(DATA["trickle"])
    for r in records:
        r["polls"] = r["packets"] = r["interrupts"] = 40_000
    f = rules(records)["virtnet-interrupt-bound"]
    assert "ethtool -C" in " ".join(f.advice)


def test_one_queue_of_many_and_a_ring_not_refilled():
    """The burst's records with the NIC given 4 queues and its ring found empty after polls."""
    records = copy.deepcopy(DATA["burst"])
    for r in records:
        r["rx_queues"], r["rx_free_max"] = 4, r["ring_size"]
    found = rules(records)
    assert {"virtnet-one-queue", "virtnet-rx-not-refilled"} <= set(found)
    assert "virtnet-single-queue" not in found


def test_a_guest_file_is_one_run_of_its_probe(tmp_path):
    run = load_guest_file(write(tmp_path, DATA["burst"]), LIB)
    assert run.probe == "virtnet-poll-monitor" and [r for _, r in run.records] == DATA["burst"]
    first = DATA["burst"][0]
    assert f"in guest {first['hostname']} (kernel {first['kernel']})" in run.command
    assert run.command.startswith("sudo netsleuth probe virtnet-poll-monitor --duration ")


@pytest.mark.parametrize("lines, message", [
    ([], "no records"),
    (["{not json"], ":1: not JSON"),
    ([{"type": "drop_summary", "entries": []}], ":1: not a record of a probe run in a guest (type 'drop_summary'"),
    (["[1, 2]"], ":1: not a record of a probe run in a guest (type None"),
    ([{**DATA["burst"][0], "hostname": ""}], ":1: the record does not say which guest it is from (no hostname)"),
    ([DATA["burst"][0], {"type": "tun_ring"}], ":2: not a record of a probe run in a guest"),
])
def test_a_file_that_is_not_a_guest_record_is_one_line(tmp_path, lines, message):
    path = write(tmp_path, lines)
    with pytest.raises(GuestFileError) as e:
        load_guest_file(path, LIB)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_file_taken_on_this_host_is_refused(tmp_path):
    import os
    import socket
    here = {**DATA["burst"][0], "hostname": socket.gethostname(), "kernel": os.uname().release}
    with pytest.raises(GuestFileError, match="taken on this host"):
        load_guest_file(write(tmp_path, [here]), LIB)


def diagnose(tmp_path, *extra):
    return subprocess.run(NETSLEUTH + ["diagnose", "--symptom", "vm-network", "--autopilot", "--max-steps", "1",
                                       "--report", str(tmp_path / "report"), "--sessions", str(tmp_path / "s"),
                                       *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_diagnose_judges_the_guest_file_and_the_report_names_the_guest(tmp_path):
    cp = diagnose(tmp_path, "--guest-records", str(write(tmp_path, DATA["burst"])))
    assert "Traceback" not in cp.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    first = DATA["burst"][0]
    assert f"in guest {first['hostname']} (kernel {first['kernel']}), imported from" in report
    assert "NAPI runs out of budget on" in report and "net.core.netdev_budget" in report
    assert f"{DATA['burst_truth']['rx_packets']:,} packets" in report


def test_diagnose_with_a_bad_guest_file_is_one_line(tmp_path):
    cp = diagnose(tmp_path, "--guest-records", str(write(tmp_path, [{"type": "drop_summary"}])))
    assert cp.returncode == 2 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert "--guest-records:" in cp.stderr and "not a record of a probe run in a guest" in cp.stderr


async def to_guest_step(pilot):
    from wizard.screens.question import QuestionScreen
    from wizard.screens.step import StepScreen
    await to_context(pilot, "symptom:vm-network")
    await pilot.press("ctrl+n")
    await wait_screen(pilot, QuestionScreen)
    await pick(pilot, "#answers", "2")  # "Yes — it is vhost, virtio, the tap device or interrupts"
    await wait_screen(pilot, QuestionScreen)
    await wait_for(pilot, lambda: pilot.app.screen.question.ask.startswith("Which part"), what="which-part")
    await pick(pilot, "#answers", "2")  # virtio-net inside the guest
    return await wait_screen(pilot, StepScreen)


@pytest.mark.asyncio
async def test_the_wizard_step_imports_the_guest_file(tmp_path):
    """The step shows the guest's command; a bad file is an error line and the step stays; the
    good file is judged like a run."""
    from textual.widgets import Input
    from wizard.screens.findings import FindingsScreen
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        step = await to_guest_step(pilot)
        assert "sudo netsleuth probe virtnet-poll-monitor --duration 30 --json > virtnet-poll-monitor.json" \
            in flat_text(app)
        field = step.query_one("#guest-file", Input)
        field.value = str(write(tmp_path, ["{not json"], "bad.json"))
        field.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: "not JSON" in flat_text(app), what="the error line")
        assert "bad.json:1:" in flat_text(app)
        assert app.screen is step and app.session is not None
        field.value = str(write(tmp_path, DATA["burst"]))
        await pilot.press("enter")
        findings = await wait_screen(pilot, FindingsScreen, timeout=20)
        assert findings.result.result["entries"][0]["total_packets"] == DATA["burst_truth"]["rx_packets"]
        assert "in guest" in findings.result.command
        assert {f.rule for f in findings.findings} >= {"napi-budget-exhausted"}
