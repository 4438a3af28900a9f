"""AttributionGraphView in JupyterLab: expand a node, select nodes by click and keyboard, drill down, see errors."""

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
from crp_widgets.widgets.graph import AttributionGraphView
from crp_widgets.widgets.session import ExplorerState, Session

generator = torch.Generator().manual_seed(0)
data = torch.utils.data.TensorDataset(torch.rand(24, 3, 16, 16, generator=generator),
                                      torch.randint(0, 10, (24,), generator=generator))
model = small_cnn(seed=3)
store = scan(CRP(model), data, ["4", "6"], tempfile.mkdtemp(), k=2, class_k=1, batch_size=8, progress=False)
session = Session(model, data, store=store)
state = ExplorerState(sample=2, layer="6", channel=5)
view = AttributionGraphView(session, state=state, width=[2], expand_k=2, drill_k=3)
view
"""
REPORT = """
session.worker.wait(60)
print(json.dumps({
    "nodes": [[n["layer"], n["channel"]] for n in view.graph.get("nodes", [])],
    "edges": [[e["source"], e["target"]] for e in view.graph.get("edges", [])],
    "expanded": view.expanded, "focus": [state.layer, state.channel], "path": view.path,
    "drill": [c["channel"] for c in view.drill.get("channels", [])], "error": view.error,
}))
"""


def kernel(lab, cell=1):
    """Re-run the report cell and read what the kernel holds."""
    return json.loads(lab.run_cell(cell).strip().splitlines()[-1])


def page_nodes(widget):
    cards = widget.locator(".crpw-graph-node")
    return sorted([card.get_attribute("data-layer"), int(card.get_attribute("data-channel"))] for card in cards.all())


def row_places(widget, layer):
    """Where the cards of one row are drawn, by channel."""
    cards = widget.locator(f'.crpw-graph-node[data-layer="{layer}"]').all()
    return {card.get_attribute("data-channel"): card.get_attribute("transform") for card in cards}


def scroll_to(widget):
    """Bring the widget's top into view (for the screenshot the harness takes at the end)."""
    widget.evaluate("element => element.scrollIntoView({block: 'start'})")


def open_graph(lab):
    page = lab.open_notebook("graph.ipynb", [SETUP, REPORT, ""])
    widget = page.locator(".crpw-graph")
    shown = kernel(lab)
    expect(widget.locator(".crpw-graph-node")).to_have_count(len(shown["nodes"]))
    expect(widget.locator(".crpw-graph-heatmap")).to_have_count(len(shown["nodes"]))
    return page, widget, shown


def test_expanding_a_node_adds_its_subconcepts(lab):
    page, widget, shown = open_graph(lab)
    assert page_nodes(widget) == sorted(shown["nodes"])
    expect(widget.locator(".crpw-graph-edge")).to_have_count(len(shown["edges"]))
    expect(widget.locator(".crpw-graph-layer")).to_have_text(["6", "4"])
    expect(widget.locator(".crpw-graph-thumbnail")).to_have_count(len(shown["nodes"]))  # a thumbnail on every card
    places = row_places(widget, "4")

    leaf = widget.locator(".crpw-graph-node", has=page.locator(".crpw-graph-expand")).first
    parent = [leaf.get_attribute("data-layer"), int(leaf.get_attribute("data-channel"))]
    leaf.locator(".crpw-graph-expand").click()
    expect(widget.locator(".crpw-graph-layer")).to_have_text(["6", "4", "0"])
    after = kernel(lab)
    assert after["expanded"] == [parent]
    assert after["error"] == ""
    children = [target for source, target in after["edges"] if source == parent]
    assert len(children) == 2
    assert all(layer == "0" for layer, _ in children)
    expect(widget.locator(".crpw-graph-node")).to_have_count(len(after["nodes"]))
    assert page_nodes(widget) == sorted(after["nodes"])
    expect(widget.locator(".crpw-graph-edge")).to_have_count(len(after["edges"]))
    expect(widget.locator('.crpw-graph-node[data-layer="0"] .crpw-graph-expand')).to_have_count(0)  # lowest layer
    # Stable layout: the cards shown before kept their places.
    assert row_places(widget, "4") == places
    scroll_to(widget)


def test_clicking_and_keys_select_nodes_in_the_kernel(lab):
    page, widget, shown = open_graph(lab)
    card = widget.locator('.crpw-graph-node[data-layer="4"]').nth(1)
    node = [card.get_attribute("data-layer"), int(card.get_attribute("data-channel"))]
    card.locator(".crpw-graph-card").click()
    expect(widget.locator(".crpw-graph-selected")).to_have_attribute("data-channel", str(node[1]))
    after = kernel(lab)
    assert after["focus"] == node
    assert after["nodes"] == shown["nodes"]  # the graph keeps its root
    assert after["path"] == [["6", 5], node]
    expect(widget.locator(".crpw-graph-crumb-button")).to_have_count(2)

    # Keyboard: up to the root, Enter selects it; down and right to the second card of row "4", "+" expands it.
    card.focus()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    expect(widget.locator(".crpw-graph-selected")).to_have_attribute("data-layer", "6")
    assert kernel(lab)["focus"] == ["6", 5]
    widget.locator(".crpw-graph-root").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("+")
    expect(widget.locator(".crpw-graph-layer")).to_have_text(["6", "4", "0"])
    assert kernel(lab)["expanded"] == [node]
    scroll_to(widget)


def test_drill_down_and_errors_in_the_widget(lab):
    page, widget, _ = open_graph(lab)
    items = widget.locator(".crpw-graph-item-button")
    expect(items).to_have_count(3)
    first = kernel(lab)["drill"][0]
    items.first.click()
    expect(widget.locator(".crpw-graph-crumb-button")).to_have_text(["6 · ch 5", f"4 · ch {first}"])
    after = kernel(lab)
    assert after["path"] == [["6", 5], ["4", first]]
    expect(items).to_have_count(len(after["drill"]))
    widget.locator(".crpw-graph-crumb-button").first.click()
    expect(widget.locator(".crpw-graph-crumb-button")).to_have_count(1)
    assert kernel(lab)["path"] == [["6", 5]]

    # A layer without layers below it, set from Python: the error shows inside the widget, which keeps working.
    lab.run_cell(2, 'state.layer = "0"; state.channel = 1')
    alert = widget.locator(".crpw-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("layers below '0'")
    expect(widget.locator(".crpw-graph-select").first).to_be_enabled()
    expect(widget.locator(".crpw-graph-node")).to_have_count(0)  # not the previous concept's graph
    scroll_to(widget)
    page.screenshot(path=ARTIFACTS / "test_graph_error_shown.png", full_page=True)
    lab.run_cell(2, 'state.layer = "6"; state.channel = 3')
    expect(alert).to_be_empty()
    expect(alert).to_be_hidden()
    expect(widget.locator(".crpw-graph-root")).to_have_attribute("data-channel", "3")
    assert kernel(lab)["error"] == ""
    scroll_to(widget)
