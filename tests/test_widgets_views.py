"""Controllers of the sample view, the channel selector and the conditional heatmaps: what each interaction computes
equals the engine's answer, the views stay linked through one state, and errors show inside the widgets."""

import io
import threading

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image
from zoo import random_images, small_cnn

from crp_widgets.demo import load as load_demo
from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.channels import ChannelSelector, default_layer
from crp_widgets.widgets.component import Component
from crp_widgets.widgets.heatmaps import ConditionalHeatmaps
from crp_widgets.widgets.sample import SampleView, predictions, thumbnail
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.worker import Worker

CLASSES = [f"class {i}" for i in range(10)]


def dataset(n=30, seed=0):
    return random_images(n, seed, CLASSES)


@pytest.fixture(scope="module")
def model():
    return small_cnn(seed=3)


@pytest.fixture(scope="module")
def data():
    return dataset()


@pytest.fixture
def session(model, data):
    return Session(model, data, worker=Worker(synchronous=True))


@pytest.fixture
def views(session):
    state = ExplorerState()
    return SampleView(session, state), ChannelSelector(session, state), ConditionalHeatmaps(session, state)


def reference(model):
    """An independent engine, so that the widgets' caches cannot make the comparison pass."""
    return CRP(model)


def predicted(crp, x):
    return int(crp.predict(x).argmax())


def decode_png(image):
    return np.asarray(Image.open(io.BytesIO(bytes(image))))


def message(widget, content):
    """Deliver a custom message as the front end sends it."""
    widget._handle_custom_msg(content, [])


# ------------------------------------------------------------------------------------------------------ sample view


def test_sample_view_pages_thumbnails_with_label_and_prediction(model, data, session):
    view = SampleView(session, page_size=8)
    assert (view.count, view.page) == (30, 0)
    assert [info["index"] for info in view.thumbnail_info] == list(range(8))
    crp = reference(model)
    for info in view.thumbnail_info:
        x, label = data[info["index"]]
        assert info["label"] == int(label)
        assert info["prediction"] == predicted(crp, x)
    np.testing.assert_array_equal(view.thumbnails[3], thumbnail(data[3][0]))
    view.page = 3  # the last, partial page
    assert [info["index"] for info in view.thumbnail_info] == [24, 25, 26, 27, 28, 29]
    view.page = 99
    assert view.page == 3
    _, paths, _ = _remove_buffers(view.get_state())
    assert ["thumbnails", 0] in paths
    assert ["image"] in paths
    assert ["heatmap", "data"] in paths


def test_thumbnails_shrink_large_images_only():
    assert thumbnail(torch.rand(3, 200, 100)).shape == (64, 32, 3)
    assert thumbnail(torch.rand(3, 16, 16)).shape == (16, 16, 3)


def test_selecting_a_sample_moves_the_page_and_explains_it(model, data, session):
    view = SampleView(session, page_size=8)
    message(view, {"type": "select", "index": 19})
    assert (view.state.sample, view.sample, view.page) == (19, 19, 2)
    x, label = data[19]
    crp = reference(model)
    assert (view.label, view.prediction, view.explained) == (int(label), predicted(crp, x), predicted(crp, x))
    np.testing.assert_allclose(view.heatmap, crp.attribute(x, predicted(crp, x)).heatmap, atol=1e-6)
    np.testing.assert_array_equal(view.image, np.floor(x.permute(1, 2, 0).numpy() * 255 + 0.5))
    view.page = 3  # browsing other pages keeps the explained sample
    view.explain(4)
    assert (view.page, view.state.sample) == (3, 19)
    view.state.sample = 3  # set from Python: the page follows
    assert view.page == 0


def test_choosing_a_class_explains_it_and_prediction_is_the_default(model, data, session):
    view = SampleView(session)
    x, _ = data[0]
    crp = reference(model)
    assert view.classes == CLASSES
    message(view, {"type": "target", "target": 7})
    assert (view.state.target, view.target, view.explained) == (7, 7, 7)
    assert view.prediction == predicted(crp, x)
    np.testing.assert_allclose(view.heatmap, crp.attribute(x, 7).heatmap, atol=1e-6)
    view.explain("class 2")
    assert view.state.target == 2
    message(view, {"type": "target", "target": None})
    assert view.state.target is None
    assert view.explained == predicted(crp, x)


def test_a_custom_input_is_explained_and_a_pil_image_goes_through_the_transform(model, data):
    def transform(picture):
        return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)

    session = Session(model, data, transform=transform, worker=Worker(synchronous=True))
    view = SampleView(session)
    crp = reference(model)
    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    view.show(Image.fromarray(pixels))
    x = transform(Image.fromarray(pixels))
    assert view.custom
    assert view.label is None
    np.testing.assert_allclose(view.heatmap, crp.attribute(x, predicted(crp, x)).heatmap, atol=1e-6)
    view.select(0)
    assert view.state.custom is None
    assert not view.custom
    np.testing.assert_allclose(view.heatmap, crp.attribute(data[0][0], predicted(crp, data[0][0])).heatmap, atol=1e-6)


# -------------------------------------------------------------------------------------------------- channel selector


def test_the_default_layer_is_the_last_convolution(session):
    assert default_layer(session.crp) == "6"
    selector = ChannelSelector(session)
    assert selector.state.layer == selector.layer == selector.ranking_layer == "6"
    assert selector.layers == session.crp.layer_names


def test_ranking_equals_channel_relevance_under_the_conditions_on_other_layers(model, data, views):
    _, selector, _ = views
    state = selector.state
    state.sample, state.target = 4, 3
    state.conditions = {"4": [1, 2], "6": [0], "10": [5]}
    x, _ = data[4]
    expected = reference(model).channel_relevance(x, "6", 3, {"4": [1, 2], "10": [5]})
    np.testing.assert_array_equal(selector.ranking[:, 0], expected.order.numpy())
    np.testing.assert_allclose(selector.ranking[:, 1], expected.relevance[expected.order], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(selector.ranking[:, 2], expected.share[expected.order], rtol=1e-5, atol=1e-6)
    assert selector.total == pytest.approx(expected.total, rel=1e-5)
    _, paths, _ = _remove_buffers(selector.get_state())
    assert ["ranking", "data"] in paths
    # The explained class defaults to the prediction.
    state.target = None
    expected = reference(model).channel_relevance(x, "6", predicted(reference(model), x), {"4": [1, 2], "10": [5]})
    np.testing.assert_array_equal(selector.ranking[:, 0], expected.order.numpy())


def test_clicking_channels_edits_the_conditions_with_eq_8_semantics(views):
    _, selector, _ = views
    state = selector.state
    message(selector, {"type": "toggle", "channel": 3})
    message(selector, {"type": "toggle", "channel": 1})
    assert state.conditions == {"6": [1, 3]}  # OR within a layer
    assert state.channel == 1
    message(selector, {"type": "layer", "layer": "4"})
    assert (state.layer, selector.ranking_layer) == ("4", "4")
    selector.toggle(7)
    assert state.conditions == {"6": [1, 3], "4": [7]}  # AND across layers
    assert selector.conditions == state.conditions
    message(selector, {"type": "toggle", "channel": 7})
    assert state.conditions == {"6": [1, 3]}
    assert state.channel == 7
    message(selector, {"type": "remove", "layer": "6", "channel": 3})
    assert state.conditions == {"6": [1]}
    selector.toggle(2)
    message(selector, {"type": "clear"})
    assert state.conditions == {}


def test_a_selector_works_alone_on_a_model_and_a_custom_input(model):
    selector = ChannelSelector(model, session_options={"worker": Worker(synchronous=True)})
    assert "no dataset" in selector.error
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    selector.state.custom = x
    assert selector.error == ""
    crp = reference(model)
    expected = crp.channel_relevance(x, "6", predicted(crp, x))
    np.testing.assert_array_equal(selector.ranking[:, 0], expected.order.numpy())


@pytest.fixture(scope="module")
def store(model, data, tmp_path_factory):
    return scan(CRP(model), data, ["6"], tmp_path_factory.mktemp("refs"), k=4, class_k=2, progress=False)


def test_hovering_a_channel_previews_its_reference_crops(model, data, store):
    session = Session(model, data, store=store, worker=Worker(synchronous=True))
    selector = ChannelSelector(session)
    assert selector.has_references
    message(selector, {"type": "preview", "channel": 2})
    assert selector.preview_for == {"layer": "6", "channel": 2}
    views = session.views.views("6", 2, k=6)
    assert len(selector.preview) == len(views) > 0
    for image, view in zip(selector.preview, views):
        np.testing.assert_array_equal(image, thumbnail(view.crop, 48))
    selector.state.layer = "4"  # not in the store: no previews
    assert not selector.has_references
    selector.show_references(1)
    assert selector.preview_for == {"layer": "6", "channel": 2}


# ------------------------------------------------------------------------------------------- conditional heatmaps


def test_the_grid_shows_the_top_k_channels_with_conditional_heatmaps(model, data, views):
    _, _, heatmaps = views
    heatmaps.state.sample = 2
    heatmaps.state.conditions = {"4": [0, 5]}
    x, _ = data[2]
    crp = reference(model)
    target = predicted(crp, x)
    ranking = crp.channel_relevance(x, "6", target, {"4": [0, 5]})
    channels = [int(c) for c in ranking.order[:6]]
    assert heatmaps.grid_info["channels"] == channels
    assert not heatmaps.grid_info["selected"]
    np.testing.assert_allclose(heatmaps.grid_info["shares"], ranking.share[channels], rtol=1e-5, atol=1e-6)
    expected = crp.conditional_heatmaps(x, "6", channels, target, {"4": [0, 5]})
    np.testing.assert_allclose(heatmaps.grid, expected, rtol=1e-5, atol=1e-7)
    for channel, heatmap in zip(channels, heatmaps.grid):  # each under its own channel, in rank order (Eq. 9)
        single = crp.attribute(x, target, {"4": [0, 5], "6": [channel]}).heatmap
        np.testing.assert_allclose(heatmap, single, rtol=1e-4, atol=1e-6)
    conditioned = crp.attribute(x, target, {"4": [0, 5]}).heatmap
    np.testing.assert_allclose(heatmaps.heatmap, conditioned, atol=1e-6)
    assert heatmaps.caption == f"Relevance for class {target}, only through 4 channels 0 or 5"
    assert heatmaps.heatmap_info["about"].startswith(f"R(x | y = class {target} \N{LOGICAL AND} 4: 0 \N{LOGICAL OR} 5)")
    whole = crp.attribute(x, target).heatmap
    assert heatmaps.heatmap_info["kept"] == pytest.approx(float(conditioned.abs().sum() / whole.abs().sum()), rel=1e-4)
    assert heatmaps.grid_info["magnitude"] == pytest.approx(float(ranking.relevance.abs().sum()), rel=1e-5)
    assert heatmaps.grid_info["conditions"] == "4 channels 0 or 5"
    assert heatmaps.grid_info["input"] == "sample #2"
    heatmaps.top_k = 3
    assert heatmaps.grid_info["channels"] == channels[:3]


def test_selected_channels_replace_the_top_k_in_rank_order(model, data, views):
    _, selector, heatmaps = views
    x, _ = data[0]
    crp = reference(model)
    target = predicted(crp, x)
    ranking = crp.channel_relevance(x, "6", target)
    low, high = int(ranking.order[5]), int(ranking.order[0])
    selector.toggle(low)
    selector.toggle(high)
    assert heatmaps.grid_info["channels"] == [high, low]
    assert heatmaps.grid_info["selected"]
    np.testing.assert_allclose(heatmaps.grid, crp.conditional_heatmaps(x, "6", [high, low], target), atol=1e-6)
    np.testing.assert_allclose(heatmaps.grid[1], crp.attribute(x, target, {"6": [low]}).heatmap, atol=1e-6)
    # The conditions' heatmap ORs the two channels (Eq. 8).
    np.testing.assert_allclose(heatmaps.heatmap, crp.attribute(x, target, {"6": [low, high]}).heatmap, atol=1e-6)


def test_class_free_localisation_starts_from_the_activations(model, data, views):
    _, _, heatmaps = views
    state = heatmaps.state
    state.layer, state.conditions = "4", {"6": [2], "0": [1]}
    message(heatmaps, {"type": "localization", "localization": True})
    assert state.localization
    assert heatmaps.localization
    x, _ = data[0]
    crp = reference(model)
    channels = heatmaps.grid_info["channels"]
    assert channels == [int(c) for c in crp.channel_relevance(x, "4", predicted(crp, x), state.conditions).order[:6]]
    # Conditions above the layer cannot apply to a start at its activations; those below still do.
    np.testing.assert_allclose(heatmaps.grid, crp.conditional_heatmaps(x, "4", channels, None, {"0": [1]}), atol=1e-6)
    assert "(6) do not apply" in heatmaps.grid_info["note"]
    np.testing.assert_allclose(heatmaps.heatmap, crp.attribute(x, None, state.conditions).heatmap, atol=1e-6)
    assert "for no class" in heatmaps.caption
    assert "class-free" in heatmaps.heatmap_info["about"]
    state.localization = False
    assert not heatmaps.localization
    assert heatmaps.grid_info["note"] == ""


# ------------------------------------------------------------------------------------------ linking, caching, errors


def test_changing_the_sample_or_class_updates_every_view(model, data, views):
    sample_view, selector, heatmaps = views
    state = sample_view.state
    selector.toggle(1)
    sample_view.select(11)
    sample_view.explain(5)
    x, _ = data[11]
    crp = reference(model)
    np.testing.assert_allclose(sample_view.heatmap, crp.attribute(x, 5).heatmap, atol=1e-6)
    np.testing.assert_array_equal(selector.ranking[:, 0], crp.channel_relevance(x, "6", 5).order.numpy())
    np.testing.assert_allclose(heatmaps.heatmap, crp.attribute(x, 5, state.conditions).heatmap, atol=1e-6)
    np.testing.assert_allclose(heatmaps.grid, crp.conditional_heatmaps(x, "6", [1], 5), atol=1e-6)
    np.testing.assert_array_equal(heatmaps.image, sample_view.image)


def test_revisiting_a_sample_or_channel_is_a_cache_hit(session, views):
    _, selector, _ = views
    calls = []
    engine = session.crp.conditional_heatmaps
    session.crp.conditional_heatmaps = lambda *args, **kwargs: calls.append(args[1:3]) or engine(*args, **kwargs)
    state = selector.state
    for sample in (1, 2, 1, 2):
        state.sample = sample
    assert len(calls) == 2
    selector.toggle(4)
    selector.toggle(4)
    selector.toggle(4)
    assert len(calls) == 3


def test_computation_runs_off_the_calling_thread_and_busy_shows_while_waiting(model, data):
    session = Session(model, data)
    heatmaps = ConditionalHeatmaps(session)
    assert session.worker.wait(30)
    threads, release = [], threading.Event()
    engine = session.crp.conditional_heatmaps

    def slow(*args, **kwargs):
        threads.append(threading.get_ident())
        release.wait(10)
        return engine(*args, **kwargs)

    session.crp.conditional_heatmaps = slow
    heatmaps.state.sample = 8
    assert heatmaps.busy
    release.set()
    assert session.worker.wait(30)
    assert not heatmaps.busy
    assert threads
    assert threading.get_ident() not in threads
    crp = reference(model)
    x = data[8][0]
    channels = heatmaps.grid_info["channels"]
    np.testing.assert_allclose(heatmaps.grid, crp.conditional_heatmaps(x, "6", channels, predicted(crp, x)), atol=1e-6)


def test_a_bad_layer_shows_inside_the_widgets_and_the_next_valid_layer_clears_it(views):
    sample_view, selector, heatmaps = views
    selector.state.layer = "features.99"
    for view in (selector, heatmaps):
        assert "unknown layer 'features.99'" in view.error
        assert "'6'" in view.error  # names the valid layers
    assert sample_view.error == ""
    assert heatmaps.grid is None
    assert heatmaps.grid_info == {}
    assert selector.ranking is None
    before = heatmaps.heatmap.copy()
    selector.state.sample = 1  # the conditions' heatmap still follows; the grid keeps failing
    assert not np.array_equal(heatmaps.heatmap, before)
    assert "features.99" in heatmaps.error
    message(selector, {"type": "layer", "layer": "4"})
    assert selector.error == heatmaps.error == ""
    assert selector.ranking_layer == heatmaps.grid_info["layer"] == "4"


def test_a_failed_computation_shows_and_the_widgets_keep_working(views):
    sample_view, selector, heatmaps = views
    sample_view.explain(42)  # the model has 10 outputs
    for view in views:
        assert "class index 42 is out of range" in view.error
    sample_view.explain(None)
    assert [view.error for view in views] == ["", "", ""]
    sample_view.show(torch.rand(2, 16, 16))  # a wrong input
    for view in views:
        assert "2 channels" in view.error
    sample_view.select(0)
    assert [view.error for view in views] == ["", "", ""]
    selector.state.conditions = {"6": [1, 99]}  # set from Python: a channel the layer does not have
    assert "channel 99 is out of range" in heatmaps.error
    assert "valid: 0 to 15" in heatmaps.error


def test_an_error_stays_until_the_view_that_failed_succeeds(session):
    component = Component(session)
    shown = []
    component.schedule("a", None, lambda: 1 / 0, shown.append)
    component.schedule("b", None, lambda: "fine", shown.append)
    assert component.error == "division by zero"
    component.schedule("a", None, lambda: "recovered", shown.append)
    assert component.error == ""
    assert shown == ["fine", "recovered"]


def test_thumbnail_predictions_during_a_background_scan_do_not_disturb_it(tmp_path):
    """The sample strip's plain forward passes (crp.evaluate) share the model with a scan's recorded ones."""
    demo = load_demo(length=256)
    crp = CRP(demo.model)
    inputs = [demo.dataset[i][0] for i in range(16)]
    with torch.no_grad():
        expected = demo.model(torch.stack(inputs)).argmax(1).tolist()
    job = scan(crp, demo.dataset, ["features.conv3", "features.conv4"], tmp_path, k=4, batch_size=8, background=True)
    rounds = 0
    while job.running() or rounds == 0:
        assert predictions(crp, inputs) == expected
        rounds += 1
    job.wait()  # raises the scan's error, if any
    assert rounds > 1
    assert len(job.wait().references("features.conv4", 0, k=4)) == 4
