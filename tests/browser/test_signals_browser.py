"""The explorer on the 1-D demo in JupyterLab (Achtibat et al. 2023, Sec. 3.5): line plots render, a channel click
updates the conditional heatmap lines, a drag on the time axis sets the region in the kernel, the gallery and the
attribution graph show 1-D references."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SETUP = """
import json
import tempfile
import numpy as np
import crp_widgets as cw
signals = cw.demo.load_signals(length=240)
store = cw.scan(cw.CRP(signals.model), signals.dataset, ["features.conv2", "features.conv3"], tempfile.mkdtemp(),
                k=4, progress=False)
explorer = cw.Explorer(signals.model, signals.dataset, store=store)
explorer
"""
PROBE = """
from crp_widgets.widgets.signal import region_interval
view = explorer.heatmaps
print("probe=" + json.dumps({
    "conditions": explorer.state.conditions,
    "region": region_interval(explorer.state.region),
    "info": view.channel_info,
    "lines": [[float(np.abs(f.marks[0].y).sum()), int(np.argmax(f.marks[0].y))] for f in view._channel_box.children],
    "gallery": [len(explorer.gallery.images), [list(i.shape) for i in explorer.gallery.images[:1]]],
}))
"""


def probe(lab, cell):
    output = lab.run_cell(cell)
    match = re.search(r"probe=(\{.*\})", output)
    assert match, output
    return json.loads(match.group(1))


def idle(view):
    expect(view.locator(".crp-panel-status")).not_to_contain_text("computing", timeout=30_000)


def test_signal_explorer_plots_brushes_and_shows_references(lab):
    page = lab.open_notebook("signals.ipynb", [SETUP, PROBE])
    signal = page.locator(".crpw-signal")
    expect(signal).to_be_visible()
    # The signal (two input channels), its relevance and four channel heatmaps are bqplot line plots.
    expect(signal.locator(".bqplot")).to_have_count(6)
    expect(signal.locator(".bqplot").first.locator("path.line")).to_have_count(2)
    expect(signal).to_contain_text("Relevance for ")
    expect(page.locator(".crpw-sample .crpw-thumb").first).to_be_visible()  # thumbnails as line plots
    idle(signal)
    before = probe(lab, 1)
    assert before["region"] is None
    assert len(before["info"]["channels"]) == 4

    # Clicking a channel conditions on it: one heatmap line, titled with the channel, in the kernel too.
    channels = page.locator(".crpw-channels")
    row = channels.locator(".crpw-bar-row").nth(2)
    channel = int(row.locator(".crpw-bar-label").inner_text())
    row.click()
    expect(signal.locator(".bqplot")).to_have_count(3)
    expect(signal.locator(".bqplot").nth(2)).to_contain_text(f"ch {channel} ")
    idle(signal)
    clicked = probe(lab, 1)
    assert clicked["conditions"] == {"features.conv3": [channel]}
    assert clicked["info"]["channels"] == [channel]
    assert clicked["lines"][0] != before["lines"][0]
    channels.locator(".crpw-chip").first.click()  # back to the top channels
    expect(signal.locator(".bqplot")).to_have_count(6)

    # A drag on the time axis of the signal plot sets state.region and ranks the channels inside it.
    plot = signal.locator(".bqplot").first.locator("svg").first
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    y = box["y"] + box["height"] * 0.45
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.3 + 0.03 * step), y, steps=2)
    page.mouse.up()
    expect(signal).to_contain_text("ranked inside t = ")
    idle(signal)
    brushed = probe(lab, 1)
    start, end = brushed["region"]
    assert 20 < start < end < 256
    assert brushed["info"]["region"] == [start, end]
    signal.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "signals_region.png")

    # The gallery shows the focused channel's references as line plots.
    page.locator(".lm-TabBar-tab", has_text="References").click()
    gallery = page.locator(".crpw-gallery")
    expect(gallery.locator(".crpw-gallery-image")).to_have_count(4)
    images = probe(lab, 1)["gallery"]
    assert images == [4, [[96, 96, 3]]]
    gallery.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "signals_gallery.png")

    # The attribution graph's nodes show 1-D reference crops and heatmaps under the signal.
    page.locator(".lm-TabBar-tab", has_text="Attribution graph").click()
    graph = page.locator(".crpw-graph")
    expect(graph.locator(".crpw-graph-card").first).to_be_visible()
    expect(graph.locator(".crpw-graph-heatmap").first).to_be_visible()
    graph.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "signals_graph.png")
