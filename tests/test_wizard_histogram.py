"""The live Summary of a histogram probe draws the log2 histogram (textual-plotext).

The latency probes attach kprobes, which this host's kernel lacks (CONFIG_KPROBES unset), so
their records cannot be produced here: this test replays a SYNTHETIC recording of
system-latency-summary whose records are built exactly as the probe builds them
(probes/stage_latency.py: Log2Hist(...).summary() per stage pair).
"""

from __future__ import annotations

import pytest

from vocab.hist import Log2Hist
from tests.wizard_pilot import SIZE, choose, screen_text, to_context, wait_for, wait_screen
from wizard.app import NetsleuthApp
from wizard.backends import ReplayBackend
from wizard.replay import Recorder, Recording
from wizard.screens.findings import FindingsScreen
from wizard.screens.live import LiveSummaryScreen
from wizard.screens.question import QuestionScreen
from wizard.screens.step import StepScreen
from wizard.widgets.charts import Log2Plot

pytestmark = pytest.mark.asyncio

# OVS processing (stage 1 -> 2): most packets 8-15 µs, a tail at 131-262 ms, as in the guide's case.
OVS_US = [10] * 40 + [12] * 30 + [150_000] * 3
STACK_US = [3] * 50


def latency_record(i: int) -> dict:
    pairs = [
        {"from": "netif_receive", "to": "ovs_process", "total": False, "unit": "us",
         **Log2Hist.from_values(OVS_US).summary()},
        {"from": "ovs_process", "to": "proto_rcv", "total": False, "unit": "us",
         **Log2Hist.from_values(STACK_US).summary()},
    ]
    return {"type": "system_latency_summary", "direction": "rx", "stages": ["netif_receive", "ovs_process",
                                                                           "proto_rcv"],
            "packets_started": 73, "packets_completed": 73, "stage_without_start": 0, "in_flight": 0,
            "pairs": pairs, "time": f"2026-11-25T10:00:0{i}+00:00"}


def synthetic_recording(path):
    rec = Recorder(path, {"hostname": "synthetic", "kernel": "n/a"}, "high-latency",
                   {"phy_interface": "ens11", "direction": "rx"})
    run = rec.start_run("system-latency-summary", {"phy-interface": "ens11", "direction": "rx"},
                        "high-latency/system-latency-summary")
    for i in range(3):
        rec.records(run, 0.6 + i, [latency_record(i)])
    rec.end_run(run, "ok", 3.0)
    rec.close()
    return path


async def test_latency_summary_draws_the_histogram(tmp_path):
    path = synthetic_recording(tmp_path / "latency.jsonl")
    app = NetsleuthApp(ReplayBackend(Recording.load(path), 1.0), tmp_path / "sessions")
    async with app.run_test(size=SIZE) as pilot:
        await to_context(pilot, "symptom:high-latency")
        await choose(pilot, "f-phy_interface", "ens11")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        await wait_screen(pilot, QuestionScreen)
        await pilot.press("enter")
        step = await wait_screen(pilot, StepScreen)
        assert step.view.probe == "system-latency-summary" and step.view.unavailable is None
        await pilot.press("ctrl+r")
        live = await wait_screen(pilot, LiveSummaryScreen)
        plot = live.query_one("#live-chart", Log2Plot)
        await wait_for(pilot, lambda: plot.buckets, what="histogram buckets")
        # the highlighted row is the OVS pair (most samples): its buckets, tail included
        counts = {b["low"]: b["count"] for b in plot.buckets}
        assert counts[8] == 70 and counts[131072] == 3  # 10 and 12 µs share the 8-15 bucket
        assert counts[1024] == 0  # the empty buckets between the body and the tail are drawn
        await wait_for(pilot, lambda: "8µs" in screen_text(app), what="bucket labels on the x axis")
        assert "rx netif_receive → ovs_process" in screen_text(app)  # what the chart is of
        await wait_screen(pilot, FindingsScreen, timeout=15)
