"""Reference views: receptive-field crops, neuron-conditioned heatmaps, masks (Sec. 2.3.4-2.3.5, Fig. 8)."""

import time

import pytest
import torch
from reference import reference
from test_engine_lrp import close
from test_scan import dataset
from zoo import conv1d_net, small_cnn

from crp_widgets.engine import CRP, CRPError, default_composite
from crp_widgets.engine.references import ReferenceViews, gaussian_smooth, heatmap_mask
from crp_widgets.engine.scan import scan


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = small_cnn(seed=3)
    data = dataset(32, seed=1)
    crp = CRP(model)
    store = scan(crp, data, ["4", "6"], tmp_path_factory.mktemp("refs"), k=4, class_k=2, batch_size=8, progress=False)
    return model, crp, store, data


def neuron_start(neuron, shape):
    mask = torch.zeros(shape)
    mask[(0, *neuron)] = 1
    return mask


@pytest.mark.parametrize("init", ["activation", "relevance"])
def test_views_crop_to_the_receptive_field_and_condition_on_the_neuron(setup, init):
    model, crp, store, data = setup
    layer, channel = "6", int(torch.argmax(store.class_relevance("6").nan_to_num(0).sum(1)))
    views = ReferenceViews(crp, store, {"dataset": data}).views(layer, channel, k=4, init=init)
    assert [v.reference for v in views] == store.references(layer, channel, k=4)
    for view in views:
        x, label = data[view.reference.index]
        assert torch.equal(view.sample, x)
        field = crp.receptive_field(layer, view.reference.neuron, x)
        assert view.box == field.box
        top, bottom, left, right = view.box
        assert torch.equal(view.crop, x[:, top:bottom, left:right])
        # The heatmap is zero outside the neuron's receptive field, and equals a zennit-only reference computation.
        assert float(view.heatmap[~field.mask].abs().max()) == 0.0
        if init == "activation":
            expected, _, _, _ = reference(
                model, default_composite(model), x[None],
                start=(layer, lambda a, n=view.reference.neuron: a * neuron_start(n, a.shape)),
            )  # fmt: skip
            assert view.target is None
        else:
            assert view.target == int(label)  # the class the scan explained the sample for
            _, recorded, _, _ = reference(model, default_composite(model), x[None], int(label), record=[layer])
            start = recorded[layer] * neuron_start(view.reference.neuron, recorded[layer].shape)
            expected, _, _, _ = reference(model, default_composite(model), x[None], start=(layer, lambda a, s=start: s))
        assert close(view.heatmap, expected[0].sum(0))


def test_masked_view_keeps_what_the_smoothed_heatmap_marks(setup):
    _, crp, store, data = setup
    views = ReferenceViews(crp, store, {"dataset": data}).views("4", 1, k=2, threshold=0.4, sigma=1.0, background=0.25)
    for view in views:
        keep = heatmap_mask(view.crop_heatmap, 0.4, 1.0)
        assert torch.equal(view.masked[:, keep], view.crop[:, keep])
        assert bool((view.masked[:, ~keep] == 0.25).all())


def test_gaussian_smoothing_and_threshold():
    heatmap = torch.zeros(9, 9)
    heatmap[4, 4] = 1.0
    smooth = gaussian_smooth(heatmap, 1.0)
    assert float(smooth.sum()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(smooth, smooth.T)
    assert int(smooth.argmax()) == 40
    keep = heatmap_mask(heatmap, threshold=0.4, sigma=1.0)
    # exp(-r^2/2) >= 0.4  <=>  r^2 <= 1.83: the centre and its 4 direct neighbours.
    assert int(keep.sum()) == 5
    assert not heatmap_mask(-heatmap, 0.4, 1.0).any()  # no positive evidence, nothing kept


def test_views_are_cached_by_what_determines_them(setup):
    _, crp, store, data = setup
    views = ReferenceViews(crp, store, {"dataset": data})
    first = views.views("6", 2, k=3)
    start = time.perf_counter()
    again = views.views("6", 2, k=3)
    assert again is first
    assert time.perf_counter() - start < 0.05
    assert views.views("6", 2, k=3, init="activation") is not first
    assert views.views("6", 2, k=3, threshold=0.5) is not first


def test_class_conditional_views(setup):
    _, crp, store, data = setup
    cls = store.top_classes("6", 2, k=1)[0][0]
    views = ReferenceViews(crp, store, {"dataset": data}).views("6", 2, k=2, cls=cls)
    assert all(v.target == cls for v in views)
    assert all(int(data[v.reference.index][1]) == cls for v in views)


def test_one_dimensional_references(tmp_path):
    model = conv1d_net()
    generator = torch.Generator().manual_seed(2)
    data = torch.utils.data.TensorDataset(torch.rand(24, 2, 32, generator=generator), torch.randint(0, 5, (24,)))
    crp = CRP(model)
    store = scan(crp, data, ["3"], tmp_path, k=3, batch_size=8, progress=False)
    views = ReferenceViews(crp, store, {"dataset": data}).views("3", 4, k=3, mode="activation", target="max")
    for view in views:
        assert len(view.box) == 2
        assert view.crop.shape == (2, view.box[1] - view.box[0])
        assert view.crop_heatmap.shape == (view.box[1] - view.box[0],)
        assert view.heatmap.shape == (32,)


def test_views_need_the_datasets_of_the_store(setup):
    _, crp, store, _ = setup
    with pytest.raises(CRPError, match="missing 'dataset'"):
        ReferenceViews(crp, store, {})
