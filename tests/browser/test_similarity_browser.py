"""ConceptSimilarityView and InverseSearchView in JupyterLab: one point per channel, click to focus, class bars."""

import json
from pathlib import Path

import pytest
from conftest import ARTIFACTS
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parents[1]

SETUP = f"""
import json, sys, tempfile
import torch
sys.path.insert(0, {str(TESTS)!r})
from zoo import small_cnn
from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.inverse import InverseSearchView
from crp_widgets.widgets.similarity import ConceptSimilarityView
from crp_widgets.widgets.session import ExplorerState, Session

generator = torch.Generator().manual_seed(0)
data = torch.utils.data.TensorDataset(torch.rand(48, 3, 16, 16, generator=generator),
                                      torch.randint(0, 10, (48,), generator=generator))
model = small_cnn(seed=3)
store = scan(CRP(model), data, ["6"], tempfile.mkdtemp(), k=4, class_k=2, batch_size=16, progress=False)
session = Session(model, data, store=store)
state = ExplorerState(sample=2, layer="6", channel=5)
similarity = ConceptSimilarityView(session, state, k=4, neighbours=3)
similarity
"""
INVERSE = """
inverse = InverseSearchView(session, state, steps=6)
inverse
"""
REPORT = """
session.worker.wait(60)
selected = similarity.scatter.selected
print(json.dumps({
    "channel": state.channel, "points": len(similarity.scatter.x),
    "selected": [int(i) for i in (selected if selected is not None else [])],
    "cluster": similarity.cluster, "bars": [str(b) for b in inverse.bars.x], "channels": inverse.channels,
    "curve": len(inverse.lines.x), "errors": [similarity.error, inverse.error],
}))
"""


def kernel(lab, cell=2):
    """Re-run the report cell and read what the kernel holds."""
    return json.loads(lab.run_cell(cell).strip().splitlines()[-1])


def test_similarity_scatter_and_inverse_search(lab):
    page = lab.open_notebook("similarity.ipynb", [SETUP, INVERSE, REPORT])
    shown = kernel(lab)
    assert shown["points"] == 16
    assert shown["errors"] == ["", ""]
    scatter = lab.cell(0).locator(".jp-OutputArea")
    dots = scatter.locator("path.dot")
    expect(dots).to_have_count(16)  # one point per channel of layer "6"
    # Fig. 24 right: the channel in focus and its 3 most similar channels with their references.
    expect(scatter.locator("img")).not_to_have_count(0)

    # Click another point: the kernel's state follows, and the cluster below is the new channel's.
    target = next(i for i in range(16) if i != shown["channel"])
    dots.nth(target).click(force=True)
    page.wait_for_timeout(300)
    after = kernel(lab)
    assert after["channel"] == target
    assert after["selected"] == [target]
    assert after["cluster"][0] == target
    assert len(after["cluster"]) == 4

    # Inverse search: one bar per class using the focused channel, and the switch-off curve (step 0 .. 6).
    bars = lab.cell(1).locator(".jp-OutputArea")
    expect(bars.locator("rect.bar")).to_have_count(len(after["bars"]))
    assert len(after["bars"]) == 5
    assert after["channels"] == [target]
    assert after["curve"] == 7
    for name in after["bars"][:1]:
        expect(bars.locator(".tick text", has_text=name).first).to_be_visible()
    # Hovering a point shows that channel's references in the tooltip.
    dots.nth(1).hover(force=True)
    expect(page.locator(".bqplot img, .jp-OutputArea img").first).to_be_visible()
    bars.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "test_inverse_view.png")
    lab.cell(0).scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "test_similarity_views.png", full_page=True)
