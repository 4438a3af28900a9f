"""User-defined concepts (SACV, Wang & Lee 2022) in JupyterLab on the demo world: fill the basket, learn, see the
maps."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parents[1]
ARTIFACTS = TESTS.parent / "test-artifacts"

SETUP = """
import tempfile
import ipywidgets
import numpy as np
import crp_widgets as cw
from crp_widgets.widgets.concepts import UserConceptView
from crp_widgets.widgets.gallery import ReferenceGallery
from crp_widgets.widgets.session import ExplorerState, Session

demo = cw.demo.load(length=96)
crp = cw.CRP(demo.model)
store = cw.scan(crp, demo.dataset, ["features.conv4"], tempfile.mkdtemp(), k=4, class_k=1, progress=False)
session = Session(crp, demo.dataset, store=store, classes=demo.classes)
striped = [i for i in range(len(demo.dataset)) if "stripes" in demo.masks(i)]
state = ExplorerState(sample=striped[0], layer="features.conv4", channel=0)
empty = np.zeros((64, 64), dtype=bool)
concepts = UserConceptView(session, state, masks=lambda _, i: demo.masks(i).get("stripes", empty), n_random=8,
                           summary_size=8)
gallery = ReferenceGallery(session, state, k=4, view="sample")
print("striped=" + json.dumps(striped[:4]))
ipywidgets.VBox([concepts, gallery])
""".replace("import tempfile", "import json, tempfile")
PRINT_STATE = """
info = concepts.concept_info
print("basket=" + json.dumps(state.basket))
print(f"accuracy={info.get('accuracy')} positives={info.get('positives')} maps={concepts.maps_info.get('name')}")
"""


def idle(widget) -> None:
    expect(widget.locator(".crpw-busy")).to_be_hidden()


def test_fill_the_basket_learn_and_see_the_concept_maps(lab):
    page = lab.open_notebook("concepts.ipynb", [SETUP, ""])
    striped = json.loads(lab.output(0).split("striped=")[1].splitlines()[0])
    view, gallery = page.locator(".crpw-concepts"), page.locator(".crpw-gallery")
    expect(gallery.locator(".crpw-gallery-tile")).to_have_count(4)
    basket = view.locator(".crpw-concepts-basket")

    # The view's controls: the current sample, then two more by index (Enter and the button).
    view.get_by_role("button", name="Add current sample").click()
    expect(view.locator(".crpw-concepts-item")).to_have_count(1)
    index = view.get_by_label("sample index to add")
    index.fill(str(striped[1]))
    index.press("Enter")
    expect(view.locator(".crpw-concepts-item")).to_have_count(2)
    index.fill(str(striped[2]))
    view.get_by_role("button", name="Add #").click()
    expect(view.locator(".crpw-concepts-item")).to_have_count(3)

    # A gallery reference dragged onto the basket, and another added with the keyboard ("+" on the tile).
    tiles = gallery.locator(".crpw-gallery-tile")
    dragged = int(re.search(r"#(\d+)", tiles.nth(0).locator(".crpw-gallery-source").inner_text()).group(1))
    tiles.nth(0).drag_to(basket)
    keyed = int(re.search(r"#(\d+)", tiles.nth(1).locator(".crpw-gallery-source").inner_text()).group(1))
    tiles.nth(1).locator(".crpw-gallery-basket").focus()
    page.keyboard.press("Enter")
    expected = list(dict.fromkeys([*striped[:3], dragged, keyed]))
    expect(view.locator(".crpw-concepts-item")).to_have_count(len(expected))
    expect(view.locator(".crpw-concepts-thumb")).to_have_count(len(expected))

    # Remove the keyboard-added one again (when it was new), then learn.
    if keyed not in expected[:-1]:
        view.locator(".crpw-concepts-remove").last.click()
        expected = expected[:-1]
        expect(view.locator(".crpw-concepts-item")).to_have_count(len(expected))
    view.get_by_role("button", name="Learn concept").click()
    expect(view.locator(".crpw-concepts-accuracy")).to_contain_text("held-out balanced accuracy")
    expect(view.locator(".crpw-concepts-summary")).to_contain_text("the concept raises the class's output on")
    expect(view.locator(".crpw-concepts-summary")).to_have_attribute("title", re.compile("TCAV score"))
    idle(view)
    for name in ("concept", "contribution"):
        canvas = view.locator(f'[data-map="{name}"] canvas')
        expect(canvas).to_be_visible()
        assert page.evaluate("c => [c.width, c.height]", canvas.element_handle()) == [64, 64]
    expect(view.locator('[data-map="contribution"] figcaption')).to_contain_text("contributes to class")

    output = lab.run_cell(1, PRINT_STATE)
    basket_line, summary_line = output.strip().splitlines()[-2:]
    assert [entry["index"] for entry in json.loads(basket_line.split("basket=")[1])] == expected
    found = re.search(r"accuracy=(\S+) positives=(\d+) maps=(.+)", summary_line)
    assert found is not None, output
    assert float(found.group(1)) > 0.8
    assert int(found.group(2)) > 0
    view.evaluate("node => node.scrollIntoView()")
    page.screenshot(path=ARTIFACTS / "concepts_learned.png")
