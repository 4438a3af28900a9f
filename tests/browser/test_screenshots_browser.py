"""Every view of the explorer in JupyterLab, in the light and the dark theme: screenshots for the documentation.

One explorer on the demo world, with a reference store, is driven through every tab; each view is photographed in
both themes into ``docs/screenshots/<view>-<theme>.png`` (``docs/explorer.md`` shows them). The test checks that
every view finished computing and shows no error before it is photographed.
"""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH, HEIGHT, TALL = 1400, 900, 2000

SETUP = """
import tempfile
import crp_widgets as cw
demo = cw.demo.load(length=240)
crp = cw.CRP(demo.model)
store = cw.scan(crp, demo.dataset, ["features.conv3", "features.conv4"], tempfile.mkdtemp(), k=8, progress=False)
explorer = cw.Explorer(crp, demo.dataset, store=store, classes=demo.classes)
labels = demo.dataset.labels
shortcut = demo.classes.index(demo.shortcut_class)
suspect = next(i for i in range(len(demo.dataset)) if labels[i] == shortcut and demo.dataset.has_watermark(i))
explorer.state.sample = suspect
top = int(crp.channel_relevance(demo.dataset[suspect][0], "features.conv4", target=shortcut).order[0])
explorer.state.select("features.conv4", [top])
explorer.state.channel = top
explorer.state.region = demo.masks(suspect)["watermark"]
explorer.profiles.per_class.value, explorer.profiles.steps.value = 4, 4
explorer.occluder.steps.value, explorer.occluder.samples.value = 10, 8
striped = [i for i in range(len(demo.dataset)) if "stripes" in demo.masks(i)][:6]
explorer.state.basket = [{"dataset": "dataset", "index": i} for i in striped]
explorer.concepts.masks = lambda _, i: demo.masks(i).get("stripes")
explorer
"""

# (file name, tab title or None for a view of the top row, CSS of the element photographed, action before)
VIEWS = (
    ("explorer", None, ".crpw-explorer", None),
    ("sample", None, ".crpw-sample", None),
    ("channels", None, ".crpw-channels", None),
    ("heatmaps", None, ".crpw-heatmaps", None),
    ("references", "References", ".crpw-gallery", None),
    ("atlas", "Concept atlas", ".crpw-atlas", None),
    ("graph", "Attribution graph", ".crpw-graph", None),
    ("whatif", "What-if", ".crpw-whatif", ".crpw-whatif-top"),
    ("decision", "Decision", ".crpw-decision", None),
    ("other-classes", "Other classes", ".crpw-inverse", None),
    ("similar-concepts", "Similar concepts", ".crpw-similarity", None),
    ("my-concepts", "My concepts", ".crpw-concepts", ".crpw-concepts-learn"),
    ("global-importance", "Global importance", ".crpw-occluder", ".crpw-occluder-learn"),
    ("class-profiles", "Class profiles", ".crpw-profiles", ".crpw-profiles-compute"),
)


def settled(page, view):
    """Wait until ``view`` computes nothing, shows no error and keeps its size (a view may start its next
    computation right after one ends, e.g. the similar channels after the map)."""
    busy = view.locator(".crpw-busy:visible, .crpw-panel-busy, .crpw-panel-progress-row:visible")
    size = None
    for _ in range(20):
        expect(busy).to_have_count(0)
        page.wait_for_timeout(400)  # charts animate their first drawing
        box = view.bounding_box()
        if busy.count() == 0 and box == size:
            break
        size = box
    expect(view.locator(".crpw-error:not(:empty), .crpw-panel-error")).to_have_count(0)


def use_theme(page, name):
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Settings$")).click()
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Theme$")).hover()
    page.locator(".lm-Menu-item", has_text=re.compile(rf"^JupyterLab {name}$")).click()
    expect(page.locator(f"body[data-jp-theme-light='{str(name == 'Light').lower()}']")).to_be_attached()
    page.wait_for_timeout(500)


def test_every_view_in_the_light_and_the_dark_theme(lab):
    lab.page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    page = lab.open_notebook("explorer.ipynb", [SETUP])
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # close the file browser
    explorer = page.locator(".crpw-explorer")
    expect(explorer.locator(".crpw-channels .crpw-bar-row").first).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for theme in ("Light", "Dark"):
        use_theme(page, theme)
        # The whole page at 1400 x 900: the explorer's top row and its tabs on one screen.
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
        page.locator(".crpw-explorer-tabs .lm-TabBar-tab", has_text="References").click()
        settled(page, explorer)
        explorer.evaluate("(node) => node.scrollIntoView({block: 'start'})")
        page.screenshot(path=SCREENSHOTS / f"explorer-{theme.lower()}.png")
        page.set_viewport_size({"width": WIDTH, "height": TALL})  # room for the tallest view
        for name, tab, css, action in VIEWS[1:]:
            if tab is not None:
                page.locator(".crpw-explorer-tabs .lm-TabBar-tab", has_text=tab).click()
            view = explorer.locator(css).first
            expect(view).to_be_visible()
            if action is not None and theme == "Light":
                view.locator(action).first.click()
            settled(page, view)
            view.evaluate("(node) => node.scrollIntoView({block: 'start'})")
            view.screenshot(path=SCREENSHOTS / f"{name}-{theme.lower()}.png")
    written = sorted(path.name for path in SCREENSHOTS.glob("*.png"))
    assert written == sorted(f"{name}-{theme}.png" for name, *_ in VIEWS for theme in ("light", "dark"))
