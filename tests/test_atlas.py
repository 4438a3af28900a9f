"""The concept atlas (CRP paper Sec. 3.3, A.4) and region concepts (Eq. 11-12), against direct computations."""

import pytest
import torch
from zoo import small_cnn

from crp_widgets.engine import CRP, CRPError
from crp_widgets.engine.atlas import (
    assign_concepts,
    concept_atlas,
    region_concepts,
    superpixels,
    top_concepts,
)
from crp_widgets.engine.references import gaussian_smooth

LAYER = "6"
TARGET = 4


def quadrants(seed=0, size=32):
    """An image of four coloured quadrants with a little noise: SLIC finds structure in it."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, size, size)
    half = size // 2
    for (top, left), colour in zip(((0, 0), (0, half), (half, 0), (half, half)), [*torch.eye(3).tolist(), [1, 1, 0]]):
        image[:, top : top + half, left : left + half] = torch.tensor(colour).reshape(3, 1, 1)
    return (0.8 * image + 0.2 * torch.rand(3, size, size, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def crp():
    return CRP(small_cnn(seed=3))


@pytest.fixture(scope="module")
def x():
    return quadrants()


@pytest.fixture(scope="module")
def atlas(crp, x):
    return concept_atlas(crp, x, LAYER, n=5, target=TARGET, segments=superpixels(x, n_segments=16))


def direct_heatmaps(crp, x, channels):
    """Eq. 9 one channel at a time, with a separate backward pass each."""
    return torch.stack([crp.attribute(x, target=TARGET, conditions={LAYER: [c]}).heatmap for c in channels])


def test_superpixels_are_consecutive_labels_covering_the_image(x):
    segments = superpixels(x, n_segments=16, compactness=10, sigma=1)
    assert segments.shape == (32, 32)
    assert segments.dtype == torch.int64
    assert torch.equal(torch.unique(segments), torch.arange(int(segments.max()) + 1))
    assert 4 <= int(segments.max()) + 1 <= 40
    channels_last = superpixels(x.permute(1, 2, 0).numpy(), n_segments=16, compactness=10, sigma=1)
    assert torch.equal(channels_last, segments)


def test_the_concepts_are_the_layers_most_relevant_channels(crp, x, atlas):
    ranking = crp.channel_relevance(x, LAYER, target=TARGET)
    assert atlas.channels == [int(c) for c in ranking.order[:5]]
    assert torch.allclose(atlas.channel_relevance, ranking.relevance[ranking.order[:5]])
    assert torch.allclose(atlas.channel_share, ranking.share[ranking.order[:5]])
    expected = direct_heatmaps(crp, x, atlas.channels)
    assert torch.allclose(atlas.heatmaps, expected, rtol=1e-4, atol=1e-7)


def test_superpixel_relevance_equals_a_direct_sum_per_superpixel(crp, x, atlas):
    heatmaps = direct_heatmaps(crp, x, atlas.channels)
    count = int(atlas.segments.max()) + 1
    assert atlas.relevance.shape == (count, 5)
    for k in range(count):
        inside = atlas.segments == k
        area = int(inside.sum())
        assert float(atlas.area[k]) == area
        sums = heatmaps[:, inside].sum(1)
        assert torch.allclose(atlas.relevance[k], sums, rtol=1e-4, atol=1e-7)
        assert float(atlas.density[k]) == pytest.approx(float(sums.sum()) / area, rel=1e-4, abs=1e-9)
        # Eq. 26: the regional ranking of the concepts, most relevant first.
        assert atlas.relevance[k][atlas.ranking[k]].tolist() == sorted(atlas.relevance[k].tolist(), reverse=True)


def test_fill_and_mark_are_the_most_and_second_most_relevant_concepts(atlas):
    coloured = atlas.first >= 0
    assert coloured.any()
    for k in torch.nonzero(coloured).flatten().tolist():
        order = torch.argsort(atlas.relevance[k], descending=True)
        assert int(atlas.first[k]) == int(order[0])
        second = int(order[1])
        assert int(atlas.second[k]) == (second if atlas.relevance[k, second] > 0 else -1)
    concept_map = atlas.concept_map()
    channels = torch.tensor(atlas.channels)
    for k in range(len(atlas.first)):
        expected = int(channels[atlas.first[k]]) if atlas.first[k] >= 0 else -1
        assert set(concept_map[atlas.segments == k].tolist()) == {expected}


def test_the_threshold_leaves_low_density_superpixels_uncoloured(atlas):
    peak = float(atlas.density.max())
    assert atlas.threshold == pytest.approx(0.1 * peak)
    low = atlas.density < 0.1 * peak
    assert low.any(), "the test image should have some superpixels of low relevance density"
    assert (atlas.first[low] == -1).all()
    assert (atlas.second[low] == -1).all()
    assert (atlas.first[~low] >= 0).all()
    strict = assign_concepts(atlas.heatmaps, atlas.segments, threshold=0.6)
    kept = atlas.density >= 0.6 * peak
    assert torch.equal(strict["first"] >= 0, kept)
    assert int((strict["first"] >= 0).sum()) < int((atlas.first >= 0).sum())


def test_single_pixel_atlas_ranks_concepts_per_pixel(crp, x):
    atlas = concept_atlas(crp, x, LAYER, n=4, target=TARGET, segments=None, density_sigma=2.0)
    assert atlas.pixel_mode
    assert torch.equal(atlas.segments, torch.arange(32 * 32).reshape(32, 32))
    heatmaps = direct_heatmaps(crp, x, atlas.channels)
    flat = heatmaps.reshape(4, -1).T
    assert torch.allclose(atlas.relevance, flat, rtol=1e-4, atol=1e-7)
    density = gaussian_smooth(heatmaps.sum(0), 2.0).flatten()  # A.4: density from a Gaussian filter
    assert torch.allclose(atlas.density, density, rtol=1e-4, atol=1e-7)
    shown = density >= 0.1 * density.max()
    best, order = flat.max(1)
    expected = torch.where(shown & (best > 0), order, -1)
    assert torch.equal(atlas.first, expected)
    assert (atlas.first == -1).any()
    assert (atlas.first >= 0).any()


def test_the_atlas_is_deterministic(crp, x, atlas):
    again = concept_atlas(crp, x.clone(), LAYER, n=5, target=TARGET, segments=superpixels(x.clone(), n_segments=16))
    for field in ("segments", "ranking", "first", "second"):
        assert torch.equal(getattr(again, field), getattr(atlas, field)), field
    # Float sums may round differently from run to run (threaded CPU kernels), never by more than rounding.
    for field in ("relevance", "density", "heatmaps"):
        assert torch.allclose(getattr(again, field), getattr(atlas, field), rtol=1e-5, atol=1e-12), field
    assert again.channels == atlas.channels


def test_class_free_atlas_starts_from_activations(crp, x):
    channels, relevance, _, heatmaps = top_concepts(crp, x, LAYER, n=3, target=None)
    ranking = crp.channel_relevance(x, LAYER, target=None)
    assert channels == [int(c) for c in ranking.order[:3]]
    assert torch.allclose(relevance, ranking.relevance[ranking.order[:3]])
    assert torch.allclose(heatmaps, crp.conditional_heatmaps(x, LAYER, channels, target=None))


def test_region_concepts_rank_by_region_relevance_with_heatmaps(crp, x):
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[4:14, 18:30] = True
    found = region_concepts(crp, x, LAYER, mask, k=3, target=TARGET)
    ranking = crp.region_relevance(x, LAYER, mask, target=TARGET)
    assert found.channels == [int(c) for c in ranking.order[:3]]
    assert torch.allclose(found.ranking.relevance, ranking.relevance)
    heatmaps = direct_heatmaps(crp, x, found.channels)
    assert torch.allclose(found.heatmaps, heatmaps, rtol=1e-4, atol=1e-7)
    # Eq. 11-12: each channel's regional relevance is its conditional heatmap summed over the region.
    assert torch.allclose(heatmaps[:, mask].sum(1), ranking.relevance[found.channels], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda crp, x: superpixels(x, n_segments=0), "n_segments must be a positive number"),
        (lambda crp, x: superpixels(x, compactness=0), "compactness must be positive"),
        (lambda crp, x: superpixels(x, sigma=-1), "sigma must be zero or positive"),
        (lambda crp, x: superpixels(torch.rand(2, 8, 8, 8)), r"need an image \[3, H, W\]"),
        (lambda crp, x: concept_atlas(crp, x, LAYER, n=0), "number of concepts must be a positive integer"),
        (lambda crp, x: concept_atlas(crp, x, LAYER, threshold=1.5), r"threshold is a fraction .* in \[0, 1\]"),
        (
            lambda crp, x: concept_atlas(crp, x, LAYER, segments=torch.zeros(8, 8, dtype=torch.int64)),
            r"superpixel labels have shape \(8, 8\), the heatmaps \(32, 32\)",
        ),
        (lambda crp, x: region_concepts(crp, x, LAYER, torch.ones(32, 32), k=0), "k must be a positive number"),
    ],
)
def test_bad_arguments_are_named(crp, x, call, message):
    with pytest.raises(CRPError, match=message):
        call(crp, x)
