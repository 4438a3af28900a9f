"""The explorer on modern architectures (torchvision, ``weights=None``): it builds, ranks, draws and conditions, and
every tab computes on a vision transformer and on an EfficientNet.

The models of the first test have 1000 outputs and the dataset 10 classes: the explorer names the other outputs by
their index.
"""

import numpy as np
import pytest
import torch
import torchvision
from architectures import calibrate

import crp_widgets as cw
from crp_widgets.widgets.channels import default_layer
from crp_widgets.widgets.gallery import FOLLOWS_RELEVANCE
from crp_widgets.widgets.worker import Worker

MODELS = {
    "resnet50": 96,
    "densenet121": 96,
    "efficientnet_b0": 96,
    "mobilenet_v3_large": 96,
    "regnet_y_400mf": 96,
    "convnext_tiny": 96,
    "swin_t": 96,
    "vit_b_16": 224,
}


def images(size, count=4, classes=10):
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.rand(count, 3, size, size, generator=generator), torch.arange(count) % classes
    )
    data.classes = [f"class {i}" for i in range(10)]
    return data


@pytest.mark.parametrize("name", list(MODELS))
def test_the_explorer_works_on_the_model(name):
    torch.manual_seed(0)
    model = calibrate(torchvision.models.get_model(name, weights=None), MODELS[name])
    if name.startswith("vit"):
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.02)  # torchvision starts it at zero: every logit 0
    explorer = cw.Explorer(model, images(MODELS[name]), worker=Worker(synchronous=True))
    layer = explorer.state.layer
    assert any(True for _ in model.get_submodule(layer).children()), f"{layer} is not a block"
    groups = explorer.session.crp.layer_groups()
    assert layer in [member for _, members in groups for member in members]
    for view in (explorer.sample, explorer.channels, explorer.heatmaps):
        assert view.error == "", (name, view.error)
    assert explorer.channels.ranking_layer == layer
    assert np.abs(np.asarray(explorer.heatmaps.heatmap)).sum() > 0
    ranking = explorer.session.crp.channel_relevance(images(MODELS[name])[0][0], layer, explorer.state.target)
    explorer.state.channel = int(ranking.order[0])
    assert explorer.heatmaps.error == ""
    grid = np.asarray(explorer.heatmaps.grid)
    assert grid.ndim == 3
    assert np.isfinite(grid).all()
    assert np.abs(grid).sum() > 0


# name -> (input size, constructor options): a ViT on 32 x 32 pixels has 4 patch tokens and its class token
EVERY_TAB = {"vit_b_16": (32, {"image_size": 32}), "efficientnet_b0": (64, {})}


def every_tab_model(name):
    size, options = EVERY_TAB[name]
    torch.manual_seed(0)
    model = calibrate(torchvision.models.get_model(name, weights=None, num_classes=10, **options), size)
    if name.startswith("vit"):
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.05)  # torchvision starts it at zero: every logit 0
    return model, size


@pytest.mark.parametrize("name", list(EVERY_TAB))
def test_every_tab_computes_on_the_model(name, tmp_path):
    """Each tab, shown and given its main action with small settings, computes without an error."""
    model, size = every_tab_model(name)
    data = images(size, count=8, classes=2)
    crp = cw.CRP(model)
    layer = default_layer(crp)
    store = cw.scan(crp, data, [layer], tmp_path / "store", k=2, class_k=1, batch_size=8, progress=False)
    explorer = cw.Explorer(crp, data, store=store, worker=Worker(synchronous=True))
    state = explorer.state
    state.target = 1  # a class the dataset has samples of (the class-wide analyses take them)
    channel = state.channel
    assert explorer.state.layer == layer
    assert channel is not None
    # small settings, set while the tabs are hidden
    explorer.atlas.n_concepts, explorer.atlas.n_segments = 3, 12
    explorer.decision.steps, explorer.decision.repeats = 4, 2
    explorer.decision.count.value, explorer.decision.confident.value = 2, False  # random weights: no confidence
    explorer.inverse.steps, explorer.inverse.k = 3, 3
    explorer.similarity.k = 2
    explorer.occluder.steps.value, explorer.occluder.samples.value, explorer.occluder.k.value = 2, 2, 4
    explorer.profiles.per_class.value, explorer.profiles.steps.value = 1, 1
    region = np.zeros((size, size), dtype=bool)
    region[: size // 2, : size // 2] = True

    def show(title):
        explorer.tabs.selected_index = explorer.tabs.titles.index(title)
        return explorer.tabs.children[explorer.tabs.selected_index]

    gallery = show("References")
    assert gallery.error == ""
    assert gallery.groups[0]["tiles"]
    follows = [view.follows_relevance for view in explorer.session.views.views(layer, channel, k=2)]
    assert gallery.crop_note == (FOLLOWS_RELEVANCE.format(input="image") if all(follows) else "")
    if name.startswith("vit"):
        assert gallery.crop_note  # every token sees the whole image

    atlas = show("Concept atlas")
    state.region = region
    assert atlas.error == ""
    assert len(atlas.concepts) == 3
    assert atlas.region_concepts

    graph = show("Attribution graph")
    assert graph.error == ""
    nodes = len(graph.graph["nodes"])
    assert nodes > 1
    leaf = graph.graph["nodes"][-1]
    graph.expand(leaf["layer"], leaf["channel"])
    assert graph.error == ""
    assert len(graph.graph["nodes"]) > nodes

    whatif = show("What-if")
    whatif.channels.value = f"{channel}"
    assert whatif.error == ""
    assert whatif.result is not None
    assert whatif.curve is not None

    decision = show("Decision")
    decision.scope.value = "class"
    assert decision.error == ""
    assert decision.distribution is not None
    assert decision.flipping

    inverse = show("Other classes")
    inverse.use_region()
    assert inverse.error == ""
    assert inverse.source == "region"
    assert inverse.ranking

    similarity = show("Similar concepts")
    assert similarity.error == ""
    channels = len(explorer.channels.ranking)
    assert similarity.rho.shape == (channels, channels)
    assert similarity.cluster[0] == channel

    concepts = show("My concepts")
    concepts.add(0)
    concepts.add(2)
    concepts.learn()
    assert concepts.error == ""
    assert concepts.concept_info["layer"] == layer
    assert np.isfinite(concepts.concept_info["accuracy"])
    assert concepts.concept_map is not None

    occluder = show("Global importance")
    occluder.learn_occluder()
    assert occluder.error == ""
    assert occluder.importance is not None
    assert len(occluder.importance) == channels

    profiles = show("Class profiles")
    profiles.compute_profiles()
    profiles.compute_ablation()
    assert profiles.error == ""
    assert set(profiles.profiles) == {"crp", "ig"}
    assert profiles.ablation is not None
    for view in (explorer.sample, explorer.channels, explorer.heatmaps):
        assert view.error == "", (type(view).__name__, view.error)
