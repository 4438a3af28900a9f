"""Network Dissection labels (Islam & Tushar 2021, Eq. 1) against a numpy brute force, and on the planted concepts."""

import numpy as np
import pytest
import torch
from zoo import small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRPError
from crp_widgets.engine.dissection import dissect, reference_coverage

LAYER = "4"  # small_cnn's second convolution: 16 channels at 8x8 for 16x16 inputs


def blob_masks(n, size=16, seed=0):
    """Random rectangles for three concepts; each concept is present in some images only."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(n):
        masks = {}
        for name in ("sky", "wheel", "stripe"):
            if rng.random() < 0.7:
                top, left = rng.integers(0, size - 4, 2)
                height, width = rng.integers(3, size - max(top, left) + 1, 2)
                mask = np.zeros((size, size), bool)
                mask[top : top + height, left : left + width] = True
                masks[name] = mask
        found.append(masks)
    return found


@pytest.fixture(scope="module")
def world():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(23, 3, 16, 16, generator=generator)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(23, dtype=torch.int64))
    return cw.CRP(small_cnn()), dataset, blob_masks(23)


def upsample(maps, size):
    """Bilinear upsampling (align_corners=False, edges clamped) of ``[C, h, w]`` to ``size``, in numpy."""

    def weights(out, inp):
        source = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, None)
        low = np.minimum(np.floor(source).astype(int), inp - 1)
        high = np.minimum(low + 1, inp - 1)
        matrix = np.zeros((out, inp))
        matrix[np.arange(out), low] += 1 - (source - low)
        matrix[np.arange(out), high] += source - low
        return matrix

    rows, columns = weights(size[0], maps.shape[1]), weights(size[1], maps.shape[2])
    return np.einsum("ih,chw,jw->cij", rows, maps, columns)


def brute_force(crp, images, masks, layer, quantile):
    """Thresholds, and the IoU of every channel with every concept, with numpy over the whole dataset at once."""
    _, found = crp.evaluate(images, record=[layer])
    activations = found[layer].double().numpy()  # [N, C, h, w]
    channels = activations.shape[1]
    thresholds = np.array([np.quantile(activations[:, c].ravel(), 1 - quantile) for c in range(channels)])
    concepts = sorted({name for m in masks for name in m})
    intersection = np.zeros((channels, len(concepts)))
    union = np.zeros((channels, len(concepts)))
    for activation, masks_of in zip(activations, masks):
        segmented = upsample(activation, (16, 16)) >= thresholds[:, None, None]
        for k, name in enumerate(concepts):
            mask = masks_of.get(name, np.zeros((16, 16), bool))
            intersection[:, k] += (segmented & mask).sum(axis=(1, 2))
            union[:, k] += (segmented | mask).sum(axis=(1, 2))
    return thresholds, concepts, intersection / union


@pytest.mark.parametrize(("quantile", "batch_size"), [(0.005, 4), (0.05, 64), (0.2, 7)])
def test_thresholds_and_iou_equal_a_numpy_brute_force(world, quantile, batch_size):
    crp, dataset, masks = world
    labels = dissect(crp, dataset, LAYER, lambda i: masks[i], quantile=quantile, batch_size=batch_size)
    thresholds, concepts, iou = brute_force(crp, dataset.tensors[0], masks, LAYER, quantile)
    np.testing.assert_allclose(labels.thresholds.numpy(), thresholds, rtol=1e-5, atol=1e-6)
    assert sorted(labels.concepts) == concepts
    order = [labels.concepts.index(name) for name in concepts]
    np.testing.assert_allclose(labels.iou[:, order].numpy(), iou, atol=1e-6)
    best = iou.argmax(axis=1)
    assert labels.concept == [concepts[b] if iou[c, b] > 0 else None for c, b in enumerate(best)]
    np.testing.assert_allclose(labels.best_iou.numpy(), iou.max(axis=1), atol=1e-6)
    # The threshold leaves the quantile of the activations above it (up to interpolation between values).
    _, found = crp.evaluate(dataset.tensors[0], record=[LAYER])
    above = (found[LAYER] > labels.thresholds.reshape(1, -1, 1, 1)).float().mean(dim=(0, 2, 3))
    count = found[LAYER][:, 0].numel()
    assert torch.all((above - quantile).abs() <= 1.5 / count + 1e-9)


def test_a_channel_that_copies_a_concept_is_labelled_with_it():
    """A 1x1 convolution whose channel 0 copies the 'disc' mask and channel 1 the 'bar' mask (input planes)."""
    yy, xx = np.mgrid[:16, :16]
    images, masks = [], []
    rng = np.random.default_rng(1)
    for _ in range(12):
        cy, cx = rng.integers(4, 12, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
        bar = np.zeros((16, 16), bool)
        bar[:, rng.integers(0, 14) :][:, :2] = True
        images.append(torch.from_numpy(np.stack([disc, bar, np.zeros_like(disc)]).astype(np.float32)))
        masks.append({"disc": disc, "bar": bar})
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.Flatten(), torch.nn.Linear(512, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0] = model[0].weight[1, 1] = 1.0
    dataset = torch.utils.data.TensorDataset(torch.stack(images), torch.zeros(12, dtype=torch.int64))
    labels = dissect(cw.CRP(model.eval()), dataset, "0", lambda i: masks[i], quantile=0.05)
    assert labels.label(0)[0] == "disc"
    assert labels.label(1)[0] == "bar"
    assert labels.label(0)[1] > 0.4
    assert labels.label(1)[1] > 0.4
    assert labels.iou[0, labels.concepts.index("bar")] < 0.2
    assert labels.describe()["concepts"] == ["disc", "bar"]


def test_masks_from_the_items_and_bad_input(world):
    crp, dataset, masks = world
    items = [(x, y, masks[i]) for i, (x, y) in enumerate(dataset)]
    from_items = dissect(crp, items, LAYER, quantile=0.05)
    given = dissect(crp, dataset, LAYER, lambda i: masks[i], quantile=0.05)
    torch.testing.assert_close(from_items.iou, given.iou)
    with pytest.raises(CRPError, match="quantile"):
        dissect(crp, dataset, LAYER, lambda i: masks[i], quantile=1.5)
    with pytest.raises(CRPError, match="no concept masks"):
        dissect(crp, dataset, LAYER)
    with pytest.raises(CRPError, match=r"unknown layer|not a layer|no layer"):
        dissect(crp, dataset, "features.nope", lambda i: masks[i])
    with pytest.raises(CRPError, match="out of range"):
        given.label(99)


# ------------------------------------------------------------------------------------------------ the demo world


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    demo = cw.demo.load(length=200)
    crp = cw.CRP(demo.model)
    layers = ["features.conv3", "features.conv4"]
    store = cw.scan(crp, demo.dataset, layers, tmp_path_factory.mktemp("dissect"), k=8, progress=False)
    return demo, crp, store


# Measured on 200 demo images (RelMax-sum, k=8, masks dilated by one pixel): the concept whose mask covers most
# of the references' relevance equals the dissection label for 15 of 64 conv3 and 35 of 96 conv4 channels; the
# label's mask carries at least half of the references' positive relevance for 41 of 64 and 73 of 96. (Textures lie
# inside their shape's mask, so the "most relevance" rule can never pick a texture: see the notes.)
@pytest.mark.parametrize(("layer", "most", "half"), [("features.conv3", 11, 33), ("features.conv4", 27, 60)])
def test_demo_labels_agree_with_the_concepts_of_the_relmax_references(demo_world, layer, most, half):
    demo, crp, store = demo_world
    labels = dissect(crp, demo.dataset, layer, demo.masks)
    concepts, coverage = reference_coverage(crp, store, demo.dataset, layer, demo.masks, dilate=1)
    shows_most, carries_half = 0, 0
    for channel in range(coverage.shape[0]):
        concept, _ = labels.label(channel)
        best = coverage[channel].max()
        shown = {name for k, name in enumerate(concepts) if coverage[channel, k] >= best - 1e-9}
        shows_most += concept in shown
        carries_half += concept in concepts and float(coverage[channel, concepts.index(concept)]) >= 0.5
    assert shows_most >= most, (layer, shows_most, carries_half)
    assert carries_half >= half, (layer, shows_most, carries_half)


def test_session_labels_reach_the_selector_gallery_and_graph(world):
    from crp_widgets.widgets.channels import ChannelSelector
    from crp_widgets.widgets.gallery import ReferenceGallery
    from crp_widgets.widgets.graph import AttributionGraphView
    from crp_widgets.widgets.session import ExplorerState, Session

    crp, dataset, masks = world
    labels = dissect(crp, dataset, LAYER, lambda i: masks[i], quantile=0.05)
    session = Session(crp, dataset)
    state = ExplorerState(layer=LAYER, channel=3)
    selector, gallery, graph = (
        view(session, state) for view in (ChannelSelector, ReferenceGallery, AttributionGraphView)
    )
    session.worker.wait(30)
    assert selector.labels == {}
    assert gallery.concept == {}
    session.label(LAYER, labels)
    assert selector.labels == labels.describe()
    assert selector.labels["concepts"][3] == labels.label(3)[0]
    assert gallery.concept == {"concept": labels.label(3)[0], "iou": labels.label(3)[1]}
    assert graph.labels == {LAYER: labels.describe()}
    state.channel = 5
    assert gallery.concept["iou"] == labels.label(5)[1]
    with pytest.raises(CRPError, match="belong to layer"):
        session.label("6", labels)
    session.label(LAYER, None)
    assert selector.labels == {}
    assert graph.labels == {}
