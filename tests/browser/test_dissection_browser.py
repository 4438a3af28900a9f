"""Dissection labels in the channel selector and the gallery, and the class profiles view (Islam & Tushar 2021), in
JupyterLab."""

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SETUP = """
import json, tempfile
import ipywidgets
import crp_widgets as cw
from crp_widgets.engine.dissection import dissect
from crp_widgets.widgets.channels import ChannelSelector
from crp_widgets.widgets.gallery import ReferenceGallery
from crp_widgets.widgets.graph import AttributionGraphView
from crp_widgets.widgets.profiles import ClassProfilesView
from crp_widgets.widgets.session import ExplorerState, Session
demo = cw.demo.load(300)
crp = cw.CRP(demo.model)
store = cw.scan(crp, demo.dataset, ["features.conv4"], tempfile.mkdtemp(), k=4, progress=False)
session = Session(crp, demo.dataset, store=store, classes=demo.classes)
labels = dissect(crp, demo.dataset, "features.conv4", demo.masks)  # Network Dissection over 300 images
session.label("features.conv4", labels)
state = ExplorerState(sample=9, layer="features.conv4")
selector = ChannelSelector(session, state)
gallery = ReferenceGallery(session, state, k=4)
profiles = ClassProfilesView(session, state, per_class=2, steps=2)
graph = AttributionGraphView(session, state, width=[2])
ipywidgets.VBox([ipywidgets.HBox([selector, gallery]), graph, profiles])
"""
REPORT = """
session.worker.wait(60)
top = int(selector.ranking[0][0])
state.channel = top if state.channel is None else state.channel
concept, iou = labels.label(top)
focus = labels.label(state.channel)
print(json.dumps({"top": top, "concept": concept, "iou": iou, "channel": state.channel, "focus": focus,
                  "profiles": sorted(profiles.profiles), "error": profiles.error}))
"""


def kernel(lab):
    return json.loads(lab.run_cell(1).strip().splitlines()[-1])


def test_labels_show_in_the_selector_and_gallery_and_profiles_render(lab):
    page = lab.open_notebook("dissection.ipynb", [SETUP, REPORT, ""])
    shown = kernel(lab)
    selector = page.locator(".crpw-channels")
    expect(selector.locator(".crpw-bar-row")).to_have_count(10)
    first = selector.locator(".crpw-bar-row").first
    # The label and its IoU sit next to the channel number, bar and share.
    expect(first.locator(".crpw-bar-concept")).to_have_text(f"{shown['concept'] or 'none'} {shown['iou']:.2f}")
    expect(first.locator(".crpw-bar-label")).to_have_text(str(shown["top"]))
    expect(selector.locator(".crpw-bar-concept")).to_have_count(10)

    gallery = page.locator(".crpw-gallery")
    concept, iou = shown["focus"]
    expect(gallery.locator(".crpw-gallery-concept")).to_have_text(
        f"Concept (Network Dissection): {concept or 'none'}, IoU {iou:.3f}"
    )
    expect(gallery.locator(".crpw-gallery-tile")).to_have_count(4)  # the references stay

    # The graph's root (a features.conv4 channel) carries its label on its heatmap tile, next to its reference.
    root = page.locator(".crpw-graph-root")
    expect(root.locator(".crpw-graph-concept text")).to_have_text(f"{concept or 'none'} {iou:.2f}")
    expect(root.locator(".crpw-graph-thumbnail")).to_have_count(1)
    page.locator(".crpw-graph-svg").screenshot(path=ARTIFACTS / "dissection_graph.png")

    view = page.locator(".crpw-profiles")
    view.locator(".crpw-profiles-compute").click()
    cells = view.locator(".crpw-profiles-heatmap-crp rect")
    page.wait_for_function(
        "() => document.querySelectorAll('.crpw-profiles-heatmap-ig rect').length >= 40", timeout=60_000
    )
    assert cells.count() >= 40  # 10 classes x 4 layers
    after = kernel(lab)
    assert after["profiles"] == ["crp", "ig"]
    assert after["error"] == ""
    expect(view.locator(".crpw-profiles-bars rect.bar")).not_to_have_count(0)
    view.screenshot(path=ARTIFACTS / "dissection_profiles.png")
    page.locator(".crpw-channels").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "dissection_labels.png")
