"""Token layers ([B, tokens, D], a ViT) and channels-last layers ([B, H, W, C], Swin) in every part of the engine."""

import pytest
import torch
import torchvision

from crp_widgets.engine import CRP
from crp_widgets.engine.atlas import concept_atlas
from crp_widgets.engine.concepts import concept_maps, learn_concept
from crp_widgets.engine.dissection import dissect
from crp_widgets.engine.flipping import filter_flipping
from crp_widgets.engine.interventions import Blend, layer_mask
from crp_widgets.engine.occluder import channel_importance, learn_occluder
from crp_widgets.engine.profiles import class_profiles
from crp_widgets.engine.references import ReferenceViews
from crp_widgets.engine.scan import scan
from crp_widgets.engine.whatif import insertion_curve

SIZE = 32


@pytest.fixture(scope="module", params=["vit", "swin"])
def case(request):
    """``(crp, layer, layout check)``: a ViT encoder layer (tokens) or a Swin block (channels last)."""
    torch.manual_seed(0)
    if request.param == "vit":
        model = torchvision.models.vit_b_16(weights=None, image_size=SIZE, num_classes=4).eval()
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.05)
        layer, grid, extra = "encoder.layers.encoder_layer_10", (2, 2), 1
    else:
        model = torchvision.models.swin_t(weights=None, num_classes=4).eval()
        layer, grid, extra = "features.5.1", (2, 2), 0
    return CRP(model), layer, grid, extra


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, SIZE, SIZE, generator=generator)
    labels = torch.tensor([0, 1, 2, 3] * 2)
    dataset = torch.utils.data.TensorDataset(images, labels)
    masks = [{"left": torch.arange(SIZE)[None, :].expand(SIZE, SIZE) < SIZE // 2} for _ in range(8)]
    return dataset, masks


def test_layout_axis_grid_and_conditions(case, data):
    crp, layer, grid, extra = case
    x = data[0][0][0]
    ranking = crp.channel_relevance(x, layer, target=1)
    layout = crp.layout(layer)
    assert layout.grid == grid
    assert layout.extra == extra
    forward, _ = crp.forward_pass(x)
    assert ranking.relevance.shape == (forward.tap(layer).activation.shape[layout.axis],)
    # Eq. 9 per channel, batched, equals one attribution per channel; all channels together give the layer's total
    channels = [int(c) for c in ranking.order[:3]]
    heatmaps = crp.conditional_heatmaps(x, layer, channels, target=1)
    for channel, heatmap in zip(channels, heatmaps):
        single = crp.attribute(x, target=1, conditions={layer: [channel]}).heatmap
        assert torch.allclose(heatmap, single, atol=1e-6 * float(single.abs().max()) + 1e-12)
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[: SIZE // 2] = True
    inside = crp.region_relevance(x, layer, region, target=1)
    assert inside.relevance.shape == ranking.relevance.shape


def test_scans_and_references_follow_the_relevance(case, data, tmp_path):
    crp, layer, _grid, _extra = case
    dataset, _ = data
    store = scan(crp, dataset, [layer], tmp_path, k=2, batch_size=4, progress=False)
    channel = int(crp.channel_relevance(dataset[0][0], layer, target=0).order[0])
    views = ReferenceViews(crp, store, {"dataset": dataset}).views(layer, channel, k=2)
    assert len(views) == 2
    for view in views:
        assert view.follows_relevance  # every token sees the whole image
        assert view.crop.shape[1:] == view.crop_heatmap.shape


def test_analyses_work_on_the_layer(case, data):
    crp, layer, grid, _extra = case
    dataset, masks = data
    images = torch.stack([dataset[i][0] for i in range(8)])
    labels = dissect(crp, dataset, layer, masks=lambda index: masks[index], batch_size=4)
    assert labels.iou.shape[0] == crp.channel_relevance(images[0], layer).relevance.shape[0]
    concept = learn_concept(crp, layer, images[:4], images[4:], masks=[m["left"] for m in masks[:4]])
    maps = concept_maps(crp, images[0], concept)
    assert maps.concept_layer.shape[-2:] == grid
    assert maps.concept.shape[-2:] == (SIZE, SIZE)
    curve = insertion_curve(
        crp, images[:2], images[2], layer, mask=masks[0]["left"], alphas=(0.0, 1.0), track=2, batch_size=4
    )
    assert curve.outputs.shape[:2] == (2, 2)
    blended = Blend(crp.layout(layer).to_grid(crp.evaluate(images[2:3], record=[layer])[1][layer])[0],
                    layer_mask(masks[0]["left"], grid))  # fmt: skip
    with crp.edited({layer: blended}):
        assert crp.predict(images[0]).shape == (4,)
    flipped = filter_flipping(crp, images[0], layer, target=0, steps=3, batch_size=8)
    assert bool(torch.isfinite(flipped.output).all())
    profiles = class_profiles(crp, dataset, [layer], per_class=1)
    assert bool(torch.isfinite(profiles.channel[layer]).all())
    occluder = learn_occluder(crp, images[:2], int(crp.predict(images[0]).argmax()), steps=2)
    assert channel_importance(crp, images[:2], occluder, layer).numel() > 0
    atlas = concept_atlas(crp, images[0], layer, n=2, target=0)
    assert len(atlas.channels) == 2
