"""The explorer on a vision transformer and on an EfficientNet (torchvision, ``weights=None``), in JupyterLab and
Chromium: the layer menu offers the model's blocks by stage, and clicking a channel draws its conditional heatmap,
the kernel's own picture to the byte and not blank."""

import json
from pathlib import Path

import numpy as np
import pytest
from page_pixels import grid_cell_pixels
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parents[1]

# name -> (constructor, the stage its last block belongs to)
MODELS = {
    "vit_b_16": ("torchvision.models.vit_b_16(weights=None, image_size=64, num_classes=10)", "encoder.layers"),
    "efficientnet_b0": ("torchvision.models.efficientnet_b0(weights=None, num_classes=10)", "features"),
}

SETUP = """
import sys
sys.path.insert(0, {tests!r})
import json
import numpy as np
import torch
import torchvision
from architectures import calibrate
import crp_widgets as cw

torch.manual_seed(0)
model = calibrate({constructor}, 64)  # BatchNorm statistics re-estimated on random images
if hasattr(model, "heads"):
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.05)  # torchvision starts a ViT's head at zero: every logit 0
generator = torch.Generator().manual_seed(0)
images = torch.rand(8, 3, 64, 64, generator=generator)
dataset = torch.utils.data.TensorDataset(images, torch.arange(8) % 2)
explorer = cw.Explorer(model, dataset, classes=[f"class {{i}}" for i in range(10)])
explorer
"""

# What the kernel shows for the channel clicked: the state, and its conditional heatmap blended as the page does
# (saved to a file: printed, the pixels would push the explorer out of the page).
PRINT_CELL = """
import tempfile
from crp_widgets.render.images import overlay
state, session = explorer.state, explorer.session
x = session.input(state)
explained = session.explained_class(x, state.target)
channels = state.conditions.get(state.layer, [])
grid = np.zeros((0, 1, 1)) if explorer.heatmaps.grid is None else np.asarray(explorer.heatmaps.grid)
heatmap = session.crp.conditional_heatmaps(x, state.layer, channels[:1], explained)[0] if channels else None
pictures = tempfile.mktemp(suffix=".npz")
if heatmap is not None:
    opacity = explorer.heatmaps.opacity
    np.savez(pictures, expected=overlay(session.display(x), heatmap, opacity),
             blank=overlay(session.display(x), torch.zeros(x.shape[1:]), opacity))
print(json.dumps({
    "layer": state.layer, "conditions": state.conditions, "errors": [explorer.heatmaps.error, explorer.channels.error],
    "grid_sum": float(np.abs(grid).sum()), "finite": bool(np.isfinite(grid).all()),
    "heatmap_sum": None if heatmap is None else float(heatmap.abs().sum()), "pictures": pictures,
}))
"""


def kernel_view(lab):
    return json.loads(lab.run_cell(1).strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(MODELS))
def test_clicking_a_channel_draws_its_conditional_heatmap(lab, name):
    constructor, stage = MODELS[name]
    page = lab.open_notebook(f"{name}.ipynb", [SETUP.format(tests=str(TESTS), constructor=constructor), PRINT_CELL])
    explorer = page.locator(".crpw-explorer")
    channels, heatmaps = explorer.locator(".crpw-channels"), explorer.locator(".crpw-heatmaps")
    expect(channels.locator(".crpw-bar-row")).to_have_count(10)

    # The layer menu: the model's blocks grouped by stage, the last block chosen.
    menu = channels.locator("select.crpw-layer")
    groups = menu.locator("optgroup").evaluate_all("(nodes) => nodes.map((node) => node.label)")
    assert stage in groups, groups
    chosen = menu.evaluate("(select) => [select.value, select.selectedOptions[0].parentElement.label]")
    assert chosen[1] == stage
    state = kernel_view(lab)
    assert state["layer"] == chosen[0]

    # Click the second channel: its conditional heatmap, alone in the grid, as the kernel computed it.
    row = channels.locator(".crpw-bar-row").nth(1)
    channel = int(row.locator(".crpw-bar-label").inner_text())
    row.click()
    expect(row).to_have_attribute("aria-selected", "true")
    expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(1)
    expect(heatmaps.locator(f'.crpw-hm-cell[data-channel="{channel}"] canvas')).to_be_visible()
    expect(heatmaps.locator(".crpw-hm-caption")).to_contain_text(f"only through {chosen[0]} channel {channel}")
    expect(explorer.locator(".crpw-busy:visible")).to_have_count(0)
    state = kernel_view(lab)
    assert state["conditions"] == {chosen[0]: [channel]}
    assert state["errors"] == ["", ""]
    assert state["finite"]
    assert state["grid_sum"] > 0
    assert state["heatmap_sum"] > 0  # not blank in the kernel
    with np.load(state["pictures"]) as pictures:
        expected, blank = pictures["expected"], pictures["blank"]
    Path(state["pictures"]).unlink()
    pixels = grid_cell_pixels(page, channel)
    np.testing.assert_array_equal(pixels, expected)  # the page draws the kernel's heatmap to the byte
    # not blank in the page: the picture is not the image under a heatmap of zeros
    changed = np.abs(pixels.astype(int) - blank.astype(int)).max(axis=-1) > 8
    assert changed.mean() > 0.05, changed.mean()
    explorer.evaluate("(node) => node.scrollIntoView({block: 'start'})")
