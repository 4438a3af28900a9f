"""Every view as code: the code a view shows, run, gives the arrays the view shows (on the demo world's model)."""

import numpy as np
import pytest
import torch

import crp_widgets as cw
from crp_widgets.render.images import image_to_uint8
from crp_widgets.widgets.worker import Worker

LAYERS = ["features.conv3", "features.conv4"]


@pytest.fixture(scope="module")
def demo():
    return cw.demo.load(length=120)


@pytest.fixture(scope="module")
def crp(demo):
    return cw.CRP(demo.model)


@pytest.fixture(scope="module")
def store(crp, demo, tmp_path_factory):
    return cw.scan(crp, demo.dataset, LAYERS, tmp_path_factory.mktemp("store"), k=8, progress=False)


@pytest.fixture
def explorer(crp, demo, store):
    explorer = cw.Explorer(crp, demo.dataset, store=store, classes=demo.classes, worker=Worker(synchronous=True))
    for name in ("gallery", "atlas", "graph"):
        getattr(explorer, name).active = True
    return explorer


def run(code, crp, demo, store):
    """Run a snippet where the names it needs are the explorer's."""
    namespace = {"crp": crp, "dataset": demo.dataset, "store": store}
    exec(code, namespace)  # the code a user copies
    return namespace


def numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def test_the_code_of_each_view_gives_the_arrays_the_view_shows(explorer, crp, demo, store):
    state = explorer.state
    state.sample = 9
    state.select("features.conv4", [6, 22])
    state.select("features.conv3", [11])
    state.channel = 6

    sample = run(explorer.sample.code(), crp, demo, store)
    assert np.array_equal(numpy(sample["heatmap"]), explorer.sample.heatmap)
    assert sample["target"] == explorer.sample.explained

    channels = run(explorer.channels.code(), crp, demo, store)
    ranking = channels["ranking"]
    rows = np.stack(
        [numpy(ranking.order), numpy(ranking.relevance[ranking.order]), numpy(ranking.share[ranking.order])], 1
    )
    np.testing.assert_allclose(rows, explorer.channels.ranking, rtol=1e-6)
    assert 'conditions={"features.conv3": [11]}' in explorer.channels.code()  # the other layer's condition

    heatmaps = run(explorer.heatmaps.code(), crp, demo, store)
    assert heatmaps["channels"] == explorer.heatmaps.grid_info["channels"]
    np.testing.assert_allclose(numpy(heatmaps["heatmaps"]), explorer.heatmaps.grid, atol=1e-7)
    np.testing.assert_allclose(numpy(heatmaps["conditioned"]), explorer.heatmaps.heatmap, atol=1e-7)

    gallery = run(explorer.gallery.code(), crp, demo, store)
    shown = [image_to_uint8(explorer.session.display(picture)) for picture in gallery["pictures"]]
    assert len(shown) == len(explorer.gallery.images) == 8
    assert all(np.array_equal(a, b) for a, b in zip(shown, explorer.gallery.images))

    atlas = run(explorer.atlas.code(), crp, demo, store)["atlas"]
    assert atlas.channels == [concept["channel"] for concept in explorer.atlas.concepts]
    assert np.array_equal(numpy(atlas.segments).astype(np.float32), explorer.atlas.segments)
    first, second = (np.where(numpy(a) < 0, 255, numpy(a)) for a in (atlas.first, atlas.second))
    assert np.array_equal(np.stack([first, second]), explorer.atlas.assignment)

    graph = run(explorer.graph.code(), crp, demo, store)
    nodes = [(node.layer, node.channel) for node in graph["graph"].nodes]
    assert nodes == [(node["layer"], node["channel"]) for node in explorer.graph.graph["nodes"]]
    drill = graph["steps"][-1]
    assert list(drill.channels) == [entry["channel"] for entry in explorer.graph.drill["channels"]]


def test_other_options_give_other_code_that_still_matches(explorer, crp, demo, store):
    state = explorer.state
    state.sample, state.target = 3, 5
    state.localization = True
    state.select("features.conv3", [2])  # below the layer: still applies to a class-free start at conv4
    code = explorer.heatmaps.code()
    assert "target=None" in code
    assert "target = 5" in code
    heatmaps = run(code, crp, demo, store)
    np.testing.assert_allclose(numpy(heatmaps["heatmaps"]), explorer.heatmaps.grid, atol=1e-7)
    np.testing.assert_allclose(numpy(heatmaps["conditioned"]), explorer.heatmaps.heatmap, atol=1e-7)

    gallery = explorer.gallery
    gallery.compare, gallery.view, gallery.k = True, "masked", 4
    code = gallery.code()
    assert 'mode="relevance"' in code
    assert 'mode="activation"' in code
    assert "reference.masked" in code
    pictures = run(code, crp, demo, store)["pictures"]
    shown = [image_to_uint8(explorer.session.display(picture)) for picture in pictures]
    assert len(shown) == len(gallery.images) == 8
    assert all(np.array_equal(a, b) for a, b in zip(shown, gallery.images))

    atlas = explorer.atlas
    atlas.mode, atlas.n_concepts = "pixels", 3
    found = run(atlas.code(), crp, demo, store)["atlas"]
    assert found.pixel_mode
    assert found.channels == [concept["channel"] for concept in atlas.concepts]


def test_the_explorer_code_runs_whole_and_the_code_button_follows_the_state(explorer, crp, demo, store):
    explorer.state.sample = 4
    namespace = run(explorer.code(), crp, demo, store)
    for name in ("x", "target", "heatmap", "ranking", "conditioned", "heatmaps", "references", "atlas", "graph"):
        assert name in namespace
    assert explorer.code().count("x, label = dataset[4]") == 1  # the shared lines once

    view = explorer.heatmaps
    assert view.snippet == ""  # nothing is written until the panel opens
    view._on_code_message(view, {"type": "code", "open": True}, [])
    assert view.snippet == view.code()
    assert "dataset[4]" in view.snippet
    explorer.state.sample = 7
    assert "dataset[7]" in view.snippet  # the open panel follows the state
    view._on_code_message(view, {"type": "code", "open": False}, [])
    explorer.state.sample = 8
    assert "dataset[7]" in view.snippet  # closed: not written again


def test_a_view_without_a_store_or_a_channel_says_what_is_missing(crp, demo):
    explorer = cw.Explorer(crp, demo.dataset, classes=demo.classes, worker=Worker(synchronous=True))
    assert "No reference store yet" in explorer.gallery.code()
    assert "cw.scan(crp, dataset" in explorer.gallery.code()
    run(explorer.code(), crp, demo, None)  # runs without a store: the gallery's part is a comment
