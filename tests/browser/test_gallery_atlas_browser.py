"""The concept atlas and the reference gallery in JupyterLab: drag and click a region, switch RelMax/ActMax, errors."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parents[1]

SETUP = f"""
import sys, tempfile
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
from zoo import small_cnn
from test_widgets_gallery_atlas import dataset
from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.atlas import ConceptAtlas
from crp_widgets.widgets.gallery import ReferenceGallery
from crp_widgets.widgets.session import ExplorerState, Session

model, data = small_cnn(seed=3), dataset()
store = scan(CRP(model), data, ["4", "6"], tempfile.mkdtemp(), k=6, class_k=3, batch_size=8, progress=False)
session = Session(model, data, store)
lively = int(store.class_relevance("6").nan_to_num().abs().sum(1).argmax())  # a channel that is not dead
state = ExplorerState(sample=2, layer="6", channel=lively)
atlas = ConceptAtlas(session, state, n_segments=20)
atlas
"""
GALLERY = "gallery = ReferenceGallery(session, state, k=6)\ngallery"

REGION_CHECK = """
mask = state.region
x, _ = data[state.sample]
fresh = CRP(model)
ranking = fresh.region_relevance(x, state.layer, mask, target=int(fresh.predict(x).argmax()))
rows, columns = np.nonzero(mask)
print(f"pixels={int(mask.sum())} rows={rows.min()}-{rows.max()} columns={columns.min()}-{columns.max()}")
for channel, relevance, of_total, of_region in ranking.top(3):
    print(f"ch {channel}|{100 * of_total:.1f} % ({100 * of_region:.1f} %)")
"""

LASSO_CHECK = """
region = state.region
print(f"rectangle={int(region[20:30, 2:12].sum())} below={int(region[15:].sum())}")
"""

SEGMENT_CHECK = """
segments = atlas.segments.astype(int)
label = segments[{row}, {column}]
region = state.region
print("region=none" if region is None else f"region=superpixel:{{np.array_equal(region, segments == label)}}")
"""

REFERENCES = """
import json
print(json.dumps({mode: [f"{r.dataset} #{r.index}" for r in store.references("6", state.channel, mode=mode, k=6)]
                  for mode in ("relevance", "activation")}))
"""


def idle(widget) -> None:
    """Wait until the widget has no computation waiting or running."""
    expect(widget.locator(".crpw-busy")).to_be_hidden()


def show(widget) -> None:
    """Scroll the notebook so that the widget's top is at the top of the screenshot."""
    widget.evaluate("node => node.scrollIntoView()")


def atlas_point(overlay, column: float, row: float, size: int = 32) -> tuple[float, float]:
    """Page coordinates of an image position (in pixels) on the atlas."""
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    assert box is not None
    return box["x"] + box["width"] * column / size, box["y"] + box["height"] * row / size


def shown_ranking(widget) -> list[str]:
    cards = widget.locator(".crpw-atlas-card")
    return [
        f"{cards.nth(i).locator('.crpw-atlas-card-name').inner_text()}|"
        f"{cards.nth(i).locator('.crpw-atlas-card-share').inner_text()}"
        for i in range(cards.count())
    ]


def test_dragging_a_region_shows_the_ranking_of_region_relevance(lab):
    page = lab.open_notebook("atlas_drag.ipynb", [SETUP, ""])
    widget = page.locator(".crpw-atlas")
    overlay = widget.locator(".crpw-atlas-overlay")
    expect(widget.locator(".crpw-atlas-concept")).to_have_count(5)
    idle(widget)
    overlay.scroll_into_view_if_needed()

    # A brush stroke (the default tool) along row 6, from column 18 to 28, with the mouse.
    page.mouse.move(*atlas_point(overlay, 18, 6))
    page.mouse.down()
    for column in range(18, 29):
        page.mouse.move(*atlas_point(overlay, column, 6), steps=2)
    page.mouse.up()
    expect(widget.locator(".crpw-atlas-card")).to_have_count(3)
    idle(widget)

    summary, *expected = lab.run_cell(1, REGION_CHECK).strip().splitlines()
    found = re.fullmatch(r"pixels=(\d+) rows=(\d+)-(\d+) columns=(\d+)-(\d+)", summary)
    assert found is not None, summary
    pixels, top, bottom, left, right = (int(v) for v in found.groups())
    assert pixels > 20
    assert 2 <= top <= 6 <= bottom <= 10  # the brush (radius 3) around row 6
    assert 14 <= left <= 18
    assert 28 <= right <= 31
    assert shown_ranking(widget) == expected
    expect(widget.locator(".crpw-atlas-card-heatmap")).to_have_count(3)
    expect(widget.locator(".crpw-atlas-reference")).to_have_count(12)  # 4 references per concept from the store

    # A lasso around the pixels of rows 20-29 and columns 2-11 (corners on pixel borders) joins the region.
    widget.locator("label.crpw-radio", has_text="Lasso").click()
    summary = widget.locator(".crpw-atlas-region-summary")
    before = summary.inner_text()
    corners = [(2, 20), (12, 20), (12, 30), (2, 30)]
    page.mouse.move(*atlas_point(overlay, *corners[0]))
    page.mouse.down()
    for corner in [*corners[1:], corners[0]]:
        page.mouse.move(*atlas_point(overlay, *corner), steps=4)
    page.mouse.up()
    expect(summary).not_to_have_text(before)
    idle(widget)
    assert "rectangle=100 below=100" in lab.run_cell(1, LASSO_CHECK)
    summary, *expected = lab.run_cell(1, REGION_CHECK).strip().splitlines()
    assert summary.startswith(f"pixels={pixels + 100} ")
    assert shown_ranking(widget) == expected
    show(widget)


def test_clicking_superpixels_and_the_keyboard_toggle_them(lab):
    page = lab.open_notebook("atlas_click.ipynb", [SETUP, ""])
    widget = page.locator(".crpw-atlas")
    overlay = widget.locator(".crpw-atlas-overlay")
    expect(widget.locator(".crpw-atlas-concept")).to_have_count(5)
    idle(widget)
    overlay.scroll_into_view_if_needed()

    page.mouse.click(*atlas_point(overlay, 8.5, 24.5))
    expect(widget.locator(".crpw-atlas-readout")).to_contain_text("added to the region")
    expect(widget.locator(".crpw-atlas-card")).to_have_count(3)
    assert "region=superpixel:True" in lab.run_cell(1, SEGMENT_CHECK.format(row=24, column=8))

    page.mouse.click(*atlas_point(overlay, 8.5, 24.5))
    expect(widget.locator(".crpw-atlas-readout")).to_contain_text("removed from the region")
    expect(widget.locator(".crpw-atlas-card")).to_have_count(0)
    assert "region=none" in lab.run_cell(1, SEGMENT_CHECK.format(row=24, column=8))

    # Keyboard: the cursor starts at the centre (16, 16); two steps of 2 pixels to the right, then Enter.
    overlay.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(widget.locator(".crpw-atlas-readout")).to_contain_text("added to the region")
    expect(widget.locator(".crpw-atlas-card")).to_have_count(3)
    assert "region=superpixel:True" in lab.run_cell(1, SEGMENT_CHECK.format(row=16, column=20))
    show(widget)


def test_switching_relmax_and_actmax_changes_the_tiles(lab):
    page = lab.open_notebook("gallery.ipynb", [SETUP, GALLERY, ""])
    widget = page.locator(".crpw-gallery")
    tiles = widget.locator(".crpw-gallery-tile .crpw-gallery-source")
    expect(tiles).to_have_count(6)
    idle(widget)
    references = json.loads(lab.run_cell(2, REFERENCES))
    relmax, actmax = references["relevance"], references["activation"]
    assert relmax != actmax
    assert tiles.all_inner_texts() == relmax

    widget.locator("label.crpw-radio", has_text="ActMax").click()
    expect(tiles).to_have_text(actmax)  # every tile: both lists may start with the same sample
    idle(widget)
    assert tiles.all_inner_texts() == actmax
    expect(widget.locator(".crpw-gallery-title")).to_have_text("ActMax (sum)")

    widget.locator("label.crpw-check", has_text="RelMax vs ActMax").click()  # Fig. 9, side by side
    expect(widget.locator(".crpw-gallery-group")).to_have_count(2)
    idle(widget)
    for mode, shown in (("relevance", relmax), ("activation", actmax)):
        group = widget.locator(f'.crpw-gallery-group[data-mode="{mode}"]')
        expect(group.locator(".crpw-gallery-source")).to_have_text(shown)
    widget.locator("select", has=page.locator('option[value="masked"]')).select_option("masked")
    idle(widget)
    expect(widget.locator(".crpw-gallery-image")).to_have_count(12)
    show(widget)


def test_errors_show_inside_the_widgets_which_keep_working(lab):
    page = lab.open_notebook("errors.ipynb", [SETUP, GALLERY, ""])
    gallery = page.locator(".crpw-gallery")
    atlas = page.locator(".crpw-atlas")
    expect(gallery.locator(".crpw-gallery-tile")).to_have_count(6)
    expect(atlas.locator(".crpw-atlas-concept")).to_have_count(5)
    idle(gallery)

    other = (
        "other = scan(CRP(small_cnn(seed=4)), data, ['6'], tempfile.mkdtemp(), k=2, batch_size=20, progress=False)\n"
        "try:\n    gallery.attach_store(other)\nexcept Exception as error:\n    print('refused:', type(error).__name__)"
    )
    assert "refused: StoreMismatchError" in lab.run_cell(2, other)
    expect(gallery.get_by_role("alert")).to_contain_text("made for another model")
    lab.run_cell(2, "state.region = np.ones((5, 5), dtype=bool)")
    expect(atlas.get_by_role("alert")).to_contain_text("the region mask has shape (5, 5)")

    # Both keep working: the gallery answers the next click and the error goes; so does the atlas.
    gallery.locator("label.crpw-radio", has_text="ActMax").click()
    expect(gallery.locator(".crpw-error")).to_be_empty()
    expect(gallery.locator(".crpw-gallery-title")).to_have_text("ActMax (sum)")
    atlas.locator(".crpw-atlas-concept").nth(1).click()
    expect(atlas.locator('.crpw-atlas-concept[aria-pressed="true"]')).to_have_count(1)
    lab.run_cell(2, "state.region = None")
    expect(atlas.locator(".crpw-error")).to_be_empty()
    show(gallery)
