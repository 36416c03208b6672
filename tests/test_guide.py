"""The guide ships with the product: docs/guide.md, linked from the README and opened from the
wizard's help and symptom screen; nothing points into a directory a user's clone lacks."""

from __future__ import annotations

import re

import pytest

from playbooks import load_library
from probes.registry import PROBES
from tests.netenv import ROOT
from tests.wizard_pilot import SIZE, flat_text, replay_app, wait_screen
from wizard.screens.dialogs import GUIDE, GuideScreen, HelpScreen
from wizard.screens.preflight import PreflightScreen
from wizard.screens.symptom import SymptomScreen


def test_the_guide_is_in_the_product_and_the_readme_links_it():
    assert GUIDE == ROOT / "docs" / "guide.md" and GUIDE.is_file()
    readme = (ROOT / "README.md").read_text()
    assert "](docs/guide.md)" in readme
    assert "../shared" not in readme and "DIGEST" not in readme
    text = GUIDE.read_text()
    for heading in ("## 2. The decision tree", "### Quick reference", "## 3. The tools, tier by tier",
                    "## 4. A case"):
        assert heading in text
    # Every probe the playbooks know is described under its netsleuth name, and every quick
    # reference row of the playbooks has its row in the guide's table.
    lib = load_library(probes=PROBES)
    implemented = [p for p in lib.probes if not p.startswith(("tun-", "vhost-", "virt", "kvm-"))]
    assert [p for p in implemented if f"`{p}`" not in text] == []
    rows = re.findall(r"^\| ([^|]+) \|", text.split("### Quick reference", 1)[1], re.M)
    assert len([r for r in rows if r.strip() not in ("problem", "---")]) == len(lib.quick_reference)


@pytest.mark.asyncio
async def test_help_and_symptom_screen_open_the_guide(tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, PreflightScreen)
        await pilot.press("enter")
        await wait_screen(pilot, SymptomScreen)
        assert "The guide" in flat_text(app)  # the footer says g opens it
        await pilot.press("g")
        await wait_screen(pilot, GuideScreen)
        assert "Three tiers, from cheap and coarse" in flat_text(app)
        await pilot.press("escape")
        await wait_screen(pilot, SymptomScreen)
        await pilot.press("question_mark")
        await wait_screen(pilot, HelpScreen)
        assert "docs/guide.md" in flat_text(app)
        await pilot.press("g")
        await wait_screen(pilot, GuideScreen)
        scroll = app.screen.query_one("#guide-scroll")
        await pilot.press("pagedown")
        await pilot.pause(0.2)
        assert scroll.scroll_y > 0  # a person reads on with the keys
