"""Class profiles (CRP, channel Integrated Gradients) and ablation (Islam & Tushar 2021, Sec. IV-B, V-C) checked
against direct computations."""

import numpy as np
import pytest
import torch
from zoo import small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRPError
from crp_widgets.engine.interventions import Scale
from crp_widgets.engine.profiles import (
    ablate,
    ablated_channels,
    ablation_table,
    channel_integrated_gradients,
    class_profiles,
    class_samples,
)

LAYER = "4"  # small_cnn: Conv2d(8, 16) at 8x8, no BatchNorm after it (canonization leaves it as is)


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def crp(model):
    return cw.CRP(model)


@pytest.fixture(scope="module")
def dataset(model):
    """Random images labelled with the model's own predictions, so that every class has correct samples."""
    images = 10 * torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # three classes predicted
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    return torch.utils.data.TensorDataset(images, labels)


def test_channel_ig_equals_a_direct_riemann_sum_on_the_split_model(model, crp):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    steps = 8
    found = channel_integrated_gradients(crp, x, LAYER, 4, steps=steps)
    with torch.no_grad():
        activation = model[:5](x)
    total = torch.zeros_like(activation)
    for i in range(steps):
        point = ((i + 0.5) / steps * activation).requires_grad_()
        (grad,) = torch.autograd.grad(model[5:](point)[:, 4].sum(), point)
        total += grad
    expected = (activation * total / steps).sum(dim=(2, 3))
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5)
    assert not any(p.grad is not None for p in model.parameters())


def test_channel_ig_is_complete_up_to_the_riemann_error(crp):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 3, 3, 7])
    output, _ = crp.evaluate(x)
    baseline, _ = crp.evaluate(x, {LAYER: Scale(torch.zeros(16))})
    rows = torch.arange(4)
    difference = output[rows, target] - baseline[rows, target]
    errors = []
    for steps in (2, 64):
        ig = channel_integrated_gradients(crp, x, LAYER, target, steps=steps)
        errors.append((ig.sum(dim=1) - difference).abs().max())
    assert errors[1] < 0.02 * difference.abs().max() + 1e-4
    assert errors[1] <= errors[0]


def test_crp_profiles_are_class_means_of_channel_relevance(crp, dataset):
    profiles = class_profiles(crp, dataset, [LAYER, "6"], method="crp", per_class=3, batch_size=2)
    samples = class_samples(dataset, 3)
    assert profiles.samples == samples
    assert profiles.classes == list(samples)
    for row, (cls, indices) in enumerate(samples.items()):
        x = torch.stack([dataset[i][0] for i in indices])
        relevance = crp.attribute(x, target=cls, record=[LAYER]).relevance[LAYER]
        torch.testing.assert_close(profiles.channel[LAYER][row], relevance.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(profiles.magnitude[LAYER][row], relevance.abs().mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(profiles.layer[row, 0], relevance.abs().sum(1).mean(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(profiles.scores(cls, LAYER), profiles.magnitude[LAYER][row])


def test_ig_profiles_use_channel_ig(crp, dataset):
    profiles = class_profiles(crp, dataset, [LAYER], method="ig", per_class=2, classes=[0, 1, 2, 3], steps=4)
    cls = profiles.classes[0]
    x = torch.stack([dataset[i][0] for i in profiles.samples[cls]])
    expected = channel_integrated_gradients(crp, x, LAYER, cls, steps=4).mean(0)
    torch.testing.assert_close(profiles.channel[LAYER][0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(CRPError, match="method"):
        class_profiles(crp, dataset, [LAYER], method="gradcam")
    with pytest.raises(CRPError, match="not profiled"):
        profiles.scores(cls, "6")


def test_ablated_channels_count_and_order():
    scores = torch.tensor([0.5, 3.0, -1.0, 2.0, 0.0])
    assert ablated_channels(scores, 0.01, "top") == [1]  # at least one channel
    assert ablated_channels(scores, 0.4, "top") == [1, 3]
    assert ablated_channels(scores, 0.4, "bottom") == [2, 4]
    with pytest.raises(CRPError, match="which"):
        ablated_channels(scores, 0.1, "middle")
    with pytest.raises(CRPError, match="fraction"):
        ablated_channels(scores, 0, "top")


def test_ablation_accuracy_equals_manual_masking(model, crp, dataset):
    scores = torch.linspace(-1, 1, 16)[torch.randperm(16, generator=torch.Generator().manual_seed(2))]
    table = ablation_table(crp, dataset, LAYER, scores, fractions=(0.1, 1.0), per_class=4, batch_size=3)
    samples = class_samples(dataset, 4)
    for result in table:
        off = result.channels[LAYER]
        assert len(off) == max(1, round(result.fraction * 16))

        def hook(module, args, output, off=off):
            output = output.clone()
            output[:, off] = 0
            return output

        handle = model[4].register_forward_hook(hook)
        try:
            with torch.no_grad():
                manual = [
                    float((model(torch.stack([dataset[i][0] for i in idx])).argmax(1) == cls).float().mean())
                    for cls, idx in samples.items()
                ]
        finally:
            handle.remove()
        torch.testing.assert_close(result.after, torch.tensor(manual))
        assert torch.all(result.before == 1.0)  # labels are the model's own predictions
    single = ablate(crp, dataset, LAYER, scores, fraction=1.0, which="bottom", per_class=4)
    torch.testing.assert_close(single.after, table[3].after)
    assert single.channels == table[3].channels
    assert len(samples) > 1
    assert bool((table[1].after < 1).any())


def test_ablation_of_the_demo_shortcut_channels_hurts_the_shortcut_class_only():
    demo = cw.demo.load(length=200)
    crp = cw.CRP(demo.model)
    cls = demo.classes.index(demo.shortcut_class)
    profiles = class_profiles(crp, demo.dataset, ["features.conv4"], per_class=5, classes=[cls])
    scores = {"features.conv4": profiles.scores(cls, "features.conv4")}
    top, bottom = ablation_table(crp, demo.dataset, ["features.conv4"], scores, fractions=(0.1,), per_class=5)
    # Measured: the top 10 % (10 channels) by CRP relevance for "green cross" drop it from 100 % to 0 % (5 samples
    # per class); the bottom 10 % leave it where it was.
    assert top.after[cls] <= top.before[cls] - 0.5
    assert bottom.after[cls] == bottom.before[cls]


def test_class_profiles_view_computes_heatmaps_bars_ablation_and_focuses_a_channel(crp, dataset):
    from crp_widgets.widgets.profiles import ClassProfilesView
    from crp_widgets.widgets.session import ExplorerState, Session

    session = Session(crp, dataset)
    state = ExplorerState(layer=LAYER)
    view = ClassProfilesView(session, state, per_class=2, steps=2, layers=["0", LAYER, "6"])
    view.compute_ablation()
    assert "compute the CRP relevance profiles first" in view.error
    view.compute_profiles()
    session.worker.wait(60)
    assert sorted(view.profiles) == ["crp", "ig"]
    crp_map = view.profiles["crp"].layer.numpy()
    np.testing.assert_allclose(view.heatmaps["crp"].color, crp_map / crp_map.max(axis=1, keepdims=True), rtol=1e-6)
    assert list(view.heatmaps["ig"].column) == ["0", LAYER, "6"]
    assert view.layer.value == LAYER
    cls = view.cls.value
    np.testing.assert_allclose(view.bars.y[0], view.profiles["crp"].scores(cls, LAYER, signed=True).numpy())
    view.bars.selected = [7]
    assert (state.layer, state.channel) == (LAYER, 7)
    view.compute_ablation()
    session.worker.wait(60)
    assert view.error == ""
    assert len(view.ablation) == 6
    assert view.ablation[0].channels[LAYER] == ablated_channels(view.profiles["crp"].scores(cls, LAYER), 0.01)
    assert "before" in view.table.value
