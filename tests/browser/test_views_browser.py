"""The sample view, the channel selector and the conditional heatmaps, linked in JupyterLab and driven in Chromium."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from page_pixels import grid_cell_pixels
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parents[1]
ARTIFACTS = TESTS.parent / "test-artifacts"  # where the harness saves its screenshots

# Coloured squares and discs on a light, slightly noisy background: the heatmaps have something to outline.
SETUP = f"""
import sys
import tempfile
sys.path.insert(0, {str(TESTS)!r})
import ipywidgets
import torch
from zoo import small_cnn
from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.channels import ChannelSelector
from crp_widgets.widgets.heatmaps import ConditionalHeatmaps
from crp_widgets.widgets.sample import SampleView
from crp_widgets.widgets.session import ExplorerState, Session

class Shapes(torch.utils.data.Dataset):
    classes = ["square", "disc", "red square", "red disc", "wide", "tall", "small", "large", "pale", "dark"]

    def __len__(self):
        return 40

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        image = 0.8 + 0.1 * torch.rand(3, 32, 32, generator=generator)
        rows, columns = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        cy, cx = torch.randint(10, 22, (2,), generator=generator).tolist()
        if index % 2:
            mask = (rows - cy) ** 2 + (columns - cx) ** 2 < 50
        else:
            mask = ((rows - cy).abs() < 7) & ((columns - cx).abs() < 7)
        colour = torch.rand(3, 1, 1, generator=generator).expand(3, 32, 32)
        return torch.where(mask, colour, image), index % 10

crp = CRP(small_cnn(seed=3))
references = scan(crp, Shapes(), ["6"], tempfile.mkdtemp(), k=6, progress=False)
session = Session(crp, Shapes(), store=references)
state = ExplorerState()
sample_view = SampleView(session, state, page_size=12)
selector = ChannelSelector(session, state)
heatmaps = ConditionalHeatmaps(session, state)
sample_view
"""
LINKED = "ipywidgets.HBox([selector, heatmaps])"
PRINT_STATE = 'print(f"sample={state.sample} target={state.target} layer={state.layer} conditions={state.conditions}")'

# The kernel's own overlay of the first grid heatmap, for a pixel-exact comparison with the canvas.
PRINT_EXPECTED_CELL = """
import json
from crp_widgets.render.images import overlay
x = session.input(state)
explained = session.explained_class(x, state.target)
others = {k: v for k, v in state.conditions.items() if k != state.layer}
grid = session.crp.conditional_heatmaps(x, state.layer, state.conditions[state.layer], explained, others)
print("expected=" + json.dumps(overlay(session.display(x), grid[0], 0.5).tolist()))
"""

WIDE = """
torch.manual_seed(0)
wide = torch.nn.Sequential(
    torch.nn.Conv2d(3, 512, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    torch.nn.Linear(512, 10),
).eval()
wide_state = ExplorerState()
wide_selector = ChannelSelector(Session(wide, Shapes()), wide_state)
wide_selector
"""
PRINT_WIDE = """
ranked = wide_selector.ranking[:, 0].astype(int).tolist()
print(f"wide conditions={wide_state.conditions} ranked={ranked}")
"""


def open_linked(lab):
    """Open the notebook with the three views; return the page once the bars and the grid are drawn."""
    page = lab.open_notebook("views.ipynb", [SETUP, LINKED, PRINT_STATE, ""])
    expect(page.locator(".crpw-sample .crpw-thumb")).to_have_count(12)
    expect(page.locator(".crpw-channels .crpw-bar-row")).to_have_count(10)
    expect(page.locator(".crpw-heatmaps .crpw-hm-cell")).to_have_count(6)
    return page


def kernel_state(lab):
    output = lab.run_cell(2)
    match = re.search(r"sample=(\d+) target=(\S+) layer=(\S+) conditions=(.*)", output)
    assert match, output
    return match.groups()


def test_clicking_a_channel_updates_the_heatmap_grid_and_the_kernel_state(lab):
    page = open_linked(lab)
    selector, heatmaps = page.locator(".crpw-channels"), page.locator(".crpw-heatmaps")
    expect(heatmaps.locator(".crpw-hm-title")).to_contain_text("of 6: top 6")
    expect(selector.locator(".crpw-conditions")).to_contain_text("none")

    # Hovering a channel previews its reference samples (receptive-field crops from the store).
    selector.locator(".crpw-bar-row").first.hover()
    expect(selector.locator(".crpw-preview img")).to_have_count(6)
    expect(selector.locator(".crpw-preview")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "views_reference_preview.png")

    row = selector.locator(".crpw-bar-row").nth(2)
    channel = int(row.locator(".crpw-bar-label").inner_text())
    share = row.locator(".crpw-bar-share").inner_text()
    row.click()
    expect(row).to_have_attribute("aria-selected", "true")
    expect(selector.locator(".crpw-chip")).to_have_text([f"{channel} \N{MULTIPLICATION SIGN}"])
    expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(1)
    cell = heatmaps.locator(f'.crpw-hm-cell[data-channel="{channel}"]')
    expect(cell.locator(".crpw-hm-channel")).to_have_text(f"channel {channel}")
    expect(cell.locator(".crpw-hm-share")).to_have_text(share)
    expect(heatmaps.locator(".crpw-hm-title")).to_contain_text("of 6: selected")
    expect(heatmaps.locator(".crpw-hm-caption")).to_contain_text(f"only through 6 channel {channel} · sample #0")
    assert kernel_state(lab)[3] == f"{{'6': [{channel}]}}"

    # The grid cell is the kernel's conditional heatmap, coloured and blended in the browser to the same bytes.
    expected = np.array(json.loads(lab.run_cell(3, PRINT_EXPECTED_CELL).split("expected=")[1]), dtype=np.uint8)
    np.testing.assert_array_equal(grid_cell_pixels(page, channel), expected)

    # Removing the chip drops the condition: back to the top-k grid.
    selector.locator(".crpw-chip").click()
    expect(heatmaps.locator(".crpw-hm-cell")).to_have_count(6)
    assert kernel_state(lab)[3] == "{}"
    heatmaps.scroll_into_view_if_needed()


def test_switching_the_target_class_and_the_sample_updates_every_view(lab):
    page = open_linked(lab)
    sample, heatmaps = page.locator(".crpw-sample"), page.locator(".crpw-heatmaps")
    caption = sample.locator(".crpw-sample-explained figcaption")
    expect(caption).to_contain_text("sample #0")
    ranking_before = page.locator(".crpw-channels .crpw-bar-label").all_inner_texts()

    # Explain a class other than the prediction.
    prediction = sample.locator("select.crpw-target option").first.inner_text()
    name, index = ("pale", 8) if "large" in prediction else ("large", 7)
    sample.locator("select.crpw-target").select_option(label=name)
    expect(caption).to_contain_text(f"Relevance for “{name}”")
    expect(heatmaps.locator(".crpw-hm-caption")).to_have_text(f"Relevance for {name} · sample #0")
    expect(heatmaps.locator(".crpw-hm-caption")).to_have_attribute("title", re.compile(rf"R\(x \| y = {name}\)"))
    assert kernel_state(lab)[1] == str(index)
    expect(page.locator(".crpw-channels .crpw-bar-label")).not_to_have_text(ranking_before)

    # Keyboard: two thumbnails to the right, one row down, Enter explains sample 8.
    grid = sample.locator(".crpw-thumbs")
    grid.focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Enter"):
        page.keyboard.press(key)
    expect(caption).to_contain_text("sample #8")
    expect(sample.locator('.crpw-thumb[aria-selected="true"]')).to_have_attribute("data-index", "8")
    assert kernel_state(lab)[:2] == ("8", str(index))

    # Paging: the next page holds samples 12-23; the selection stays with sample 8.
    sample.locator(".crpw-page-next").click()
    expect(sample.locator(".crpw-thumb").first).to_have_attribute("data-index", "12")
    expect(sample.locator(".crpw-page-input")).to_have_value("2")
    sample.locator("select.crpw-target").select_option(value="")
    expect(heatmaps.locator(".crpw-hm-caption")).not_to_contain_text(name)
    assert kernel_state(lab)[1] == "None"
    expect(sample.locator(".crpw-page-input")).to_have_value("2")
    sample.scroll_into_view_if_needed()


def test_an_error_shows_inside_the_widgets_and_they_keep_working(lab):
    page = open_linked(lab)
    selector, heatmaps = page.locator(".crpw-channels"), page.locator(".crpw-heatmaps")
    lab.run_cell(3, 'state.layer = "features.99"')
    for widget in (selector, heatmaps):
        expect(widget.get_by_role("alert")).to_contain_text("unknown layer 'features.99'")
    expect(page.locator(".crpw-sample .crpw-error")).to_be_empty()
    selector.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "views_error_shown.png")

    # The views keep working: a valid layer from the dropdown clears the errors and redraws.
    selector.locator("select.crpw-layer").select_option("4")
    for widget in (selector, heatmaps):
        expect(widget.locator(".crpw-error")).to_be_empty()
    expect(heatmaps.locator(".crpw-hm-title")).to_contain_text("of 4: top 6")
    expect(selector.locator(".crpw-bar-row")).to_have_count(10)
    assert kernel_state(lab)[2] == "4"

    # A failing computation (a class the model does not have) shows too, and the next valid choice clears it.
    lab.run_cell(3, "state.target = 42")
    expect(heatmaps.get_by_role("alert")).to_contain_text("class index 42 is out of range")
    lab.run_cell(3, "state.target = 1")
    expect(heatmaps.locator(".crpw-error")).to_be_empty()
    selector.scroll_into_view_if_needed()


def test_show_all_keeps_512_channels_readable_and_keyboard_usable(lab):
    page = lab.open_notebook("wide.ipynb", [SETUP, WIDE, PRINT_WIDE])
    selector = page.locator(".crpw-channels")
    expect(selector.locator(".crpw-bar-row")).to_have_count(10)
    selector.locator(".crpw-show-all").check()
    expect(selector.locator(".crpw-channel-count")).to_have_text("512 of 512 channels")
    rows = selector.locator(".crpw-bar-row")
    expect(rows.first).to_be_visible()
    assert rows.count() < 40  # virtualised: only the rows in view exist

    # Keyboard: End moves to the last channel (scrolling it into view), Space toggles it.
    ranked = json.loads(lab.run_cell(2).split("ranked=")[1].strip())
    selector.locator(".crpw-bars").focus()
    page.keyboard.press("End")
    last = selector.locator('.crpw-bar-row[data-index="511"]')
    expect(last).to_be_visible()
    expect(last.locator(".crpw-bar-label")).to_have_text(str(ranked[-1]))
    page.keyboard.press("Space")
    expect(last).to_have_attribute("aria-selected", "true")
    assert f"wide conditions={{'0': [{ranked[-1]}]}}" in lab.run_cell(2)
    selector.scroll_into_view_if_needed()
