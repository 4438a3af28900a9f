"""The explorer on modern architectures (torchvision, ``weights=None``): it builds, ranks, draws and conditions.

The models have 1000 outputs and the dataset 10 classes: the explorer names the other outputs by their index.
"""

import numpy as np
import pytest
import torch
import torchvision
from architectures import calibrate

import crp_widgets as cw
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


def images(size, count=4):
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.rand(count, 3, size, size, generator=generator), torch.arange(count) % 10
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
