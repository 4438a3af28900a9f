"""The decision view in JupyterLab on the demo world: relevance distribution, counts, flipping curves, bar clicks."""

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SETUP = """
import json
import crp_widgets as cw
from crp_widgets.widgets.flipping import DecisionView
from crp_widgets.widgets.session import ExplorerState, Session
demo = cw.demo.load(40)
session = Session(demo.model, demo.dataset)
state = ExplorerState(sample=9, layer="features.conv4")  # a green cross with the watermark
view = DecisionView(session, state, steps=24, repeats=4)
view
"""
REPORT = """
session.worker.wait(60)
d, f = view.distribution, view.flipping
print(json.dumps({
    "channel": state.channel, "conditions": state.conditions, "bars": [str(c) for c in view.bars.x],
    "counts": [d.counts[q] for q in (0.85, 0.9, 0.95)], "steps": len(f["most"].steps),
    "drops": [f["most"].drops[q] for q in (0.85, 0.9, 0.95)], "error": view.error,
}))
"""

POINTS = """(selector) => Array.from(document.querySelectorAll(selector), (path) =>
  (path.getAttribute("d") || "").split(/[ML]/).filter((part) => part.trim()).length)"""


def kernel(lab):
    """Re-run the report cell and read what the kernel holds."""
    return json.loads(lab.run_cell(1).strip().splitlines()[-1])


def test_distribution_counts_curves_and_a_bar_click(lab):
    page = lab.open_notebook("decision.ipynb", [SETUP, REPORT, ""])
    view = page.locator(".crpw-decision")
    bars = view.locator(".crpw-decision-bars .bargroup rect")
    expect(bars).to_have_count(96)  # one bar per channel of features.conv4
    shown = kernel(lab)
    assert shown["error"] == ""
    counts = " / ".join(map(str, shown["counts"]))
    expect(view.locator(".crpw-decision-counts")).to_have_text(counts)
    expect(view.locator(".crpw-decision-drops")).to_have_text(" / ".join(map(str, shown["drops"])))
    for label in (f"85 %: {shown['counts'][0]}", f"95 %: {shown['counts'][2]}"):
        expect(view.locator(".crpw-decision-cumulative svg.svg-figure")).to_contain_text(label)
    # Three flipping curves (most, least, random) and their bands, one point per step.
    steps = shown["steps"]
    curves = ".crpw-decision-flipping .curve path.line"
    page.wait_for_function(f"() => ({POINTS})('{curves}').filter((n) => n === {steps}).length === 9")
    cumulative = page.evaluate(POINTS, ".crpw-decision-cumulative .curve path.line")
    assert 96 in cumulative

    # Clicking the bar of the second most relevant channel selects it in the shared state.
    assert shown["channel"] is None
    bars.nth(1).click()
    channel = int(shown["bars"][1])
    deadline = page.evaluate("Date.now()") + 20_000
    while (now := kernel(lab))["channel"] is None and page.evaluate("Date.now()") < deadline:
        page.wait_for_timeout(200)
    assert now["channel"] == channel
    assert now["conditions"] == {"features.conv4": [channel]}
    expect(view.locator(".crpw-decision-selection")).to_contain_text(f"channel {channel} of features.conv4: rank 2")
    view.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "decision_view.png", full_page=True)
