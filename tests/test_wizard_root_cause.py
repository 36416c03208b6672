"""Tier 3 in the app, over real runs of the root-cause probes (tests/data/recordings/
wizard-root-cause.jsonl.gz, made by tests.wizard_pilot.record_root_cause_fixture on this
kernel): stacks read frame by frame in the live Details, the process's CPU each second on a
timeline with the burst marked."""

from __future__ import annotations

import re

import pytest

from tests.wizard_pilot import ROOT_CAUSE, SIZE, replay_app, wait_for, wait_screen
from wizard.replay import Recording
from wizard.report import build_report, render_html, render_markdown
from wizard.screens.context import ContextScreen
from wizard.screens.messages import SymptomChosen
from wizard.screens.findings import FindingsScreen
from wizard.screens.live import LiveDetailsScreen
from wizard.screens.preflight import PreflightScreen
from wizard.screens.step import StepScreen
from wizard.widgets.charts import TimelinePlot

pytestmark = pytest.mark.asyncio
RUNS = {r.probe: r for r in Recording.load(ROOT_CAUSE).runs}


def recorded(probe: str, rtype: str) -> list[dict]:
    return [r for _, r in RUNS[probe].records if r["type"] == rtype]


async def run_step(pilot, step: str) -> None:
    """From the preflight straight to a root-cause step (the recording's context), then run it."""
    app = pilot.app
    await wait_screen(pilot, PreflightScreen)
    await wait_for(pilot, lambda: not app.screen.query_one("#continue").disabled, what="preflight")
    await pilot.press("enter")
    app.post_message(SymptomChosen("ovs-slow", step))
    await wait_screen(pilot, ContextScreen)
    await pilot.press("ctrl+n")
    await wait_screen(pilot, StepScreen)
    await pilot.press("ctrl+r")


async def live_view(pilot, step: str) -> LiveDetailsScreen:
    await run_step(pilot, step)
    return await wait_screen(pilot, LiveDetailsScreen)


def detail_lines(live) -> list[str]:
    return str(live.query_one("#event-detail").render()).splitlines()


async def test_lock_wait_shows_both_stacks_frame_by_frame(tmp_path):
    (wait,) = recorded("pthread-lock", "lock_wait")
    app = replay_app(tmp_path, speed=1.0, recording=ROOT_CAUSE)
    async with app.run_test(size=SIZE) as pilot:
        live = await live_view(pilot, "ovs-slow/pthread-lock")
        await wait_for(pilot, lambda: live.query_one("#live-events").items, what="the lock wait")
        lines = detail_lines(live)
        # who waited, who held it, which lock: first; then the stacks, one frame a line
        assert lines[:4] == [f"waiter_comm: {wait['waiter_comm']}", f"waiter_tid: {wait['waiter_tid']}",
                             f"holder_comm: {wait['holder_comm']}", f"holder_tid: {wait['holder_tid']}"]
        for title, frames in (("stack", wait["stack"]), ("holder stack", wait["holder_stack"])):
            at = lines.index(f"{title}:")
            assert lines[at + 1: at + 1 + len(frames)] == [f"  {f}" for f in frames]
        assert not any("['" in line for line in lines)  # no Python list printed
        await wait_screen(pilot, FindingsScreen, timeout=20)


async def test_offcpu_block_shows_kernel_then_user_stack_once(tmp_path):
    blocks = recorded("offcpu", "offcpu_block")
    app = replay_app(tmp_path, speed=1.0, recording=ROOT_CAUSE)
    async with app.run_test(size=SIZE) as pilot:
        live = await live_view(pilot, "ovs-slow/offcpu")
        table = live.query_one("#live-events")
        await wait_for(pilot, lambda: len(table.items) == len(blocks), what="the blocks")
        block = table.selected()
        lines = detail_lines(live)
        assert lines[0] == f"comm: {block['comm']}" and f"blocked_in: {block['blocked_in']}" in lines
        kernel, user = lines.index("kernel stack:"), lines.index("user stack:")
        assert lines[kernel + 1: user] == [f"  {f}" for f in block["kernel_stack"]]
        assert lines[user + 1: user + 1 + len(block["user_stack"])] == [f"  {f}" for f in block["user_stack"]]
        assert "stack:" not in lines  # kernel + user joined: not a third time
        assert sum(line == f"  {block['user_stack'][0]}" for line in lines) == 1
        await wait_screen(pilot, FindingsScreen, timeout=20)


async def test_cpu_burst_draws_the_cpu_each_second_with_the_burst_marked(tmp_path):
    samples = recorded("cpu-burst", "cpu_sample")
    (burst,) = recorded("cpu-burst", "cpu_burst")
    app = replay_app(tmp_path, speed=1.0, recording=ROOT_CAUSE)
    async with app.run_test(size=SIZE) as pilot:
        live = await live_view(pilot, "ovs-slow/cpu-burst")
        plot = live.query_one("#live-chart", TimelinePlot)
        await wait_for(pilot, lambda: live.query_one("#live-events").items, what="the burst")
        seen = list(plot.points)
        assert seen == [(s["cpu_pct"], s["above_threshold"]) for s in samples[:len(seen)]]
        assert any(marked for _, marked in seen) and any(not marked for _, marked in seen)
        assert "CPU of the process, % per second" in "\n".join(
            strip.text for strip in app.screen._compositor.render_strips())
        assert live.query_one("#live-events").items[0]["peak_pct"] == burst["peak_pct"]
        await wait_screen(pilot, FindingsScreen, timeout=20)


async def test_the_report_draws_the_cpu_timeline_with_the_burst_marked(tmp_path):
    samples = recorded("cpu-burst", "cpu_sample")
    above = sum(s["above_threshold"] for s in samples)
    app = replay_app(tmp_path, speed=0.0, recording=ROOT_CAUSE)
    async with app.run_test(size=SIZE) as pilot:
        await run_step(pilot, "ovs-slow/cpu-burst")
        await wait_screen(pilot, FindingsScreen, timeout=20)
        rep = build_report(app.walk, {})
    (step,) = [t for t in rep["timeline"] if t.get("probe") == "cpu-burst"]
    chart = step["key_results"]["chart"]
    assert [p[1:] for p in chart["points"]] == [[s["cpu_pct"], s["above_threshold"]] for s in samples]
    md = render_markdown(rep)
    assert (f"CPU of the process, % per second: {len(samples)} points, "
            f"peak {max(s['cpu_pct'] for s in samples):g}, {above} marked (above_threshold): ") in md
    svg = re.search(r'<svg [^>]*class="chart".*?</svg>', render_html(rep)).group(0)
    assert svg.count('class="mark"') == above and svg.count('class="bar"') == len(samples) - above
