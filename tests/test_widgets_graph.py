"""AttributionGraphView: what the widget shows equals the engine's attribution graph and drill-down (Sec. 3.4)."""

import io
import threading

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image
from zoo import random_images, small_cnn

from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.render.images import image_to_uint8, overlay
from crp_widgets.widgets.graph import AttributionGraphView
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.worker import Worker

SAMPLE = 2


def decode(png):
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGB"))


def dataset(n=24, seed=0):
    return random_images(n, seed)


@pytest.fixture(scope="module")
def model():
    return small_cnn(seed=3)


@pytest.fixture(scope="module")
def data():
    return dataset()


@pytest.fixture(scope="module")
def crp(model):
    return CRP(model)


@pytest.fixture
def session(model, data):
    return Session(model, data, worker=Worker(synchronous=True))


def make_view(session, layer="6", channel=5, **traits):
    state = ExplorerState(sample=SAMPLE, layer=layer, channel=channel)
    return AttributionGraphView(session, state=state, **traits), state


def prediction(crp, x):
    return int(crp.predict(x).argmax())


def edges_of(description):
    return [(tuple(e["source"]), tuple(e["target"])) for e in description["edges"]]


def sent(view, trait):
    """What a trait sends to the front end (PNG bytes per image)."""
    return view.get_state([trait])[trait]


def assert_shows(view, graph):
    """The widget's graph, node for node and edge for edge, equals an engine graph."""
    shown = view.graph
    assert shown["root"] == list(graph.root)
    assert shown["layers"] == graph.layers
    assert [(n["layer"], n["channel"]) for n in shown["nodes"]] == [(n.layer, n.channel) for n in graph.nodes]
    assert [n["share"] for n in shown["nodes"]] == pytest.approx([n.share for n in graph.nodes], rel=1e-5)
    assert [n["relevance"] for n in shown["nodes"]] == pytest.approx([n.relevance for n in graph.nodes], rel=1e-5)
    assert edges_of(shown) == [(e.source, e.target) for e in graph.edges]
    assert [e["share"] for e in shown["edges"]] == pytest.approx([e.share for e in graph.edges], rel=1e-5)
    heatmaps = sent(view, "heatmaps")
    assert len(heatmaps) == len(graph.nodes)
    for png, node in zip(heatmaps, graph.nodes):  # each drawn over the sample
        np.testing.assert_array_equal(decode(png), overlay(view.image, node.heatmap, 0.6))


def test_shows_the_engines_graph_for_the_prediction(session, crp, data):
    view, _ = make_view(session)
    x = data[SAMPLE][0]
    target = prediction(crp, x)
    assert view.error == ""
    assert_shows(view, crp.attribution_graph(x, "6", 5, target=target, width=(3, 2), heatmaps=True))
    assert view.graph["target"] == target
    assert view.graph["class"] == str(target)
    assert view.graph["lowest"] == "0"  # the front end offers no expansion there
    assert view.selected == ["6", 5]
    assert all(not n["added"] and n["thumbnail"] is None for n in view.graph["nodes"])
    np.testing.assert_array_equal(decode(sent(view, "image")), image_to_uint8(x))


def test_stands_alone_on_a_model(model, crp):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(7))
    state = ExplorerState(custom=x, layer="6", channel=2)
    view = AttributionGraphView(model, state=state, session_options={"worker": Worker(synchronous=True)})
    assert_shows(view, crp.attribution_graph(x, "6", 2, target=prediction(crp, x), width=(3, 2), heatmaps=True))
    assert view.drill["layer"] == "4"


def test_width_sets_the_levels_and_the_concepts_per_level(session, crp, data):
    view, state = make_view(session, width=[2])
    state.target = 4
    x = data[SAMPLE][0]
    assert_shows(view, crp.attribution_graph(x, "6", 5, target=4, width=(2,), heatmaps=True))
    view.expand("4", view.graph["nodes"][1]["channel"])
    view.width = [1, 3]  # a new shape: the expansions made for the old one are dropped
    assert view.expanded == []
    assert_shows(view, crp.attribution_graph(x, "6", 5, target=4, width=(1, 3), heatmaps=True))
    assert view.error == ""


def test_images_travel_as_binary_buffers(session):
    view, _ = make_view(session)
    _, paths, buffers = _remove_buffers(view.get_state())
    heatmaps = [p for p in paths if p[0] == "heatmaps"]
    assert len(heatmaps) == len(view.graph["nodes"])
    assert ["image"] in paths
    assert all(bytes(b).startswith(b"\x89PNG") for b in buffers)


def test_expanding_a_leaf_adds_its_subconcepts_along_its_path(session, crp, data):
    view, _ = make_view(session, width=[2], expand_k=3)
    x = data[SAMPLE][0]
    target = prediction(crp, x)
    before = view.graph
    leaf = ("4", before["nodes"][1]["channel"])
    view.expand(*leaf)
    after = view.graph
    assert view.error == ""
    assert view.expanded == [list(leaf)]
    (_, step) = crp.drill_down(x, [("6", 5), leaf], target=target, k=3, heatmaps=True)
    sub = crp.subconcepts(x, "4", leaf[1], "0", target=target, k=3, conditions={"6": [5]})
    assert step.channels == sub.channels
    assert after["layers"] == ["6", "4", "0"]
    # The graph shown before is kept as it was, node for node; the sub-concepts come after it.
    assert after["nodes"][: len(before["nodes"])] == before["nodes"]
    new_edges = after["edges"][len(before["edges"]) :]
    assert [tuple(e["source"]) for e in new_edges] == [leaf] * 3
    assert [tuple(e["target"]) for e in new_edges] == [("0", c) for c in step.channels]
    assert [e["share"] for e in new_edges] == pytest.approx(step.share.tolist(), rel=1e-5)
    assert all(e["added"] for e in new_edges)
    # Node values are relative to the root, as in the engine's graph (Fig. 17, parentheses).
    overall = crp.subconcepts(x, "6", 5, "0", target=target, k=1)
    root = after["nodes"][0]["relevance"]
    added = after["nodes"][len(before["nodes"]) :]
    assert [(n["layer"], n["channel"]) for n in added] == [("0", c) for c in step.channels]
    assert [n["share"] for n in added] == pytest.approx([float(overall.all_relevance[c]) / root for c in step.channels])
    assert all(n["added"] and n["level"] == 2 for n in added)
    for png, heatmap in zip(sent(view, "heatmaps")[len(before["nodes"]) :], step.heatmaps):
        np.testing.assert_array_equal(decode(png), overlay(view.image, heatmap, 0.6))


def test_a_second_expansion_fills_the_existing_row_without_duplicates(session, crp, data):
    view, _ = make_view(session, width=[2], expand_k=4)
    x = data[SAMPLE][0]
    target = prediction(crp, x)
    first, second = [("4", n["channel"]) for n in view.graph["nodes"][1:3]]
    view.expand(*first)
    shown = view.graph
    view.expand(*second)
    assert view.expanded == [list(first), list(second)]
    assert view.graph["nodes"][: len(shown["nodes"])] == shown["nodes"]
    (_, step) = crp.drill_down(x, [("6", 5), second], target=target, k=4, heatmaps=False)
    children = [tuple(e["target"]) for e in view.graph["edges"] if tuple(e["source"]) == second]
    assert children == [("0", c) for c in step.channels]
    keys = [(n["layer"], n["channel"]) for n in view.graph["nodes"]]
    assert len(keys) == len(set(keys))
    assert view.graph["layers"] == ["6", "4", "0"]


def test_a_node_reached_by_several_paths_expands_along_its_strongest_one(session, crp, data):
    view, _ = make_view(session, layer="10", channel=0, width=[3, 2], expand_k=2)
    x = data[SAMPLE][0]
    target = prediction(crp, x)
    edges = view.graph["edges"]
    merged = [
        n for n in view.graph["nodes"] if sum(tuple(e["target"]) == (n["layer"], n["channel"]) for e in edges) > 1
    ]
    assert merged, "this sample's graph has a node with two parents"
    node = (merged[0]["layer"], merged[0]["channel"])
    incoming = [e for e in edges if tuple(e["target"]) == node]
    parent = tuple(max(incoming, key=lambda e: abs(e["relevance"]))["source"])
    assert parent != tuple(min(incoming, key=lambda e: abs(e["relevance"]))["source"])
    view.expand(*node)
    step = crp.drill_down(x, [("10", 0), parent, node], target=target, k=2, heatmaps=False)[-1]
    children = [e for e in view.graph["edges"] if tuple(e["source"]) == node]
    assert [tuple(e["target"]) for e in children] == [(step.layer, c) for c in step.channels]
    assert [e["share"] for e in children] == pytest.approx(step.share.tolist(), rel=1e-5)


def test_selecting_a_node_sets_the_state_and_keeps_the_graph(session, crp, data):
    view, state = make_view(session)
    shown = view.graph
    node = ("0", shown["nodes"][-1]["channel"])
    view._handle_custom_msg({"kind": "select", "layer": node[0], "channel": node[1]}, [])
    assert (state.layer, state.channel) == node
    assert view.selected == list(node)
    assert view.graph == shown  # the graph keeps its root
    parent = next(tuple(e["source"]) for e in shown["edges"] if tuple(e["target"]) == node)
    assert view.path == [["6", 5], list(parent), list(node)]
    assert view.drill == {"path": view.path, "layer": None, "channels": []}  # nothing below the lowest layer


def test_a_focus_set_from_python_roots_the_graph_there(session, crp, data):
    view, state = make_view(session, expand_k=2)
    view.expand("0", view.graph["nodes"][-1]["channel"])  # fails (lowest layer) but is a request
    view.expand("4", view.graph["nodes"][1]["channel"])  # not a leaf
    state.channel = 7
    x = data[SAMPLE][0]
    assert_shows(view, crp.attribution_graph(x, "6", 7, target=prediction(crp, x), width=(3, 2), heatmaps=True))
    assert view.expanded == []
    assert view.path == [["6", 7]]
    assert view.error == ""  # errors about the previous graph are gone
    state.sample = 5
    x = data[5][0]
    assert_shows(view, crp.attribution_graph(x, "6", 7, target=prediction(crp, x), width=(3, 2), heatmaps=True))
    state.custom = torch.zeros(3, 16, 16) + 0.25
    x = state.custom
    assert_shows(view, crp.attribution_graph(x, "6", 7, target=prediction(crp, x), width=(3, 2), heatmaps=True))


def test_no_channel_in_focus_shows_no_graph(session):
    view, state = make_view(session)
    state.channel = None
    assert view.graph == {}
    assert view.heatmaps == ()
    assert view.selected == []
    assert view.path == []
    assert view.drill == {}
    assert view.error == ""


def test_errors_show_in_the_widget_and_clear_on_the_next_valid_action(session, crp, data):
    view, state = make_view(session)
    state.layer = "0"  # the lowest layer: no layers below it for the graph
    assert "layers below '0'" in view.error
    assert view.graph == {}  # not the previous concept's graph
    assert view.heatmaps == ()
    state.layer = "6"
    assert view.error == ""
    assert view.graph["root"] == ["6", 5]

    leaf = ("0", view.graph["nodes"][-1]["channel"])
    view._handle_custom_msg({"kind": "expand", "layer": leaf[0], "channel": leaf[1]}, [])
    assert "no explainable layer below it" in view.error
    assert view.expanded == []  # the failed expansion is not kept
    view._handle_custom_msg({"kind": "select", "layer": "4", "channel": 99}, [])
    assert "is not a node of the graph" in view.error
    view.width = [2]
    view._handle_custom_msg({"kind": "expand", "layer": "4", "channel": view.graph["nodes"][1]["channel"]}, [])
    assert "no explainable layer" not in view.error
    view._handle_custom_msg({"kind": "select", "layer": "6", "channel": 5}, [])
    assert view.error == ""

    view.path = [["4", 1], ["6", 5]]  # upwards: refused by the engine
    assert "from the output towards the input" in view.error
    assert view.drill == {}
    view.path = [["6", 5]]
    assert view.error == ""
    view.path = [["6"]]
    assert "must list [layer, channel] pairs" in view.error
    with pytest.raises(ValueError, match="not a node of the graph"):
        view.expand("4", 99)


def test_drill_down_lists_the_next_layers_top_k_under_the_path(session, crp, data):
    view, _ = make_view(session, drill_k=3)
    x = data[SAMPLE][0]
    target = prediction(crp, x)
    (step,) = crp.drill_down(x, [("6", 5)], target=target, k=3)
    assert view.drill["path"] == [["6", 5]]
    assert view.drill["layer"] == "4"
    assert [c["channel"] for c in view.drill["channels"]] == step.channels
    assert [c["share"] for c in view.drill["channels"]] == pytest.approx(step.share.tolist(), rel=1e-5)
    for png, heatmap in zip(sent(view, "drill_heatmaps"), step.heatmaps):
        np.testing.assert_array_equal(decode(png), overlay(view.image, heatmap, 0.6))
    # Picking a channel extends the path (the front end sets `path`), a breadcrumb shortens it.
    picked = step.channels[1]
    view.path = [*view.path, ["4", picked]]
    (_, deeper) = crp.drill_down(x, [("6", 5), ("4", picked)], target=target, k=3)
    assert view.drill["layer"] == "0"
    assert [c["channel"] for c in view.drill["channels"]] == deeper.channels
    for png, heatmap in zip(sent(view, "drill_heatmaps"), deeper.heatmaps):
        np.testing.assert_array_equal(decode(png), overlay(view.image, heatmap, 0.6))
    view.path = [*view.path, ["0", deeper.channels[0]]]
    assert view.drill == {"path": view.path, "layer": None, "channels": []}
    view.path = view.path[:1]
    assert [c["channel"] for c in view.drill["channels"]] == step.channels


def test_thumbnails_are_the_top_reference_crops_from_the_store(model, data, tmp_path):
    store = scan(CRP(model), data, ["4", "6"], tmp_path / "store", k=3, class_k=1, batch_size=8, progress=False)
    session = Session(model, data, store=store, worker=Worker(synchronous=True))
    view, _ = make_view(session, drill_k=2)
    thumbnails = sent(view, "thumbnails")
    for node in view.graph["nodes"]:
        if node["layer"] == "0":  # not in the store: the front end shows the sample
            assert node["thumbnail"] is None
            continue
        (reference,) = session.views.views(node["layer"], node["channel"], k=1)
        np.testing.assert_array_equal(decode(thumbnails[node["thumbnail"]]), image_to_uint8(reference.crop))
    drill_thumbnails = sent(view, "drill_thumbnails")
    for entry in view.drill["channels"]:
        (reference,) = session.views.views("4", entry["channel"], k=1)
        np.testing.assert_array_equal(decode(drill_thumbnails[entry["thumbnail"]]), image_to_uint8(reference.crop))


def test_the_structure_shows_before_the_pictures_unless_they_are_ready(session):
    view, state = make_view(session)
    count, drilled = len(view.graph["nodes"]), len(view.drill["channels"])
    seen = {"heatmaps": [], "drill_heatmaps": []}
    view.observe(lambda change: seen[change.name].append(len(change.new)), names=list(seen))
    state.channel = 7
    assert seen == {"heatmaps": [0, len(view.graph["nodes"])], "drill_heatmaps": [0, drilled]}
    seen = {"heatmaps": [], "drill_heatmaps": []}
    state.channel = 5  # computed before: the pictures show at once
    assert seen == {"heatmaps": [count], "drill_heatmaps": [drilled]}


def test_computes_off_the_comm_thread(model, data, crp):
    session = Session(model, data)
    view, state = make_view(session)
    threads = []
    view.observe(lambda change: threads.append(threading.get_ident()), names=["graph"])
    assert session.worker.wait(60)
    state.channel = 7
    assert session.worker.wait(60)
    assert not view.busy
    assert threads
    assert threading.get_ident() not in threads
    x = data[SAMPLE][0]
    assert_shows(view, crp.attribution_graph(x, "6", 7, target=prediction(crp, x), width=(3, 2), heatmaps=True))
    view.close()
    state.channel = 5  # a closed view no longer follows the state
    assert session.worker.wait(60)
    assert view.graph["root"] == ["6", 7]


def test_loads_the_bundle_as_esm_and_css():
    assert "render" in str(AttributionGraphView._esm)
    assert ".crpw-graph" in str(AttributionGraphView._css)


def test_drill_down_can_compute_the_heatmaps_of_its_last_step_only(crp, data):
    """The engine option the widget uses: one batched backward pass to the input instead of one per step."""
    x = data[SAMPLE][0]
    path = [("6", 5), ("4", 1)]
    every = crp.drill_down(x, path, target=1, k=3, heatmaps=True)
    last = crp.drill_down(x, path, target=1, k=3, heatmaps="last")
    assert last[0].heatmaps is None
    assert [s.channels for s in last] == [s.channels for s in every]
    assert torch.equal(last[-1].heatmaps, every[-1].heatmaps)
