"""An exported exploration in Chromium, from file://, with no kernel and no server: a click on a channel shows its
conditional heatmap (the kernel's, pixel for pixel, not blank) and its references, other samples and layers show
theirs, what the file does not hold says so, and no request leaves the page."""

from pathlib import Path

import numpy as np
import pytest
import torch
from page_pixels import grid_cell_pixels
from playwright.sync_api import expect

import crp_widgets as cw
from crp_widgets.render.images import image_to_uint8, overlay

pytestmark = pytest.mark.browser

LAYERS = ["features.conv3", "features.conv4"]
SAMPLES = [9, 3, 0]
CHANNELS, REFERENCES = 8, 6
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "export"
LOCAL = ("file:", "blob:", "data:")  # the page, its own bundles and pictures: nothing leaves the machine

READ_CANVAS = """(selector) => {
  const canvas = document.querySelector(selector);
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  return { width: canvas.width, height: canvas.height, data: Array.from(data) };
}"""
# The spread of every reference picture's pixel values, as the page decoded it (0: a blank picture).
REFERENCE_SPREADS = """() => [...document.querySelectorAll(".crpx-view-gallery .crpw-gallery-tile img")]
.map((image) => {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  let low = 255, high = 0;
  for (let i = 0; i < data.length; i += 4) for (const value of data.subarray(i, i + 3)) {
    low = Math.min(low, value);
    high = Math.max(high, value);
  }
  return high - low;
})"""
ALL_LOADED = """(selector) => [...document.querySelectorAll(selector)]
  .every((image) => image.complete && image.naturalWidth > 0)"""


def canvas_pixels(page, selector):
    """The RGB pixels ``uint8 [H, W, 3]`` of the first canvas matching ``selector``."""
    canvas = page.evaluate(READ_CANVAS, selector)
    return np.array(canvas["data"], dtype=np.uint8).reshape(canvas["height"], canvas["width"], 4)[..., :3]


def not_blank(pixels, blank):
    """The share of pixels that differ visibly from the sample under a heatmap of zeros."""
    return float((np.abs(pixels.astype(int) - blank.astype(int)).max(axis=-1) > 8).mean())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    demo = cw.demo.load(length=200)
    crp = cw.CRP(demo.model)
    store = cw.scan(crp, demo.dataset, LAYERS, tmp_path_factory.mktemp("store"), k=8, progress=False)
    explorer = cw.Explorer(crp, demo.dataset, store=store, classes=demo.classes)
    explorer.state.sample = SAMPLES[0]
    path = explorer.export(tmp_path_factory.mktemp("page") / "exploration.html", samples=SAMPLES, layers=LAYERS,
                           channels=CHANNELS, references=REFERENCES, progress=False)  # fmt: skip
    return path, demo, crp


def test_an_exported_page_works_from_file_without_a_kernel_or_a_request(chromium, exported):
    path, demo, crp = exported
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(path.as_uri())
        expect(page.locator("#crpx-app")).to_have_attribute("data-ready", "true")
        channels = page.locator(".crpx-view-channels")
        heatmaps = page.locator(".crpx-view-heatmaps")
        gallery = page.locator(".crpx-view-gallery")
        expect(page.locator(".crpx-header")).to_contain_text("DemoNet")
        expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(6)  # the explorer's top 6, as in Jupyter

        # A click on the third channel: its conditional heatmap, on the left and in the grid, and its references.
        row = channels.locator(".crpw-bar-row").nth(2)
        channel = int(row.locator(".crpw-bar-label").inner_text())
        row.click()
        expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(1)
        expect(heatmaps.locator(f'.crpw-hm-cell[data-channel="{channel}"] canvas')).to_be_visible()
        expect(heatmaps.locator(".crpw-hm-caption")).to_contain_text(f"only through features.conv4 channel {channel}")
        x, _ = demo.dataset[SAMPLES[0]]
        target = int(crp.predict(x).argmax())
        heatmap = crp.conditional_heatmaps(x, "features.conv4", [channel], target=target)[0]
        expected = overlay(image_to_uint8(x), heatmap, 0.5)
        blank = overlay(image_to_uint8(x), torch.zeros(x.shape[1:]), 0.5)
        for shown in (canvas_pixels(page, ".crpx-view-heatmaps .crpw-hm-canvas"), grid_cell_pixels(page, channel)):
            assert np.abs(shown.astype(int) - expected).max() <= 1  # the kernel's conditional heatmap
            assert not_blank(shown, blank) > 0.05
        expect(gallery.get_by_role("spinbutton", name="Channel")).to_have_value(str(channel))
        expect(gallery.get_by_role("spinbutton", name="k")).to_have_attribute("max", str(REFERENCES))
        tiles = gallery.locator(".crpw-gallery-tile img")
        expect(tiles).to_have_count(REFERENCES)
        page.wait_for_function(ALL_LOADED, arg=".crpx-view-gallery .crpw-gallery-tile img")
        expect(gallery.locator(".crpw-gallery-title")).to_have_text("RelMax (sum)")
        gallery.get_by_label("RelMax vs ActMax").check()
        expect(gallery.locator(".crpw-gallery-title")).to_have_text(["RelMax (sum)", "ActMax (sum)"])
        expect(tiles).to_have_count(2 * REFERENCES)
        page.wait_for_function(ALL_LOADED, arg=".crpx-view-gallery .crpw-gallery-tile img")
        spreads = page.evaluate(REFERENCE_SPREADS)
        assert len(spreads) == 2 * REFERENCES
        assert min(spreads) > 30, spreads  # pictures, not blank tiles
        expect(gallery.locator(".crpw-note")).to_be_hidden()
        page.screenshot(path=SCREENSHOTS / "page.png", full_page=True)

        # The code of what the heatmaps show, ready to copy.
        heatmaps.locator(".crpw-code-button").click()
        code = heatmaps.locator(".crpw-code-text")
        expect(code).to_contain_text(f"channels = [{channel}]")
        expect(code).to_contain_text('crp.conditional_heatmaps(x, "features.conv4", channels, target=target)')
        expect(code).to_contain_text(f"target = {target}")
        heatmaps.locator(".crpw-code-close").click()

        # A gallery view the file does not hold says so and keeps the references it shows.
        gallery.get_by_role("combobox", name="View").select_option("sample")
        expect(gallery.locator(".crpw-note")).to_contain_text("Not in this file: the full samples of the references")
        expect(tiles).to_have_count(2 * REFERENCES)
        gallery.get_by_role("combobox", name="View").select_option("masked")
        expect(gallery.locator(".crpw-note")).to_be_hidden()
        expect(tiles).to_have_count(2 * REFERENCES)

        # A channel the file holds no heatmap and no references of says so in both views, instead of a blank.
        channels.locator(".crpw-bar-row").nth(CHANNELS + 1).click()
        expect(heatmaps.locator(".crpw-note")).to_contain_text("Not in this file: the heatmaps of channel ")
        expect(heatmaps.locator(".crpw-note")).to_be_visible()
        expect(gallery.locator(".crpw-note")).to_contain_text("Not in this file: the references of channel ")
        expect(gallery.locator(".crpw-note")).to_be_visible()
        channels.locator(".crpw-clear").click()
        expect(heatmaps.locator(".crpw-note")).to_be_hidden()
        expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(6)

        # Another sample and another layer show theirs at once, not blank.
        page.locator(".crpx-view-sample .crpw-thumb").nth(1).click()
        expect(page.locator(".crpw-sample-caption")).to_contain_text(f"sample #{SAMPLES[1]}")
        expect(heatmaps.locator(".crpw-hm-title")).to_contain_text("features.conv4")
        x, _ = demo.dataset[SAMPLES[1]]
        blank = overlay(image_to_uint8(x), torch.zeros(x.shape[1:]), 0.5)
        assert not_blank(canvas_pixels(page, ".crpx-view-sample .crpw-sample-canvas"), blank) > 0.05
        channels.locator(".crpw-layer").select_option("features.conv3")
        expect(heatmaps.locator(".crpw-hm-title")).to_contain_text("features.conv3")
        expect(channels.locator(".crpw-legend-for")).to_have_text(f"features.conv3 for sample #{SAMPLES[1]}")
        assert channels.locator(".crpw-layer option").all_inner_texts() == LAYERS  # the layers the file holds
        expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(6)
        first = int(heatmaps.locator(".crpw-hm-cell").first.get_attribute("data-channel"))
        assert not_blank(grid_cell_pixels(page, first), blank) > 0.05
        expect(heatmaps.locator(".crpw-note")).to_be_hidden()
        expect(tiles).to_have_count(2 * REFERENCES)  # the references of conv3's channel in focus
        expect(gallery.locator(".crpw-note")).to_be_hidden()

        # The atlas with its legend, and the attribution graph of the layer's channel in focus.
        page.locator(".crpx-tab", has_text="Concept atlas").click()
        atlas = page.locator(".crpx-view-atlas")
        expect(atlas.locator(".crpw-atlas-concept")).to_have_count(5)
        expect(atlas.locator(".crpw-atlas-canvas")).to_be_visible()
        page.locator(".crpx-tab", has_text="Attribution graph").click()
        graph = page.locator(".crpx-view-graph")
        expect(graph.locator(".crpw-graph-node").first).to_be_visible()
        expect(graph.locator(".crpw-note")).to_be_hidden()
        graph.evaluate("(node) => node.scrollIntoView({block: 'start'})")
        page.screenshot(path=SCREENSHOTS / "graph.png")
    finally:
        page.close()
    assert [url for url in requests if not url.startswith(LOCAL)] == []
    assert problems == []
