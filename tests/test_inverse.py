"""Inverse search across classes (CRP paper Sec. 4.3, Fig. 22-23): region channels, classes, switch-off curve."""

import pytest
import torch
from zoo import random_images, small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRPError
from crp_widgets.engine.inverse import classes_using, suspicious_region, switch_off_curve

LAYER = "features.conv4"


@pytest.fixture(scope="module")
def demo():
    return cw.demo.load(length=300)


@pytest.fixture(scope="module")
def demo_store(demo, tmp_path_factory):
    crp = cw.CRP(demo.model)
    return crp, cw.scan(crp, demo.dataset, [LAYER], tmp_path_factory.mktemp("inverse"), k=4, progress=False)


def test_the_watermark_region_of_a_green_cross_leads_to_green_cross(demo, demo_store):
    crp, store = demo_store
    shortcut = demo.classes.index(demo.shortcut_class)
    labels = demo.dataset.labels
    index = next(i for i in range(len(demo.dataset)) if labels[i] == shortcut and "watermark" in demo.masks(i))
    x, _ = demo.dataset[index]
    region = suspicious_region(crp, x, LAYER, demo.masks(index)["watermark"], target=shortcut, k=3)
    assert len(region.channels) == 3
    assert region.target == shortcut
    assert region.relevance == sorted(region.relevance, reverse=True)
    assert region.relevance[0] > 0
    ranking = classes_using(store, LAYER, region.channels, k=3)
    assert demo.classes[ranking[0][0]] == "green cross"
    # The aggregate is the sum of the channels' class means (the store's class statistics).
    means = store.class_relevance(LAYER)[region.channels].sum(0)
    assert ranking[0][1] == pytest.approx(float(means[ranking[0][0]]))
    assert [c for c, _ in classes_using(store, LAYER, region.channels[0], k=5)] == [
        c for c, _ in store.top_classes(LAYER, region.channels[0], k=5)
    ]


def test_the_switch_off_curve_equals_manual_masking():
    model, x = small_cnn(), random_images(1, seed=3)[0][0]
    crp = cw.CRP(model)
    channels = [5, 2, 11, 7]
    curve = switch_off_curve(crp, x, "4", channels)  # Conv2d(8, 16): no BatchNorm, so no canonization
    assert curve.confidence.shape == curve.logits.shape == (5, 4)
    with torch.no_grad():
        logits = model(x[None])[0]
    assert curve.classes == torch.argsort(logits, descending=True)[:4].tolist()
    for n in range(5):
        off = channels[:n]

        def hook(module, args, output, off=off):
            output = output.clone()
            output[:, off] = 0
            return output

        handle = model[4].register_forward_hook(hook)
        with torch.no_grad():
            manual = model(x[None])[0]
        handle.remove()
        torch.testing.assert_close(curve.logits[n], manual[curve.classes], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(curve.confidence[n], manual.softmax(0)[curve.classes], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(curve.logits[0], curve.logits[-1])
    named = switch_off_curve(crp, x, "4", channels, classes=[0, 9])
    assert named.classes == [0, 9]
    assert named.confidence.shape == (5, 2)


def test_bad_input_names_the_problem(demo, demo_store):
    crp, store = demo_store
    x, _ = demo.dataset[0]
    with pytest.raises(CRPError, match="out of range"):
        switch_off_curve(crp, x, LAYER, [0, 999])
    with pytest.raises(CRPError, match="out of range"):
        switch_off_curve(crp, x, LAYER, [0], classes=[10])
    with pytest.raises(CRPError, match="non-empty list"):
        classes_using(store, LAYER, [])
    with pytest.raises(CRPError, match="out of range"):
        classes_using(store, LAYER, [4096])
    with pytest.raises(CRPError, match="empty"):
        suspicious_region(crp, x, LAYER, torch.zeros(64, 64, dtype=torch.bool))


def test_the_view_ranks_classes_for_the_channel_and_for_the_atlas_region(demo, demo_store):
    from crp_widgets.widgets.inverse import InverseSearchView
    from crp_widgets.widgets.session import ExplorerState, Session
    from crp_widgets.widgets.worker import Worker

    crp, store = demo_store
    session = Session(crp, demo.dataset, store=store, worker=Worker(synchronous=True))
    shortcut = demo.classes.index(demo.shortcut_class)
    labels = demo.dataset.labels
    index = next(i for i in range(len(demo.dataset)) if labels[i] == shortcut and "watermark" in demo.masks(i))
    state = ExplorerState(sample=index, layer=LAYER, channel=0)
    view = InverseSearchView(session, state, steps=5)
    view.refresh()
    assert view.error == ""
    assert view.ranking == classes_using(store, LAYER, [0], k=5)
    assert list(view.bars.x) == [demo.classes[c] for c, _ in view.ranking]
    assert view.lines.y.shape == (4, 6)
    view.use_region()  # nothing drawn yet
    assert "No region yet" in view.error
    state.region = demo.masks(index)["watermark"]
    view.use_region()
    assert view.error == ""
    assert view.source == "region"
    assert len(view.channels) == 6
    assert demo.classes[view.ranking[0][0]] == "green cross"
    view.region_channels.children[1].click()  # focus a region channel: back to channel mode
    assert state.channel == view.channels[0]
    assert view.source == "channel"
