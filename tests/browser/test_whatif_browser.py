"""The what-if view in JupyterLab on the demo world: switch channels off, sweep an insertion, read the plots."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SETUP = """
import crp_widgets as cw
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.whatif import WhatIfView
demo = cw.demo.load(40)
session = Session(demo.model, demo.dataset)
state = ExplorerState(sample=8, layer="features.conv4")  # a solid cross without the watermark
view = WhatIfView(session, state)
view
"""
PRINT_SWITCH = """
r = view.result
print(f"factors={r.factors} before={r.before.prediction.tolist()} after={r.after.prediction.tolist()}")
"""
PRINT_SWEEP = """
c = view.curve
print(f"points={len(c.alphas)} target={c.target} region={view.region.value} donor={view.donor.value}")
"""


POINTS = """(selector) => Array.from(document.querySelectorAll(selector), (path) =>
  (path.getAttribute("d") || "").split(/[ML]/).filter((part) => part.trim()).length)"""
# The class scores are horizontal bars: their widths are the scores.
WIDTHS = (
    """(selector) => Array.from(document.querySelectorAll(selector), (rect) => Number(rect.getAttribute("width")))"""
)


def set_readout(view, css, value):
    """Type a value into an ipywidgets slider's editable readout, as a user does."""
    readout = view.locator(f"{css} .widget-readout")
    readout.click()
    view.page.keyboard.press("ControlOrMeta+a")
    view.page.keyboard.type(str(value))
    view.page.keyboard.press("Enter")


def test_switching_off_top_channels_and_an_insertion_sweep(lab):
    page = lab.open_notebook("whatif.ipynb", [SETUP, "", ""])
    view = page.locator(".crpw-whatif")
    summary = view.locator(".crpw-whatif-summary")
    expect(summary).to_contain_text("select channels of features.conv4")
    bars = ".crpw-whatif-scores .bargroup rect"
    assert page.evaluate(WIDTHS, bars) == []

    # Switch off the three most relevant channels: the bars appear and the kernel's prediction changed.
    view.locator(".crpw-whatif-top").click()
    expect(summary).to_contain_text("off: prediction")
    expect(page.locator(bars)).to_have_count(20)  # 10 classes, before and after
    off = page.evaluate(WIDTHS, bars)
    match = re.search(r"factors=(\{.*\}) before=(\[.*\]) after=(\[.*\])", lab.run_cell(1, PRINT_SWITCH))
    assert match, lab.output(1)
    factors, before, after = (eval(group) for group in match.groups())  # the kernel's own printout
    assert sorted(factors.values()) == [0.0, 0.0, 0.0]
    expect(view.locator(".crpw-whatif-channels input")).to_have_value(re.compile(r"^\d+, \d+, \d+$"))
    assert max(abs(a - b) for a, b in zip(before, after)) > 0.5
    assert before.index(max(before)) == 8  # solid cross, before the edit

    # Doubling them instead updates the "after" bars live.
    view.locator(".crpw-whatif-switch").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "whatif_switch.png")
    set_readout(view, ".crpw-whatif-factor", 2)
    expect(summary).to_contain_text("\N{MULTIPLICATION SIGN} 2")
    page.wait_for_function(f"(off) => JSON.stringify(({WIDTHS})('{bars}')) !== JSON.stringify(off)", arg=off)

    # Insert the watermark of a green cross (scene 9) into the solid cross: an 11-point alpha sweep.
    donor = view.locator(".crpw-whatif-donor input")
    donor.fill("9")
    donor.press("Enter")
    expect(view.locator(".crpw-whatif-region select option", has_text="watermark")).to_have_count(1)
    view.locator(".crpw-whatif-region select").select_option("watermark")
    set_readout(view, ".crpw-whatif-alpha", 1)
    at_alpha = view.locator(".crpw-whatif-at-alpha")
    expect(at_alpha).to_contain_text("at alpha 1.00: prediction green cross")
    curves = ".crpw-whatif-outputs .curve path.line"
    page.wait_for_function(f"() => ({POINTS})('{curves}').filter((n) => n === 11).length === 10")
    relevance = page.evaluate(POINTS, ".crpw-whatif-relevance .curve path.line")
    assert relevance == [11] * 5
    output = lab.run_cell(2, PRINT_SWEEP)
    assert "points=11 target=9 region=watermark donor=9" in output, output
    view.locator(".crpw-whatif-sweep").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "whatif_sweep.png", full_page=True)
