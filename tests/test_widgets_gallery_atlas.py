"""Controllers of the reference gallery and the concept atlas: what each interaction shows equals the engine's and
the store's answer, the region drawn in the front end reaches the kernel, the gallery fills while a scan runs, and
errors show inside the widgets, which keep working."""

import io
import time

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image
from test_scan import Interrupting
from zoo import small_cnn

from crp_widgets.engine import CRP
from crp_widgets.engine.atlas import assign_concepts, superpixels
from crp_widgets.engine.scan import scan
from crp_widgets.engine.store import StoreMismatchError, open_store
from crp_widgets.render.images import image_to_uint8, overlay
from crp_widgets.widgets.atlas import ConceptAtlas
from crp_widgets.widgets.gallery import NO_STORE, ReferenceGallery
from crp_widgets.widgets.session import ExplorerState, Session
from crp_widgets.widgets.worker import Worker

CLASSES = [f"class {i}" for i in range(10)]
LAYERS = ["4", "6"]
SIZE = 32


def dataset(n=40, seed=0):
    """Images of four coloured quadrants (structure for SLIC), with labels."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(n, 4, 3, 1, 1, generator=generator)
    half = SIZE // 2
    images = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.2
    for q, (top, left) in enumerate(((0, 0), (0, half), (half, 0), (half, half))):
        images[:, :, top : top + half, left : left + half] += 0.8 * colours[:, q]
    data = torch.utils.data.TensorDataset(images.clamp(0, 1), torch.randint(0, 10, (n,), generator=generator))
    data.classes = CLASSES
    return data


@pytest.fixture(scope="module")
def model():
    return small_cnn(seed=3)


@pytest.fixture(scope="module")
def data():
    return dataset()


@pytest.fixture(scope="module")
def store(model, data, tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    return scan(CRP(model), data, LAYERS, path, k=6, class_k=3, batch_size=8, progress=False)


@pytest.fixture
def session(model, data, store):
    return Session(model, data, store, worker=Worker(synchronous=True))


def decode_png(image):
    return np.asarray(Image.open(io.BytesIO(bytes(image))))


def tiles(group):
    return [(t["dataset"], t["index"], t["value"]) for t in group["tiles"]]


def expected(store, *args, **kwargs):
    return [(r.dataset, r.index, r.value) for r in store.references(*args, **kwargs)]


def front_end(widget, **traits):
    """Set traits as the front end does: JSON (with binary buffers) through ``set_state``."""
    widget.set_state(traits)


def region_message(mask):
    return {"data": memoryview(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()), "shape": list(mask.shape),
            "dtype": "uint8"}  # fmt: skip


def predicted(crp, x):
    return int(crp.predict(x).argmax())


# --------------------------------------------------------------------------------------------------------- gallery


@pytest.mark.parametrize(("mode", "maximization"), [("relevance", "sum"), ("relevance", "max"),
                                                    ("activation", "sum"), ("activation", "max")])  # fmt: skip
def test_gallery_shows_the_stores_references_for_mode_and_target(session, store, mode, maximization):
    gallery = ReferenceGallery(session, layer="6", channel=3, mode=mode, maximization=maximization, k=5)
    assert gallery.error == ""
    assert gallery.message == ""
    (group,) = gallery.groups
    assert tiles(group) == expected(store, "6", 3, mode=mode, target=maximization, k=5)
    assert group["title"] == f"{'RelMax' if mode == 'relevance' else 'ActMax'} ({maximization})"
    assert len(gallery.images) == len(group["tiles"]) == 5
    views = session.views.views("6", 3, mode=mode, target=maximization, k=5)
    for image, view in zip(gallery.images, views):  # receptive-field crops by default (Fig. 8)
        np.testing.assert_array_equal(image, image_to_uint8(view.crop))


def test_gallery_views_and_heatmap_init(session):
    gallery = ReferenceGallery(session, layer="6", channel=1, k=3)
    views = session.views.views("6", 1, k=3)
    gallery.view = "sample"
    np.testing.assert_array_equal(gallery.images[0], image_to_uint8(views[0].sample))
    gallery.view = "masked"
    np.testing.assert_array_equal(gallery.images[1], image_to_uint8(views[1].masked))
    gallery.view = "heatmap"  # each drawn over its crop
    np.testing.assert_array_equal(gallery.images[2], overlay(views[2].crop, views[2].crop_heatmap, 0.6))
    gallery.init = "activation"  # class-free heatmaps of the references (Sec. 2.3.5)
    free = session.views.views("6", 1, k=3, init="activation")
    np.testing.assert_array_equal(gallery.images[2], overlay(free[2].crop, free[2].crop_heatmap, 0.6))
    assert [t["target"] for t in gallery.groups[0]["tiles"]] == [None, None, None]


def test_gallery_class_tabs_show_class_conditional_references(session, store):
    gallery = ReferenceGallery(session, layer="4", channel=2, k=3)
    ranking = store.top_classes("4", 2, k=5)
    assert [(t["cls"], t["name"]) for t in gallery.class_tabs] == [(c, CLASSES[c]) for c, _ in ranking]
    cls = ranking[1][0]
    front_end(gallery, cls=cls)  # a tab clicked
    (group,) = gallery.groups
    assert tiles(group) == expected(store, "4", 2, cls=cls, k=3)
    assert group["title"] == f"RelMax (sum), class {CLASSES[cls]}"
    assert {t["target"] for t in group["tiles"]} == {CLASSES[cls]}  # heatmaps explain the tab's class
    front_end(gallery, compare=True)  # Fig. 9 side by side; ActMax has no class-conditional references
    relmax, actmax = gallery.groups
    assert tiles(relmax) == expected(store, "4", 2, cls=cls, k=3)
    assert tiles(actmax) == expected(store, "4", 2, mode="activation", k=3)
    assert "all classes" in actmax["title"]
    assert len(gallery.images) == 6
    gallery.state.channel = 5  # another channel: its own class tabs, back to all classes
    assert gallery.cls is None
    assert [t["cls"] for t in gallery.class_tabs] == [c for c, _ in store.top_classes("4", 5, k=5)]
    assert tiles(gallery.groups[0]) == expected(store, "4", 5, k=3)


def test_gallery_follows_the_shared_state_and_sets_it(session, store):
    state = ExplorerState()
    gallery = ReferenceGallery(session, state)
    assert "Choose a layer and a channel" in gallery.message
    assert gallery.store_info["layers"] == {"4": 16, "6": 16}
    state.layer, state.channel = "6", 7
    assert tiles(gallery.groups[0]) == expected(store, "6", 7, k=8)
    front_end(gallery, channel=9)  # the channel typed in the gallery's header
    assert state.channel == 9
    assert tiles(gallery.groups[0]) == expected(store, "6", 9, k=8)


def test_gallery_without_a_store_says_how_to_make_one(model, data, store):
    session = Session(model, data, worker=Worker(synchronous=True))
    gallery = ReferenceGallery(session, layer="6", channel=0)
    assert gallery.message == NO_STORE
    assert "cw.scan(" in gallery.message
    assert gallery.groups == []
    assert gallery.images == ()
    gallery.attach_store(store)
    assert gallery.message == ""
    assert tiles(gallery.groups[0]) == expected(store, "6", 0, k=8)


def test_gallery_errors_show_inside_and_clear_on_the_next_valid_action(data, store, session, tmp_path):
    gallery = ReferenceGallery(session, layer="6", channel=0)
    other = scan(CRP(small_cnn(seed=4)), data, ["6"], tmp_path, k=2, batch_size=20, progress=False)
    with pytest.raises(StoreMismatchError, match="made for another model"):
        gallery.attach_store(other)
    assert "made for another model" in gallery.error
    assert session.store is store  # the gallery keeps working with the store it had
    assert tiles(gallery.groups[0]) == expected(store, "6", 0, k=8)
    gallery.state.channel = 1
    assert gallery.error == ""
    gallery.state.layer = "10"  # a layer the store does not hold
    assert "layer '10' is not in this reference store; it holds '4', '6'" in gallery.error
    gallery.state.layer = "4"
    assert gallery.error == ""
    assert tiles(gallery.groups[0]) == expected(store, "4", 1, k=8)


def test_gallery_fills_progressively_while_the_scan_runs(model, data, tmp_path):
    interrupting = Interrupting(data, at=21)
    crp = CRP(model)
    with pytest.raises(KeyboardInterrupt):
        scan(crp, interrupting, LAYERS, tmp_path, k=6, class_k=3, batch_size=8, checkpoint_every=(1, 1e9),
             progress=False)  # fmt: skip
    session = Session(model, data, open_store(tmp_path), worker=Worker())
    gallery = ReferenceGallery(session, layer="6", channel=4, k=6, poll_interval=0.05)
    try:
        assert session.worker.wait(30)
        assert gallery.store_info["samples"] == 16
        assert gallery.store_info["complete"] is False
        partial = [t["index"] for t in gallery.groups[0]["tiles"]]
        assert partial
        assert max(partial) < 16
        final = scan(crp, interrupting, LAYERS, tmp_path, k=6, class_k=3, batch_size=8, progress=False)
        deadline = time.monotonic() + 30
        while gallery.store_info["samples"] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.worker.wait(30)
        assert gallery.store_info["complete"] is True
        assert gallery.store_info["samples"] == 40
        assert tiles(gallery.groups[0]) == expected(final, "6", 4, k=6)
        assert tiles(gallery.groups[0]) != [t for t in tiles(gallery.groups[0]) if t[1] < 16]
        assert gallery._timer is None  # polling stops once the scan is complete
    finally:
        gallery.close()


# ----------------------------------------------------------------------------------------------------------- atlas


@pytest.fixture
def atlas(session):
    return ConceptAtlas(session, ExplorerState(sample=2), n_segments=20)


def test_atlas_shows_the_engines_atlas_of_the_last_spatial_layer(model, data, atlas):
    assert atlas.error == ""
    assert atlas.layer == atlas.state.layer == "6"
    assert [info["name"] for info in atlas.layers] == ["0", "4", "6", "10", "12"]
    crp = CRP(model)
    x, _ = data[2]
    target = predicted(crp, x)
    ranking = crp.channel_relevance(x, "6", target=target)
    channels = [int(c) for c in ranking.order[:5]]
    assert [c["channel"] for c in atlas.concepts] == channels
    assert [c["share"] for c in atlas.concepts] == pytest.approx([float(ranking.share[c]) for c in channels])
    segments = superpixels(x, n_segments=20, compactness=10.0, sigma=1.0)
    assigned = assign_concepts(crp.conditional_heatmaps(x, "6", channels, target=target), segments, 0.1)
    np.testing.assert_array_equal(atlas.segments, segments.numpy())
    first = np.where(assigned["first"].numpy() < 0, 255, assigned["first"].numpy())
    second = np.where(assigned["second"].numpy() < 0, 255, assigned["second"].numpy())
    np.testing.assert_array_equal(atlas.assignment, np.stack([first, second]))
    np.testing.assert_allclose(atlas.segment_relevance, assigned["relevance"].numpy(), rtol=1e-4, atol=1e-8)
    assert atlas.caption == f"Concept atlas of layer 6 explaining {CLASSES[target]} (the prediction)"
    np.testing.assert_array_equal(atlas.image, image_to_uint8(x))
    _, paths, _ = _remove_buffers(atlas.get_state())
    assert {("segments", "data"), ("assignment", "data"), ("image",)} <= {tuple(p) for p in paths}


def test_atlas_options_recompute_it(model, data, atlas):
    assert int((atlas.assignment[0] != 255).sum()) > 1
    front_end(atlas, threshold=1.0)  # only the superpixel of maximal relevance density stays coloured
    assert int((atlas.assignment[0] != 255).sum()) == 1
    front_end(atlas, mode="pixels")  # the single-pixel atlas (A.4, Fig. A.9)
    assert atlas.assignment.shape == (2, SIZE * SIZE)
    np.testing.assert_array_equal(atlas.segments.ravel(), np.arange(SIZE * SIZE))
    front_end(atlas, mode="superpixels", n_concepts=3, n_segments=40)
    assert len(atlas.concepts) == 3
    assert atlas.segment_relevance.shape[1] == 3
    atlas.state.target = 7
    crp = CRP(model)
    ranking = crp.channel_relevance(data[2][0], "6", target=7)
    assert [c["channel"] for c in atlas.concepts] == [int(c) for c in ranking.order[:3]]
    assert atlas.caption == f"Concept atlas of layer 6 explaining {CLASSES[7]}"
    atlas.state.localization = True
    assert atlas.caption == "Concept atlas of layer 6: where its concepts are, for no class"


def test_a_region_drawn_in_the_front_end_ranks_like_region_relevance(model, data, store, atlas):
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[3:12, 18:29] = True
    front_end(atlas, region=region_message(mask))
    np.testing.assert_array_equal(atlas.state.region, mask)
    assert atlas.error == ""
    crp = CRP(model)
    x, _ = data[2]
    target = predicted(crp, x)
    ranking = crp.region_relevance(x, "6", mask, target=target)
    expected_rows = ranking.top(3)
    rows = atlas.region_concepts
    assert [r["channel"] for r in rows] == [c for c, *_ in expected_rows]
    for row, (_, relevance, share_of_total, share_of_region) in zip(rows, expected_rows):
        assert row["relevance"] == pytest.approx(relevance, rel=1e-4)
        assert row["share_of_total"] == pytest.approx(share_of_total, rel=1e-4)
        assert row["share_of_region"] == pytest.approx(share_of_region, rel=1e-4)
        assert [(r["dataset"], r["index"]) for r in row["references"]] == [
            (d, i) for d, i, _ in expected(store, "6", row["channel"], k=4)
        ]
    assert atlas.region_summary["pixels"] == int(mask.sum())
    assert atlas.region_summary["region_total"] == pytest.approx(ranking.region_total, rel=1e-4)
    # The denominators of the two shares: the layer's summed |R| and the region's.
    layer_magnitude = float(crp.channel_relevance(x, "6", target).relevance.abs().sum())
    assert atlas.region_summary["magnitude"] == pytest.approx(layer_magnitude, rel=1e-4)
    assert atlas.region_summary["region_magnitude"] == pytest.approx(float(ranking.relevance.abs().sum()), rel=1e-4)
    for row in rows:
        assert row["share_of_total"] * layer_magnitude == pytest.approx(row["relevance"], rel=1e-3)
        assert row["share_of_region"] * atlas.region_summary["region_magnitude"] == pytest.approx(
            row["relevance"], rel=1e-3
        )
    assert atlas.region_summary["conditions"] == ""
    atlas.state.conditions = {"4": [1]}  # the region analysis follows conditions on other layers, and says so
    conditioned = crp.region_relevance(x, "6", mask, target=target, conditions={"4": [1]})
    assert atlas.region_summary["conditions"] == "4 channel 1"
    assert atlas.region_summary["region_total"] == pytest.approx(conditioned.region_total, rel=1e-4)
    assert atlas.caption.endswith(", only through 4 channel 1")
    atlas.state.conditions = {}
    np.testing.assert_allclose(
        atlas.region_heatmaps, crp.conditional_heatmaps(x, "6", [r["channel"] for r in rows], target), atol=1e-7
    )
    assert len(atlas.region_images) == sum(len(r["references"]) for r in rows) == 12
    front_end(atlas, region=None)  # "Clear region"
    assert atlas.state.region is None
    assert atlas.region_concepts == []
    assert atlas.region_heatmaps is None


def test_a_region_set_from_python_is_drawn_and_analysed(model, data, atlas):
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[20:30, 2:10] = True
    atlas.state.region = mask
    np.testing.assert_array_equal(atlas.region, mask.numpy().astype(np.uint8))
    x, _ = data[2]
    crp = CRP(model)
    ranking = crp.region_relevance(x, "6", mask, target=predicted(crp, x))
    assert [r["channel"] for r in atlas.region_concepts] == [int(c) for c in ranking.order[:3]]
    front_end(atlas, region_k=5)
    assert [r["channel"] for r in atlas.region_concepts] == [int(c) for c in ranking.order[:5]]
    atlas.state.sample = 5  # the region stays, the analysis follows the sample
    x, _ = data[5]
    ranking = crp.region_relevance(x, "6", mask, target=predicted(crp, x))
    assert [r["channel"] for r in atlas.region_concepts] == [int(c) for c in ranking.order[:5]]


def test_the_legend_focuses_a_channel_and_the_gallery_follows(session, store, atlas):
    gallery = ReferenceGallery(session, atlas.state, k=4)
    channel = atlas.concepts[1]["channel"]
    front_end(atlas, channel=channel)  # a legend entry clicked
    assert atlas.state.channel == gallery.channel == channel
    assert tiles(gallery.groups[0]) == expected(store, "6", channel, k=4)


def test_atlas_errors_show_inside_and_clear_on_the_next_valid_action(atlas):
    front_end(atlas, n_concepts=0)
    assert atlas.error == "the atlas shows 1 to 12 concepts, got 0"
    front_end(atlas, n_concepts=4)
    assert atlas.error == ""
    assert len(atlas.concepts) == 4
    atlas.state.region = np.ones((8, 8), dtype=bool)
    assert "the region mask has shape (8, 8)" in atlas.error
    atlas.state.region = None
    assert atlas.error == ""
    atlas.state.sample = 99
    assert "sample 99 is out of range: the dataset has 40 samples" in atlas.error
    atlas.state.sample = 1
    assert atlas.error == ""
    assert len(atlas.concepts) == 4


def test_atlas_runs_off_the_comm_thread(model, data):
    session = Session(model, data, worker=Worker())
    atlas = ConceptAtlas(session, layer="4", n_segments=10)
    assert session.worker.wait(30)
    assert atlas.error == ""
    assert atlas.layer == "4"
    assert len(atlas.concepts) == 5
    assert not atlas.busy
