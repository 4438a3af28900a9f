"""The global importance view (AfI, Wu et al. 2020) in JupyterLab on the demo world: learn, compare, click a channel."""

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SETUP = """
import json
import crp_widgets as cw
from crp_widgets.widgets.occluder import GlobalImportanceView
from crp_widgets.widgets.session import ExplorerState, Session
demo = cw.demo.load(60)
session = Session(demo.model, demo.dataset)
state = ExplorerState(sample=9, layer="features.conv4")  # a green cross: the explained class by default
view = GlobalImportanceView(session, state, steps=10, samples=6)
view
"""
REPORT = """
session.worker.wait(60)
o, a = view.occluder, view.agreement
print(json.dumps({
    "channel": state.channel, "error": view.error, "cls": None if o is None else o.cls,
    "rate": None if o is None else view._learned["rate"], "points": len(view.scatter.x),
    "top": None if a is None else a.top_importance[0], "overlap": None if a is None else a.overlap,
}))
"""


def kernel(lab):
    """Re-run the report cell and read what the kernel holds."""
    return json.loads(lab.run_cell(1).strip().splitlines()[-1])


def test_learn_an_occluder_compare_and_click_a_channel(lab):
    page = lab.open_notebook("occluder.ipynb", [SETUP, REPORT, ""])
    view = page.locator(".crpw-occluder")
    view.locator(".crpw-occluder-learn").click()
    expect(view.locator(".crpw-occluder-rate")).to_be_visible(timeout=60_000)
    dots = view.locator(".crpw-occluder-figure path.dot")
    expect(dots).to_have_count(96)  # one point per channel of features.conv4
    shown = kernel(lab)
    assert shown["error"] == ""
    assert shown["cls"] == 9  # green cross
    assert shown["points"] == 96
    expect(view.locator(".crpw-occluder-rate")).to_have_text(f"{shown['rate']:.0%}")
    expect(view.locator(".crpw-occluder-overlap")).to_have_text(f"{shown['overlap']:.0%}")
    expect(view.locator(".crpw-occluder-pictures img")).to_have_count(4)

    # Clicking the point of AfI's most important channel (the highest point, importance 1) focuses that channel.
    assert shown["channel"] is None
    dots.nth(shown["top"]).click()
    deadline = page.evaluate("Date.now()") + 20_000
    while (now := kernel(lab))["channel"] is None and page.evaluate("Date.now()") < deadline:
        page.wait_for_timeout(200)
    assert now["channel"] == shown["top"]
    view.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "occluder_view.png", full_page=True)
