"""The 1-D demo world and the explorer on time series (CRP paper Sec. 3.5, Fig. 18): a deterministic generator whose
masks line up with the planted patterns, a shipped model that learned them, channels whose relevance sits on them,
line-plot pictures, and an explorer whose views compute on 1-D inputs."""

import json

import numpy as np
import pytest
import torch
from zoo import random_images, small_cnn

import crp_widgets as cw
from crp_widgets.demo import signals as world
from crp_widgets.demo import train_signals
from crp_widgets.render.signals import heatmap_picture, input_picture, plot_heatmap, plot_signal
from crp_widgets.widgets.sample import thumbnail
from crp_widgets.widgets.session import Session
from crp_widgets.widgets.signal import SignalView, region_interval
from crp_widgets.widgets.worker import Worker

LAYER = "features.conv3"


@pytest.fixture(scope="module")
def demo():
    return cw.demo.load_signals(length=360)


@pytest.fixture(scope="module")
def crp(demo):
    return cw.CRP(demo.model)


# ------------------------------------------------------------------------------------------------------ generator


def test_signals_are_a_pure_function_of_seed_and_index():
    data = world.SignalDataset(50, seed=3)
    later, _ = data[17]
    for i in (3, 40, 17):  # access order does not matter
        data[i]
    again, label = data[17]
    assert torch.equal(later, again)
    assert label == 17 % 6
    assert later.shape == (world.CHANNELS, world.LENGTH)
    assert later.dtype == torch.float32
    assert not torch.equal(world.SignalDataset(50, seed=4)[17][0], later)
    assert data.describe() == {"name": "crp_widgets.demo.signals", "version": "1", "seed": 3, "length": 50}
    with pytest.raises(IndexError):
        data[50]


def test_classes_are_pairs_of_shared_patterns():
    assert len(world.CLASS_NAMES) == 6
    assert len(set(world.CLASS_NAMES)) == 6
    for pattern in world.PATTERNS:
        assert sum(pattern in pair for pair in world.CLASS_PATTERNS) == 3
    data = world.SignalDataset(12, seed=1)
    for i in range(12):
        assert set(data.masks(i)) == set(world.CLASS_PATTERNS[i % 6])


def test_masks_line_up_with_the_planted_patterns():
    data = world.SignalDataset(60, seed=2)
    for i in range(60):
        x, _ = data[i]
        masks = data.masks(i)
        assert not (masks[world.CLASS_PATTERNS[i % 6][0]] & masks[world.CLASS_PATTERNS[i % 6][1]]).any()
        anywhere = np.logical_or.reduce(list(masks.values()))
        for planted in data.planted(i):
            mask = masks[planted.pattern]
            line = x[planted.channel].numpy()
            inside, outside = np.mean(line[mask] ** 2), np.mean(line[~anywhere] ** 2)
            assert inside > 3 * outside, (i, planted.pattern, inside, outside)
            if planted.pattern in ("peak", "valley"):  # the extreme sample away from the other pattern is inside
                free = np.where(mask | ~anywhere, line, np.nan)
                extreme = np.nanargmax(free) if planted.pattern == "peak" else np.nanargmin(free)
                assert mask[extreme]
            assert abs(np.flatnonzero(mask).mean() - planted.centre) < 1.5


def test_training_is_deterministic(tmp_path):
    options = ["--train-size", "240", "--heldout-size", "60", "--epochs", "1", "--threads", "1"]
    first = train_signals.main([*options, "--out", str(tmp_path / "a")])
    second = train_signals.main([*options, "--out", str(tmp_path / "b")])
    name = train_signals.WEIGHTS.name
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["heldout_accuracy"] == second["heldout_accuracy"]


# ---------------------------------------------------------------------------------------------------- the model


def test_shipped_model_reaches_its_heldout_accuracy(demo):
    heldout = world.SignalDataset(300, seed=world.EXPLORE_SEED)
    x, labels = heldout.tensors()
    with torch.no_grad():
        accuracy = (demo.model(x).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95
    metadata = json.loads(train_signals.METADATA.read_text())
    assert metadata["heldout_accuracy"] >= 0.95
    assert metadata["classes"] == demo.classes
    assert demo.metadata == metadata
    assert not demo.model.training


def test_top_channel_of_each_pattern_puts_its_relevance_on_the_pattern(demo, crp):
    """Planted check: the channel most relevant inside a pattern's mask (Eq. 11-12) on some signals keeps its
    conditional heatmap (Eq. 9) on that pattern in other signals, far above the mask's share of the time axis."""
    for pattern in demo.concepts:
        having = [i for i in range(len(demo.dataset)) if pattern in demo.masks(i)]
        found, checked = having[:6], having[6:14]
        total = 0
        for i in found:
            x, y = demo.dataset[i]
            total = total + crp.region_relevance(x, LAYER, torch.from_numpy(demo.masks(i)[pattern]), y).relevance
        channel = int(total.argmax())
        fractions, chance = [], []
        for i in checked:
            x, y = demo.dataset[i]
            mask = demo.masks(i)[pattern]
            heatmap = crp.conditional_heatmaps(x, LAYER, [channel], y)[0].clamp(min=0).numpy()
            fractions.append(heatmap[mask].sum() / heatmap.sum())
            chance.append(mask.mean())
        assert np.mean(fractions) > 0.6, (pattern, channel, fractions)
        assert np.mean(fractions) > 3 * np.mean(chance), (pattern, channel, fractions)


# ------------------------------------------------------------------------------------------------------ pictures


def test_line_plots_draw_lines_window_and_relevance_band():
    signal = np.zeros((2, 100), dtype=np.float32)
    signal[0, 50] = 1.0
    relevance = np.zeros(100)
    relevance[20:30] = 1.0
    relevance[70:80] = -1.0
    picture = plot_signal(signal, relevance, window=(10, 40), size=(100, 80))
    assert picture.shape == (80, 100, 3)
    assert picture.dtype == np.uint8
    band = picture[-3]
    assert tuple(band[25]) == (255, 0, 0)
    assert tuple(band[75]) == (0, 0, 255)
    assert tuple(band[55]) == (255, 255, 255)
    assert tuple(picture[5, 25]) == (255, 236, 179)  # the shaded window
    assert tuple(picture[5, 60]) == (255, 255, 255)
    bars = plot_heatmap(relevance, size=(100, 40))
    assert tuple(bars[5, 25]) == (255, 0, 0)
    assert tuple(bars[35, 75]) == (0, 0, 255)
    assert tuple(bars[5, 75]) != (0, 0, 255)
    assert input_picture(torch.from_numpy(signal)).shape == (96, 96, 3)
    assert heatmap_picture(np.ones((4, 5))).shape == (4, 5, 3)  # images keep their per-pixel colours
    assert thumbnail(torch.from_numpy(signal), 64).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="length"):
        plot_signal(signal, relevance[:50])
    with pytest.raises(ValueError, match=r"\[C, L\]"):
        plot_signal(np.zeros((1, 2, 3)))


# ------------------------------------------------------------------------------------------------------ explorer


@pytest.fixture(scope="module")
def store(demo, crp, tmp_path_factory):
    subset = world.SignalDataset(120, seed=world.EXPLORE_SEED)  # the first 120 signals of demo.dataset
    store = cw.scan(crp, subset, [LAYER, "features.conv2"], tmp_path_factory.mktemp("signals") / "store", k=4,
                    progress=False)  # fmt: skip
    return store, subset


@pytest.fixture
def explorer(demo, store):
    store, subset = store
    return cw.Explorer(demo.model, subset, store=store, worker=Worker(synchronous=True))


def test_explorer_on_signals_shows_line_plots_and_no_atlas(explorer, crp):
    assert isinstance(explorer.heatmaps, SignalView)
    assert explorer.atlas is None
    assert "Concept atlas" not in explorer.tabs.titles
    assert "References" in explorer.tabs.titles
    view = explorer.heatmaps
    x, _ = explorer.session.dataset[0]
    predicted = int(crp.predict(x).argmax())
    assert view.error == ""
    assert torch.equal(torch.from_numpy(view.signal), x)
    np.testing.assert_allclose(view.heatmap, crp.attribute(x, predicted).heatmap.numpy(), rtol=1e-4, atol=1e-6)
    band = view.heatmap / np.abs(view.heatmap).max()  # the relevance band under the lines, normalised (A.3.1)
    np.testing.assert_allclose(view._band.color, band, rtol=1e-6)
    ranking = crp.channel_relevance(x, LAYER, predicted)
    assert view.channel_info["channels"] == ranking.order[: view.top_k].tolist()
    assert len(view._channel_box.children) == view.top_k
    # the sample view draws the signal with its relevance band, thumbnails as line plots
    assert explorer.sample.error == ""
    assert explorer.sample.heatmap is None
    assert explorer.sample.image.shape == (160, 320, 3)
    assert all(t.shape == (48, 64, 3) for t in explorer.sample.thumbnails)


def test_channel_click_and_time_region_update_the_heatmaps(explorer, crp):
    view, state = explorer.heatmaps, explorer.state
    x, _ = explorer.session.dataset[0]
    predicted = int(crp.predict(x).argmax())
    channel = int(crp.channel_relevance(x, LAYER, predicted).order[3])
    explorer.channels.toggle(channel)
    assert view.channel_info["channels"] == [channel]
    assert view.channel_info["selected"]
    expected = crp.conditional_heatmaps(x, LAYER, [channel], predicted)[0].numpy()
    np.testing.assert_allclose(view.channel_heatmaps[0], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(view.heatmap, crp.attribute(x, predicted, {LAYER: [channel]}).heatmap.numpy(),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    explorer.channels.clear()
    view._brush.selected = [30.4, 99.6]  # a drag on the time axis
    assert region_interval(state.region) == (31, 100)
    assert state.region.dtype == bool
    mask = torch.from_numpy(state.region)
    ranked = crp.region_relevance(x, LAYER, mask, predicted)
    assert view.channel_info["region"] == [31, 100]
    assert view.channel_info["channels"] == ranked.order[: view.top_k].tolist()
    np.testing.assert_allclose(view.channel_info["shares"], ranked.share_of_region[ranked.order[: view.top_k]],
                               rtol=1e-4)  # fmt: skip
    view.select_region(None, None)
    assert state.region is None
    assert view._brush.selected is None
    assert view.channel_info["region"] is None
    state.region = np.arange(256) >= 200  # set from Python: the brush follows
    assert list(view._brush.selected) == [200, 255]
    state.region = np.ones(10, dtype=bool)  # the wrong length: the error shows inside the view, which keeps working
    assert "region" in view.error.lower() or "mask" in view.error.lower()
    state.region = None
    assert view.error == ""


def test_gallery_and_graph_show_one_dimensional_references(explorer):
    explorer.state.channel = int(explorer.channels.ranking[0][0])
    explorer.tabs.selected_index = explorer.tabs.titles.index("References")
    gallery = explorer.gallery
    assert gallery.error == ""
    assert gallery.groups
    assert len(gallery.images) == len(gallery.groups[0]["tiles"]) > 0
    assert all(image.shape == (96, 96, 3) for image in gallery.images)
    crop = gallery.images[0]
    for view in ("sample", "heatmap", "masked"):
        gallery.view = view
        assert gallery.error == ""
        assert gallery.images[0].shape == (96, 96, 3)
    gallery.view = "sample"
    assert (gallery.images[0] == (255, 236, 179)).all(axis=-1).any()  # the receptive field is shaded
    assert not np.array_equal(gallery.images[0], crop)
    explorer.tabs.selected_index = explorer.tabs.titles.index("Attribution graph")
    graph = explorer.graph
    assert graph.error == ""
    assert graph.graph["nodes"]
    assert graph.image.shape == (96, 96, 3)
    assert len(graph.heatmaps) == len(graph.graph["nodes"])
    assert any(node["thumbnail"] is not None for node in graph.graph["nodes"])
    assert all(t.shape == (96, 96, 3) for t in graph.thumbnails)


def test_signal_view_refuses_images_inside_the_widget():
    view = SignalView(Session(small_cnn(seed=3), random_images(4, 0, [str(i) for i in range(10)]),
                              worker=Worker(synchronous=True)))  # fmt: skip
    assert "1-D inputs [C, L]" in view.error
    assert view.channel_heatmaps is None  # nothing drawn, for either view
