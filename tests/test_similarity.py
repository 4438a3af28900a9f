"""Concept similarity (CRP paper Sec. 4.4, Eq. 30-31): rho against a direct double-loop computation."""

import numpy as np
import pytest
import torch
from zoo import random_images, small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRPError
from crp_widgets.engine.similarity import concept_similarity, embed, similar

LAYER = "4"  # Conv2d(8, 16) followed by a ReLU: the canonized output equals the model's own


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, data = small_cnn(), random_images(96)
    crp = cw.CRP(model)
    store = cw.scan(crp, data, [LAYER, "6"], tmp_path_factory.mktemp("sim"), k=6, progress=False)
    return model, data, crp, store


def direct_rho(model, data, store, layer, k):
    """Eq. 30-31 literally: a loop over channel pairs and over each channel's references."""
    module = dict(model.named_modules())[layer]
    maps = {}

    def activation(index):
        if index not in maps:
            found = {}
            handle = module.register_forward_hook(lambda m, a, out: found.setdefault("z", out.detach()))
            with torch.no_grad():
                model(data[index][0][None])
            handle.remove()
            maps[index] = found["z"][0].clamp(min=0).double()
        return maps[index]

    channels = store.layers[layer]["channels"]
    cos = np.zeros((channels, channels))
    for q in range(channels):
        references = store.references(layer, q, k=k)
        for p in range(channels):
            total = 0.0
            for reference in references:
                z = activation(reference.index)
                zq, zp = z[q].flatten(), z[p].flatten()
                norm = float(zq.norm() * zp.norm())
                total += float(zq @ zp) / norm if norm > 0 else 0.0
            cos[q, p] = total / len(references)
    rho = (cos + cos.T) / 2
    np.fill_diagonal(rho, 1.0)
    return rho


def test_rho_equals_the_direct_double_loop_of_eq_30_31(setup):
    model, data, crp, store = setup
    rho = concept_similarity(crp, store, {"dataset": data}, LAYER, k=4, batch_size=7, pair_budget=500)
    expected = direct_rho(model, data, store, LAYER, 4)
    assert rho.shape == (16, 16)
    np.testing.assert_allclose(rho.numpy(), expected, atol=1e-5)
    # Channels are not all alike: the similarity spreads.
    assert float(rho.min()) < 0.6


def test_rho_is_symmetric_in_0_1_with_ones_on_the_diagonal(setup):
    _, data, crp, store = setup
    rho = concept_similarity(crp, store, {"dataset": data}, "6", k=6)
    assert torch.equal(rho, rho.T)
    assert torch.equal(torch.diagonal(rho), torch.ones(16))
    assert float(rho.min()) >= 0
    assert float(rho.max()) <= 1 + 1e-6


def test_batching_does_not_change_rho(setup):
    _, data, crp, store = setup
    one = concept_similarity(crp, store, {"dataset": data}, LAYER, k=6, batch_size=1)
    many = concept_similarity(crp, store, {"dataset": data}, LAYER, k=6, batch_size=64)
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)


def test_embed_places_one_point_per_channel_and_keeps_clusters_together():
    # Two groups of channels whose maps overlap within the group only: t-SNE keeps each group apart.
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(2, 50, generator=generator)
    maps = torch.cat([centres[0] + 0.3 * torch.rand(10, 50, generator=generator),
                      centres[1] + 0.3 * torch.rand(10, 50, generator=generator)])  # fmt: skip
    maps[:10, :25] = maps[10:, 25:] = 0
    maps = torch.nn.functional.normalize(maps, dim=1)
    rho = maps @ maps.T
    points = embed(rho, seed=0)
    assert points.shape == (20, 2)
    assert np.isfinite(points).all()
    a, b = points[:10], points[10:]
    within = max(np.linalg.norm(a - a.mean(0), axis=1).max(), np.linalg.norm(b - b.mean(0), axis=1).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * within
    np.testing.assert_array_equal(points, embed(rho, seed=0))


def test_similar_ranks_other_channels_by_rho():
    rho = torch.tensor([[1.0, 0.2, 0.9, 0.5], [0.2, 1.0, 0.1, 0.3], [0.9, 0.1, 1.0, 0.4], [0.5, 0.3, 0.4, 1.0]])
    assert similar(rho, 0, k=2) == [(2, pytest.approx(0.9)), (3, pytest.approx(0.5))]
    assert [c for c, _ in similar(rho, 1, k=10)] == [3, 0, 2]


def test_bad_input_names_the_problem(setup):
    _, data, crp, store = setup
    with pytest.raises(CRPError, match="not in this reference store"):
        concept_similarity(crp, store, {"dataset": data}, "12")
    with pytest.raises(CRPError, match="give it in `datasets`"):
        concept_similarity(crp, store, {}, LAYER)
    with pytest.raises(CRPError, match="out of range"):
        similar(torch.eye(3), 3)
    with pytest.raises(CRPError, match="square"):
        embed(torch.ones(3, 4))


def test_the_view_shows_one_point_per_channel_and_a_click_focuses_the_channel(setup):
    from crp_widgets.widgets.session import ExplorerState, Session
    from crp_widgets.widgets.similarity import ConceptSimilarityView
    from crp_widgets.widgets.worker import Worker

    _model, data, crp, store = setup
    session = Session(crp, data, store=store, worker=Worker(synchronous=True))
    state = ExplorerState(layer=LAYER, channel=3)
    view = ConceptSimilarityView(session, state, k=4, neighbours=2)
    assert view.rho is None  # nothing computed until shown (a hidden explorer tab costs nothing)
    view.active = False
    view.active = True  # shown, as when its explorer tab is selected
    assert view.error == ""
    assert len(view.scatter.x) == 16
    np.testing.assert_allclose(view.scatter.color, view.rho[3].numpy())
    assert view.cluster[0] == 3
    assert len(view.cluster) == 3
    view._on_click(view.scatter, {"data": {"index": 9}})
    assert state.channel == 9
    assert view.cluster[0] == 9
    np.testing.assert_allclose(view.scatter.color, view.rho[9].numpy())
    # A layer the store does not hold: the error shows inside the view, which keeps working.
    state.layer = "0"
    assert "not in this reference store" in view.error
    state.layer = "6"
    assert view.error == ""
    assert len(view.scatter.x) == 16


def test_without_a_store_the_view_says_what_to_do(setup):
    from crp_widgets.widgets.session import ExplorerState, Session
    from crp_widgets.widgets.similarity import ConceptSimilarityView
    from crp_widgets.widgets.worker import Worker

    model, data, *_ = setup
    view = ConceptSimilarityView(Session(model, data, worker=Worker(synchronous=True)), ExplorerState(layer=LAYER))
    view.refresh()
    assert "No reference store" in view.children[-1].value
