"""How many concepts carry a decision (Sec. 4.1, Fig. 19, A.16, A.17) against direct computations."""

import numpy as np
import pytest
import torch
from zoo import random_images, small_cnn, torchvision_model

import crp_widgets as cw
from crp_widgets.engine import CRP, CRPError
from crp_widgets.engine.flipping import filter_flipping, flip_steps, layer_shares, relevance_distribution


@pytest.fixture(scope="module")
def setup():
    model = small_cnn(seed=4)
    x = random_images(3, seed=5).tensors[0]
    return model, CRP(model), x


@torch.no_grad()
def _masked(model, x, layer, off):
    """The output of ``model`` (a Sequential) with the channels ``off`` of module ``layer`` zeroed, split by hand."""
    index = int(layer)
    hidden = model[: index + 1](x[None]).clone()
    hidden[:, off] = 0
    return model[index + 1 :](hidden)[0]


@pytest.mark.parametrize("layer", ["4", "10"])
def test_flipping_curves_equal_zeroing_the_channels_by_hand(setup, layer):
    model, crp, x = setup
    curves = filter_flipping(crp, x, layer, order=["most", "least", "random"], steps=None, seed=3, batch_size=7)
    relevance = crp.attribute(x, target=model(x).argmax(1), record=[layer]).relevance[layer]
    channels = relevance.shape[1]
    most, least = curves["most"], curves["least"]
    for ranking, sign in ((most.channels, 1), (least.channels, -1)):  # permutations by (descending) relevance
        assert (ranking.sort(1).values == torch.arange(channels)).all()
        assert (sign * relevance.gather(1, ranking).diff(dim=1) <= 0).all()
    assert most.steps.tolist() == list(range(channels + 1))
    for name, curve in curves.items():
        assert curve.output.shape == (3, channels + 1)
        for row in range(3):
            sample = int(curve.samples[row])
            target = int(model(x[sample : sample + 1]).argmax())
            assert int(curve.targets[row]) == target
            for s, k in enumerate(curve.steps.tolist()):
                off = curve.channels[row, :k].tolist()
                expected = float(_masked(model, x[sample], layer, off)[target])
                assert float(curve.output[row, s]) == pytest.approx(expected, rel=1e-4, abs=1e-5), (name, row, k)
            assert float(curve.relative[row, 0]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(curve.mean, curve.relative.mean(0), rtol=1e-6)
        np.testing.assert_allclose(curve.std, curve.relative.std(0, unbiased=False), rtol=1e-5, atol=1e-7)
    # The random orders are permutations, different from the relevance order and reproducible from the seed.
    shuffled = curves["random"].channels
    assert sorted(shuffled[0].tolist()) == list(range(channels))
    assert shuffled.tolist() != most.channels.tolist()
    again = filter_flipping(crp, x, layer, order="random", steps=[0, 3], seed=3)
    assert again.channels.tolist() == shuffled.tolist()


def test_the_layers_below_run_once_per_sample_and_residual_models_fall_back(setup, monkeypatch):
    _, crp, x = setup
    sizes = []
    evaluate = crp.evaluate
    monkeypatch.setattr(crp, "evaluate", lambda batch, *a, **k: sizes.append(len(batch)) or evaluate(batch, *a, **k))
    shared = filter_flipping(crp, x, "4", order=("most", "random"), batch_size=20)
    rows = 3 * 2 * 17 + 3  # samples x orders x steps, and one check row per sample
    assert len(sizes) == 1 + -(-rows // 20)  # the unedited pass, then chunks of 20 rows
    assert sum(sizes[1:]) <= 3 * 6  # each chunk's rows start from its few samples, not from 20 inputs
    plain = filter_flipping(crp, x, "4", order=("most", "random"), batch_size=20, share_lower=False)
    for order in ("most", "random"):
        torch.testing.assert_close(shared[order].output, plain[order].output, rtol=1e-5, atol=1e-6)
    # ResNet: the shortcut around layer2.0.conv1 carries the unedited sample; one sample broadcasts over the rows,
    # two cannot (the model raises) and the rows run whole passes. Both equal whole passes for every row.
    resnet = CRP(torchvision_model("resnet18"))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for batch in (images[:1], images):
        fast = filter_flipping(resnet, batch, "layer2.0.conv1", steps=[0, 3, 40, 128], batch_size=8)
        slow = filter_flipping(resnet, batch, "layer2.0.conv1", steps=[0, 3, 40, 128], batch_size=8, share_lower=False)
        torch.testing.assert_close(fast.output, slow.output, rtol=1e-4, atol=1e-5)
        assert float((fast.output[:, 2] - fast.output[:, 0]).abs().max()) > 1e-3  # the edits change the output


def test_steps_repeats_and_a_fixed_class(setup):
    model, crp, x = setup
    curve = filter_flipping(crp, x[0], "6", target=2, order="random", steps=[8, 0, 16, 4], repeats=4, seed=1)
    assert curve.steps.tolist() == [0, 4, 8, 16]
    assert curve.output.shape == (4, 4)
    assert curve.samples.tolist() == [0, 0, 0, 0]
    assert len({tuple(row) for row in curve.channels.tolist()}) == 4  # four different random orders
    row = curve.channels[2, :8].tolist()
    assert float(curve.output[2, 2]) == pytest.approx(float(_masked(model, x[0], "6", row)[2]), rel=1e-4, abs=1e-5)
    assert float(curve.initial[0]) == pytest.approx(float(_masked(model, x[0], "6", [])[2]), rel=1e-5)
    # All channels off: the output no longer depends on the input.
    full = filter_flipping(crp, x, "6", target=2, steps=[16])
    assert float(full.output.std()) < 1e-5


def test_cumulative_counts_equal_a_direct_numpy_computation(setup):
    model, crp, x = setup
    dist = relevance_distribution(crp, x, "6", batch_size=2)
    relevance = crp.attribute(x, target=model(x).argmax(1), record=["6"]).relevance["6"].numpy()
    positive = np.clip(relevance, 0, None).sum(1, keepdims=True)
    ranked = -np.sort(-relevance / positive, axis=1)
    cumulative = np.cumsum(np.clip(ranked, 0, None), axis=1)
    np.testing.assert_allclose(dist.relevance.numpy(), relevance, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dist.shares.numpy(), ranked.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dist.cumulative.numpy(), cumulative.mean(0), rtol=1e-5, atol=1e-7)
    assert dist.cumulative[-1] == pytest.approx(1.0, abs=1e-5)
    for q in (0.85, 0.9, 0.95):
        assert dist.counts[q] == int(np.argmax(cumulative.mean(0) >= q)) + 1
        assert dist.sample_counts[q].tolist() == [int(np.argmax(row >= q)) + 1 for row in cumulative]
    assert dist.counts[0.85] <= dist.counts[0.9] <= dist.counts[0.95] <= dist.channels
    one = relevance_distribution(crp, x[1], "6", target=int(dist.targets[1]))
    assert one.order[0].tolist() == dist.order[1].tolist()


@pytest.fixture(scope="module")
def green_crosses():
    demo = cw.demo.load(200)
    shortcut = demo.classes.index(demo.shortcut_class)
    data = demo.dataset
    rows = [i for i in range(len(data)) if int(data.labels[i]) == shortcut and data.has_watermark(i)][:8]
    return CRP(demo.model), torch.stack([data[i][0] for i in rows]), shortcut


def test_most_relevant_first_drops_the_planted_shortcut_faster(green_crosses):
    # Measured on these 8 watermarked green crosses (features.conv4, 96 channels): switching off the 5 most relevant
    # channels leaves 43 % of the logit, the 5 least relevant 107 % (contradicting channels go first), 5 random 93 %;
    # 85 % of the logit is gone after 12 of the most relevant channels (the step after 8), while 21 channels hold
    # 85 % of the positive relevance.
    crp, x, shortcut = green_crosses
    curves = filter_flipping(crp, x, "features.conv4", target=shortcut, order=("most", "least", "random"), steps=24)
    most, least, random = curves["most"], curves["least"], curves["random"]
    five = most.steps.tolist().index(5)
    assert float(most.mean[five]) < 0.6 < 0.9 < float(random.mean[five]) < 1.0 < float(least.mean[five])
    assert float(most.mean.mean()) < float(random.mean.mean()) < float(least.mean.mean())
    assert most.drops[0.85] is not None
    assert most.drops[0.85] <= 16
    assert least.drops[0.85] is not None
    assert least.drops[0.85] >= 80
    dist = relevance_distribution(crp, x, "features.conv4", target=shortcut)
    assert most.drops[0.85] < dist.counts[0.85] < 48  # flipping needs fewer channels than the cumulative relevance


def test_min_probability_keeps_confident_predictions(green_crosses):
    crp, x, shortcut = green_crosses
    others = torch.stack([cw.demo.load(200).dataset[i][0] for i in range(3)])  # classes 0, 1, 2
    mixed = torch.cat([others[:1], x[:2], others[1:]])
    curve = filter_flipping(crp, mixed, "features.conv4", target=shortcut, steps=[0, 1], min_probability=0.5)
    assert curve.samples.tolist() == [1, 2]  # the green crosses (p > 0.99), not the other classes (p < 0.01)
    with pytest.raises(CRPError, match=r"no sample is predicted with a probability above 0\.5"):
        filter_flipping(crp, others, "features.conv4", target=shortcut, min_probability=0.5)


def test_layer_shares_of_a_resnet_follow_the_shortcuts():
    crp = CRP(torchvision_model("resnet18"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shares = layer_shares(crp, x)
    assert shares.layers[0] == "conv1"
    assert shares.layers[-1] == "fc"
    assert shares.per_sample.shape == (2, 21)
    assert shares.shares[-1] == pytest.approx(1.0, abs=1e-5)  # the output layer holds the explained logit
    inside = dict(zip(shares.layers, shares.shares.tolist()))
    assert inside["layer3.0.downsample.0"] > inside["layer3.0.conv2"]  # the shortcut carries part past the block
    # Conservation across parallel branches (A.17): residual branch + shortcut = the block's output.
    block = layer_shares(crp, x, layers=["layer2.0", "layer2.0.downsample.0", "layer2.0.conv2"])
    assert block.layers == ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.0"]
    np.testing.assert_allclose(block.total[:, 0] + block.total[:, 1], block.total[:, 2], rtol=1e-3)
    expected = crp.attribute(x, target=crp.predict(x).argmax(1), record=["layer2.0.conv2"]).relevance
    np.testing.assert_allclose(block.total[:, 0], expected["layer2.0.conv2"].sum(1), rtol=1e-5)


def test_layer_shares_of_the_demo_cnn(green_crosses):
    crp, x, shortcut = green_crosses
    shares = layer_shares(crp, x[:3], target=shortcut)
    assert shares.layers == [f"features.conv{i}" for i in range(1, 5)] + ["classifier.fc1", "classifier.fc2"]
    assert shares.shares[-1] == pytest.approx(1.0, abs=1e-5)
    logits = crp.evaluate(x[:3])[0][:, shortcut]
    np.testing.assert_allclose(shares.output, logits, rtol=1e-5)
    assert bool((shares.shares > 0.5).all() & (shares.shares < 1.2).all())  # a chain: (almost) all passes each layer
    assert shares.top(1)[0][0] == "classifier.fc2"


def test_bad_input_raises_clear_errors(setup):
    _, crp, x = setup
    with pytest.raises(CRPError, match="order must be one of 'most', 'least', 'random'"):
        filter_flipping(crp, x, "6", order="largest")
    with pytest.raises(CRPError, match="order must be one of"):
        filter_flipping(crp, x, "6", order=[])
    with pytest.raises(CRPError, match=r"unknown layer 'conv9'.*Valid layers"):
        filter_flipping(crp, x, "conv9")
    with pytest.raises(CRPError, match="unknown layer"):
        relevance_distribution(crp, x, "nope")
    with pytest.raises(CRPError, match="layer must be a layer name"):
        relevance_distribution(crp, x, 6)
    with pytest.raises(CRPError, match="steps must be channel counts from 0 to 16"):
        filter_flipping(crp, x, "6", steps=[0, 17])
    with pytest.raises(CRPError, match="steps must be None"):
        filter_flipping(crp, x, "6", steps="all")
    with pytest.raises(CRPError, match="repeats must be a positive int"):
        filter_flipping(crp, x, "6", order="random", repeats=0)
    with pytest.raises(CRPError, match="class index 10 is out of range"):
        filter_flipping(crp, x, "6", target=10)
    with pytest.raises(CRPError, match="one class per sample: expected 3"):
        relevance_distribution(crp, x, "6", target=torch.tensor([1, 2]))
    with pytest.raises(CRPError, match="min_probability"):
        filter_flipping(crp, x, "6", min_probability=1.0)
    with pytest.raises(CRPError, match="layers must be a list"):
        layer_shares(crp, x, layers="6")
    with pytest.raises(CRPError, match="steps must be at least 2"):
        flip_steps(64, 1)


def test_flip_steps_keep_both_ends():
    assert flip_steps(10) == list(range(11))
    steps = flip_steps(512, 32)
    assert steps[:9] == list(range(9))
    assert steps[-9:] == list(range(504, 513))
    assert 30 <= len(steps) <= 40
    assert steps == sorted(set(steps))


# ------------------------------------------------------------------------------------------------------- the view


@pytest.fixture
def view_setup(setup):
    from crp_widgets.widgets.flipping import DecisionView
    from crp_widgets.widgets.session import ExplorerState, Session
    from crp_widgets.widgets.worker import Worker

    _model, crp, _ = setup
    data = random_images(30, seed=6)
    session = Session(crp, data, worker=Worker(synchronous=True))
    state = ExplorerState(sample=1, layer="6")
    return DecisionView(session, state, steps=8, repeats=3), state, crp, data


def test_the_view_shows_the_engines_distribution_and_curves(view_setup):
    view, _state, crp, data = view_setup
    x = data[1][0]
    dist = relevance_distribution(crp, x, "6")
    assert view.error == ""
    assert list(view.bars.x) == [str(int(c)) for c in dist.order[0]]
    np.testing.assert_allclose(view.bars.y, dist.ranked[0].numpy(), rtol=1e-5, atol=1e-7)
    assert list(view.markers.x) == [dist.counts[q] for q in (0.85, 0.9, 0.95)]
    labels = [f"{p} %: {dist.counts[q]} channels" for p, q in ((85, 0.85), (90, 0.9), (95, 0.95))]
    assert list(view.marker_labels.text) == labels
    curves = filter_flipping(crp, x, "6", order=("most", "least"), steps=flip_steps(16, 8))
    for order in ("most", "least"):
        np.testing.assert_array_equal(view.curves[order].x, curves[order].steps.numpy())
        np.testing.assert_allclose(view.curves[order].y, curves[order].mean.numpy(), rtol=1e-5)
    assert view.flipping["random"].relative.shape[0] == 3  # three random orders of the one sample
    counts = " / ".join(str(dist.counts[q]) for q in (0.85, 0.9, 0.95))
    assert f"<span class='crpw-decision-counts'>{counts}</span>" in view.summary.value


def test_clicking_a_bar_selects_the_channel_and_the_state_moves_the_highlight(view_setup):
    view, state, _, _ = view_setup
    view.bars.selected = [2]
    channel = int(view.bars.x[2])
    assert state.channel == channel
    assert state.conditions == {"6": [channel]}
    state.channel = int(view.bars.x[5])
    assert list(view.bars.selected) == [5]
    state.sample = 4  # a new ranking: the highlight follows the channel to its new rank
    assert list(view.bars.selected) == [list(view.bars.x).index(str(state.channel))]


def test_the_class_scope_averages_over_samples_of_the_explained_class(view_setup):
    view, _state, crp, data = view_setup
    view.count.value = 4
    view.scope.value = "class"
    assert "Untick 'confident only'" in view.error  # a random model predicts nothing with p > 0.5
    view.confident.value = False
    assert view.error == ""
    explained = int(crp.predict(data[1][0]).argmax())
    members = torch.nonzero(data.tensors[1] == explained).flatten()[:4].tolist()
    dist = relevance_distribution(crp, data.tensors[0][members], "6", target=explained)
    np.testing.assert_allclose(view.distribution.cumulative, dist.cumulative, rtol=1e-5)
    np.testing.assert_allclose(view.mean_shares.y, dist.shares.numpy(), rtol=1e-5)
    assert "samples of class" in view.summary.value
    assert view.flipping["most"].samples.max() < 4


def test_errors_show_in_the_view_which_keeps_working(view_setup):
    view, state, _, _ = view_setup
    state.layer = "nope"
    assert "unknown layer 'nope'" in view.error
    state.layer = "4"
    assert view.error == ""
    assert len(view.bars.x) == 16
