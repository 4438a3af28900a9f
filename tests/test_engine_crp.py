"""CRP semantics: Eq. 8 masking, batching, class-free localisation, regions, sub-concepts, graphs, receptive fields."""

import pytest
import torch
from reference import reference
from test_engine_lrp import bias_free, close
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer
from zoo import conv1d_net, small_cnn, torchvision_model

from crp_widgets.engine import CRP, default_composite


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn()
    return model, CRP(model), torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def resnet():
    model = torchvision_model("resnet18")
    return model, CRP(model), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(12))


def test_channels_of_one_layer_are_or_ed(cnn):
    """Eq. 8: selecting several channels of a layer lets the relevance of each through, so heatmaps add up."""
    model, crp, x = cnn
    both = crp.attribute(x, target=2, conditions={"6": [1, 4]}).heatmap
    one = crp.attribute(x, target=2, conditions={"6": [1]}).heatmap
    other = crp.attribute(x, target=2, conditions={"6": [4]}).heatmap
    assert close(both, one + other)
    expected, _, _, _ = reference(model, default_composite(model), x, 2, {"6": [1, 4]})
    assert close(both, expected[0].sum(0))


def test_layers_are_and_ed(cnn):
    """Eq. 8: conditions on two layers keep only relevance passing the selected channels of both."""
    model, crp, x = cnn
    conditions = {"6": [3], "4": [0, 7]}
    result = crp.attribute(x, target=5, conditions=conditions, record=["4"])
    expected, recorded, _, _ = reference(model, default_composite(model), x, 5, conditions, record=["4"])
    assert close(result.heatmap, expected[0].sum(0))
    assert close(result.relevance_maps["4"], recorded["4"][0])
    assert set(torch.nonzero(result.relevance["4"]).flatten().tolist()) <= {0, 7}
    # AND is not OR: the pair of conditions is stricter than each alone.
    only_upper = crp.attribute(x, target=5, conditions={"6": [3]}, record=["4"]).relevance["4"]
    assert torch.allclose(result.relevance["4"], only_upper * torch.isin(torch.arange(16), torch.tensor([0, 7])))


def test_conditional_heatmaps_equal_separate_attributions(cnn):
    _, crp, x = cnn
    channels = [0, 3, 9, 15]
    heatmaps = crp.conditional_heatmaps(x, "6", channels, target=1, conditions={"4": [2, 3, 5]})
    assert heatmaps.shape == (4, 16, 16)
    for heatmap, channel in zip(heatmaps, channels):
        single = crp.attribute(x, target=1, conditions={"6": [channel], "4": [2, 3, 5]}).heatmap
        assert close(heatmap, single)


def test_vectorised_and_looped_backward_passes_agree(cnn):
    """The k backward passes from a layer give the same heatmaps as one vmap pass (GPU default) or as a loop."""
    model, crp, x = cnn
    vectorised = CRP(model, vectorize=True)
    channels = [1, 2, 8]
    assert close(
        vectorised.conditional_heatmaps(x, "6", channels, target=3), crp.conditional_heatmaps(x, "6", channels, 3)
    )
    graph = vectorised.attribution_graph(x, "6", 5, target=2, width=(2, 2), heatmaps=True)
    looped = crp.attribution_graph(x, "6", 5, target=2, width=(2, 2), heatmaps=True)
    assert [(e.source, e.target) for e in graph.edges] == [(e.source, e.target) for e in looped.edges]
    for a, b in zip(graph.nodes, looped.nodes):
        assert close(a.heatmap, b.heatmap)


def test_conditional_heatmaps_through_residual_shortcuts(resnet):
    """Relevance bypassing the layer (shortcuts) is kept in every heatmap, as in a single conditioned backward."""
    model, crp, x = resnet
    layer = "layer2.1.conv1"
    heatmaps = crp.conditional_heatmaps(x, layer, [0, 5], target=3)
    composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    for heatmap, channel in zip(heatmaps, [0, 5]):
        expected, _, _, _ = reference(model, composite, x, 3, {layer: [channel]})
        assert close(heatmap, expected[0].sum(0))


def test_batched_attribution_equals_one_by_one(cnn):
    _, crp, _ = cnn
    batch = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    targets = torch.tensor([0, 3, 3, 9])
    together = crp.attribute(batch, target=targets, conditions={"6": [2, 8]}, record=["4"])
    for index in range(4):
        alone = crp.attribute(batch[index], target=int(targets[index]), conditions={"6": [2, 8]}, record=["4"])
        assert close(together.heatmap[index], alone.heatmap)
        assert close(together.relevance["4"][index], alone.relevance["4"])


def test_several_classes_explained_together_superpose(cnn):
    """Fig. 2a: the heatmap of several outputs at once is the sum of the class-specific heatmaps."""
    _, crp, x = cnn
    both = crp.attribute(x, target=[1, 6]).heatmap
    assert close(both, crp.attribute(x, target=1).heatmap + crp.attribute(x, target=6).heatmap)
    everything = crp.attribute(x, target=None).heatmap
    assert close(everything, sum(crp.attribute(x, target=c).heatmap for c in range(10)))


def test_class_free_localisation_starts_from_the_channel_activation(cnn):
    """Sec. 2.3.5: without a class, the backward starts at the channel's own activation."""
    model, crp, x = cnn
    heatmaps = crp.conditional_heatmaps(x, "6", [2, 11], target=None)
    for heatmap, channel in zip(heatmaps, [2, 11]):
        mask = torch.zeros(1, 16, 1, 1)
        mask[0, channel] = 1
        expected, _, _, _ = reference(model, default_composite(model), x, start=("6", lambda a, m=mask: a * m))
        assert close(heatmap, expected[0].sum(0))
        assert close(heatmap, crp.attribute(x, target=None, conditions={"6": [channel]}).heatmap)


def test_channel_relevance_ranks_eq_10(cnn):
    _, crp, x = cnn
    ranking = crp.channel_relevance(x, "6", target=4)
    recorded = crp.attribute(x, target=4, record=["6"]).relevance["6"]
    assert torch.allclose(ranking.relevance, recorded)
    assert ranking.total == pytest.approx(float(recorded.sum()))
    assert torch.allclose(ranking.share, recorded / recorded.abs().sum())
    assert bool((torch.sign(ranking.share) == torch.sign(ranking.relevance)).all())
    assert torch.all(ranking.relevance[ranking.order][:-1] >= ranking.relevance[ranking.order][1:])
    top = ranking.top(3)
    assert [c for c, _, _ in top] == ranking.order[:3].tolist()


@pytest.mark.parametrize("target", [6, None])
def test_region_relevance_equals_summed_conditional_heatmaps(cnn, target):
    """Eq. 11-12: a channel's relevance in a region is its conditional heatmap summed over the region."""
    _, crp, x = cnn
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[2:9, 5:13] = True
    result = crp.region_relevance(x, "6", region, target=target)
    heatmaps = crp.conditional_heatmaps(x, "6", list(range(16)), target=target)
    brute = heatmaps[:, region].sum(1)
    assert close(result.relevance, brute)
    assert result.region_total == pytest.approx(float(brute.sum()), rel=1e-4, abs=1e-12)
    assert torch.allclose(result.share_of_region, brute / brute.abs().sum(), rtol=1e-3, atol=1e-6)
    layer_total = crp.channel_relevance(x, "6", target=target).relevance.abs().sum()
    assert torch.allclose(result.share_of_total, brute / layer_total, rtol=1e-3, atol=1e-6)
    assert result.order[0] == int(brute.argmax())


def test_region_relevance_on_a_residual_net_separates_the_bypass(resnet):
    _, crp, x = resnet
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[10:30, 20:50] = True
    layer = "layer3.0.conv2"
    result = crp.region_relevance(x, layer, region, target=1)
    heatmaps = crp.conditional_heatmaps(x, layer, [0, 7, 100], target=1)
    full = crp.attribute(x, target=1).heatmap[0]
    unconditioned_in_region = float(full[region].sum())
    # Each conditional heatmap = bypass + the channel's own part; the channels' parts and the bypass add up.
    assert result.region_total + result.bypass == pytest.approx(unconditioned_in_region, rel=1e-3)
    for heatmap, channel in zip(heatmaps, [0, 7, 100]):
        assert float(heatmap[region].sum()) == pytest.approx(
            result.bypass + float(result.relevance[channel]), rel=1e-3, abs=1e-9
        )


def test_subconcept_shares_sum_to_the_parent(cnn):
    """Eq. 13-16 with conserving rules: the parent's relevance is fully split among the lower channels."""
    model, _, x = cnn
    crp = CRP(model, composite=bias_free(model))
    sub = crp.subconcepts(x, "6", 5, "4", target=2, k=16)
    assert sub.parent_relevance == pytest.approx(float(crp.channel_relevance(x, "6", target=2).relevance[5]))
    assert float(sub.share.sum()) == pytest.approx(1.0, rel=1e-3)
    assert float(sub.all_relevance.sum()) == pytest.approx(sub.parent_relevance, rel=1e-3)
    assert sub.channels == torch.argsort(sub.all_relevance, descending=True).tolist()


def test_subconcepts_through_residual_connections(resnet):
    """Only relevance passing the parent channel is counted, also where shortcuts bypass it."""
    model, crp, x = resnet
    layer, channel, lower = "layer3.0.conv2", 17, "layer2.1.conv2"
    sub = crp.subconcepts(x, layer, channel, lower, target=4, k=5)
    composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    _, recorded, _, _ = reference(model, composite, x, 4, record=[layer])
    mask = torch.zeros(1, 256, 1, 1)
    mask[0, channel] = 1
    _, lower_recorded, _, _ = reference(
        model, composite, x, start=(layer, lambda a: recorded[layer] * mask), record=[lower]
    )
    expected = lower_recorded[lower][0].sum((1, 2))
    assert close(sub.all_relevance, expected)
    assert sub.channels == torch.argsort(expected, descending=True)[:5].tolist()
    assert torch.allclose(sub.share, expected[sub.channels] / sub.parent_relevance, rtol=1e-3)


def test_attribution_graph_edges_match_subconcepts(cnn):
    _, crp, x = cnn
    graph = crp.attribution_graph(x, "6", 5, target=2, width=(3, 2), heatmaps=True)
    assert graph.layers == ["6", "4", "0"]
    sub = crp.subconcepts(x, "6", 5, "4", target=2, k=3)
    first = [edge for edge in graph.edges if edge.source == ("6", 5)]
    assert [edge.target for edge in first] == [("4", c) for c in sub.channels]
    assert [edge.share for edge in first] == pytest.approx(sub.share.tolist(), rel=1e-5)
    # Second level: the flow from (4, c) given the root equals a drill-down along the path (6, 5) -> (4, c).
    for edge in first:
        (_, step1) = crp.drill_down(x, [("6", 5), edge.target], target=2, k=2, heatmaps=False)
        below = [e for e in graph.edges if e.source == edge.target]
        assert [e.target for e in below] == [("0", c) for c in step1.channels]
        assert [e.share for e in below] == pytest.approx(step1.share.tolist(), rel=1e-4)
    root = graph.node("6", 5)
    assert root.share == 1.0
    assert root.heatmap.shape == (16, 16)
    assert all(node.heatmap is not None for node in graph.nodes)
    assert {"root", "layers", "nodes", "edges"} <= set(graph.to_dict())


def test_drill_down_follows_the_path_as_and_ed_conditions(cnn):
    """A drill-down (Ghosh's concept-detection report, Sec. 4): each step's top-k are the next layer's channels under
    the path's conditions."""
    _, crp, x = cnn
    lower = crp.subconcepts(x, "6", 5, "4", target=2, k=1).channels[0]
    steps = crp.drill_down(x, [("6", 5), ("4", lower)], target=2, k=4)
    assert [step.layer for step in steps] == ["4", "0"]
    assert steps[0].channels[0] == lower
    relevance = crp.attribute(x, target=2, conditions={"6": [5], "4": [lower]}, record=["0"]).relevance["0"][0]
    assert float(relevance.abs().max()) > 0
    assert steps[1].channels == torch.argsort(relevance, descending=True)[:4].tolist()
    assert torch.allclose(steps[1].relevance, relevance[steps[1].channels], rtol=1e-4, atol=1e-12)
    for heatmap, channel in zip(steps[1].heatmaps, steps[1].channels):
        single = crp.attribute(x, target=2, conditions={"6": [5], "4": [lower], "0": [channel]}).heatmap[0]
        assert close(heatmap, single)


def test_receptive_fields_with_the_flat_rule(cnn):
    """Sec. 2.3.4: exactly the connected input pixels; a conv3x3 - pool2 - conv3x3 neuron sees 8x8 pixels."""
    model, crp, x = cnn
    field = crp.receptive_field("4", (0, 3, 3), x)
    assert field.box == (3, 11, 3, 11)
    assert int(field.mask.sum()) == 64
    corner = crp.receptive_field("4", (0, 0, 0), x)
    assert corner.box == (0, 5, 0, 5)  # clipped by the zero padding at the border
    # Changing pixels outside the field leaves the neuron unchanged; changing one inside changes it.
    activation = {}
    handle = model[4].register_forward_hook(lambda m, i, o: activation.__setitem__("v", o[0, 0, 3, 3].item()))
    try:
        probe = x.clone()
        model(probe)
        base = activation["v"]
        probe[..., ~field.mask] = torch.rand(int((~field.mask).sum()))
        model(probe)
        assert activation["v"] == pytest.approx(base, abs=1e-6)
    finally:
        handle.remove()
    batch = crp.receptive_fields("6", [(0, 0, 0), (5, 4, 4)], x)
    # conv3x3 - pool2 - conv3x3 - conv3x3: 12 pixels wide in the middle, clipped at the border.
    assert batch[1].box == (3, 15, 3, 15)
    assert batch[0].box == (0, 7, 0, 7)


def test_receptive_fields_pass_in_place_activations_whatever_the_activations():
    """The flat rule spreads through in-place ReLUs even where they are inactive (zero biases, zero probe)."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 16 * 16, 2),
    ).eval()
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.Conv2d):
                module.bias.zero_()
    field = CRP(model).receptive_field("2", (1, 5, 5), (1, 3, 16, 16))
    assert field.box == (3, 8, 3, 8)
    assert int(field.mask.sum()) == 25


def test_one_dimensional_signals():
    model = conv1d_net()
    crp = CRP(model)
    x = torch.rand(2, 32, generator=torch.Generator().manual_seed(14))
    result = crp.attribute(x, target=1, record=["3"])
    assert result.heatmap.shape == (32,)
    assert result.relevance["3"].shape == (16,)
    heatmaps = crp.conditional_heatmaps(x, "3", [0, 4], target=1)
    assert heatmaps.shape == (2, 32)
    assert close(heatmaps[1], crp.attribute(x, target=1, conditions={"3": [4]}).heatmap)
    region = torch.zeros(32, dtype=torch.bool)
    region[8:20] = True
    assert close(
        crp.region_relevance(x, "3", region, target=1).relevance,
        crp.conditional_heatmaps(x, "3", range(16), 1)[:, region].sum(1),
    )
    field = crp.receptive_field("3", (0, 5), x)
    assert field.box == (6, 16)
    assert [info.name for info in crp.layers(x)] == ["0", "3", "5", "9"]
