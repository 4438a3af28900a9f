"""User-defined concepts (SACV, Wang & Lee 2022): concept vectors, the maps S_k and S_k->c, TCAV-style summaries."""

import numpy as np
import pytest
import torch
from zoo import random_images, small_cnn

import crp_widgets as cw
from crp_widgets.engine import CRPError, UnknownLayerError
from crp_widgets.engine.concepts import ConceptVector, concept_contribution, concept_maps, learn_concept

# ------------------------------------------------------------------------------------------------ small model


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def crp(model):
    return cw.CRP(model)


@pytest.fixture(scope="module")
def images():
    return torch.stack([random_images(12, seed=3)[i][0] for i in range(12)])


def _direct(model, x, split, cls):
    """Activations after ``model[:split]`` and the autograd gradient of logit ``cls`` w.r.t. them."""
    with torch.no_grad():
        activation = model[:split](x)
    leaf = activation.clone().requires_grad_(True)
    output = model[split:](leaf.clone())
    (gradient,) = torch.autograd.grad(output[:, cls].sum(), leaf)
    return activation, gradient


@pytest.mark.parametrize(("layer", "split"), [("0", 2), ("4", 5)])
def test_maps_equal_a_direct_computation(model, crp, images, layer, split):
    # "0" is followed by BatchNorm: the canonized activation is BN(conv(x)), i.e. model[:2]; "4" by an in-place ReLU.
    cv = learn_concept(crp, layer, images[:4], images[4:8])
    assert cv.vector.shape == (model[split - 1 if layer == "4" else 0].out_channels,)
    assert float(cv.vector.norm()) == pytest.approx(1.0, abs=1e-5)
    _, recorded = crp.evaluate(images[8:], record=[layer])
    expected_concept = torch.einsum("bchw,c->bhw", recorded[layer], cv.vector)
    activation, gradient = _direct(model, images[8:], split, 3)
    torch.testing.assert_close(recorded[layer], activation, rtol=1e-4, atol=1e-5)
    expected_contribution = torch.einsum("bchw,c->bhw", gradient, cv.vector)

    maps = concept_maps(crp, images[8:], cv, target=3)
    torch.testing.assert_close(maps.concept_layer, expected_concept, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps.contribution_layer, expected_contribution, rtol=1e-4, atol=1e-6)
    assert maps.concept.shape == (4, 16, 16)
    assert maps.contribution.shape == (4, 16, 16)
    assert float(expected_contribution.abs().max()) > 0  # the comparison is not between zeros

    one = concept_maps(crp, images[8], cv, target=3)  # unbatched in, unbatched out
    assert one.target == 3
    assert one.concept.shape == (16, 16)
    torch.testing.assert_close(one.contribution_layer, expected_contribution[0], rtol=1e-4, atol=1e-6)
    # The user's model is left as found: no gradients accumulated, no hooks.
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_the_prediction_is_the_default_class_and_the_summary_matches_the_maps(model, crp, images):
    cv = learn_concept(crp, "4", images[:4], images[4:8])
    maps = concept_maps(crp, images[8:], cv)
    torch.testing.assert_close(maps.target, model(images[8:]).argmax(1))
    summary = concept_contribution(crp, images[8:], cv, 2)
    direct = concept_maps(crp, images[8:], cv, target=2).contribution_layer
    torch.testing.assert_close(summary.derivatives, direct.sum((1, 2)), rtol=1e-4, atol=1e-6)
    assert summary.score == pytest.approx(float((direct.sum((1, 2)) > 0).float().mean()))
    assert summary.images == 4
    assert 0 <= summary.inside_share <= 1


def test_masks_choose_positive_and_negative_positions(crp, images):
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[:, :8, :8] = True  # the top-left quarter: at layer "4" (8x8) 16 covered, 48 uncovered positions each
    cv = learn_concept(crp, "4", images[:2], masks=masks)
    assert (cv.positives, cv.negatives) == (2 * 16, 2 * 48)
    cv = learn_concept(crp, "4", images[:2], images[2:4], masks=[masks[0], None])
    assert (cv.positives, cv.negatives) == (16 + 64, 48 + 2 * 64)


def test_random_counter_examples_come_from_the_dataset(crp, images):
    data = random_images(30, seed=5)
    cv = learn_concept(crp, "4", images[:3], dataset=data, n_random=5, exclude=range(20))
    assert cv.negatives == 5 * 64
    assert cv.positives == 3 * 64
    with pytest.raises(CRPError, match="no samples left"):
        learn_concept(crp, "4", images[:3], dataset=data, exclude=range(30))


def test_clear_errors(crp, images):
    with pytest.raises(CRPError, match="no examples"):
        learn_concept(crp, "4", torch.empty(0, 3, 16, 16), images[:2])
    with pytest.raises(CRPError, match="empty"):
        learn_concept(crp, "4", [], images[:2])
    with pytest.raises(UnknownLayerError, match="Valid layers"):
        learn_concept(crp, "features.nope", images[:2], images[2:4])
    with pytest.raises(CRPError, match=r"concept examples.*channels"):
        learn_concept(crp, "4", torch.rand(2, 1, 16, 16), images[2:4])
    with pytest.raises(CRPError, match="same shape"):
        learn_concept(crp, "4", [images[0], torch.rand(3, 8, 8)], images[2:4])
    with pytest.raises(CRPError, match="counter-examples"):
        learn_concept(crp, "4", images[:2], torch.rand(2, 3, 16))
    with pytest.raises(CRPError, match="no counter positions"):
        learn_concept(crp, "4", images[:2])
    with pytest.raises(CRPError, match="masks has shape"):
        learn_concept(crp, "4", images[:2], masks=np.ones((2, 8, 8), dtype=bool))
    with pytest.raises(CRPError, match="unknown classifier"):
        learn_concept(crp, "4", images[:2], images[2:4], classifier="tree")
    cv = learn_concept(crp, "4", images[:2], images[2:4], classifier="svm")
    wrong = ConceptVector("0", cv.vector, 0.0, 1.0, 1, 1)  # 16 entries for a layer of 8 channels
    with pytest.raises(CRPError, match="8 channels"):
        concept_maps(crp, images[0], wrong)
    with pytest.raises(CRPError, match="out of range"):
        concept_maps(crp, images[0], cv, target=10)
    with pytest.raises(CRPError, match="the images"):
        concept_contribution(crp, [], cv, 0)


# ------------------------------------------------------------------------------------------------- demo world


@pytest.fixture(scope="module")
def demo():
    return cw.demo.load(length=200)


def _striped(demo):
    """Indices of the striped scenes (the classes textured with stripes) and of the others, from the labels."""
    textured = {demo.classes.index(name) for name in demo.classes if name.startswith("striped")}
    labels = [int(label) for label in demo.dataset.labels]
    return [i for i, c in enumerate(labels) if c in textured], [i for i, c in enumerate(labels) if c not in textured]


def test_a_stripes_concept_lights_up_the_stripes(demo):
    """S_k of a concept learned from the stripes masks concentrates on the stripes of unseen striped images.

    Measured (conv2-conv4, 8-10 examples, 16-30 held-out striped images): the share of the positive S_k inside the
    stripes mask is 5-8x the mask's area share (its value by chance), at least 3x on every image. At conv4 the
    TCAV score is 1.0 for both striped classes and 0.0 for dotted circles, yellow squares and dotted triangles.
    """
    crp = cw.CRP(demo.model)
    striped, plain = _striped(demo)
    train, test = striped[:8], striped[8:24]
    examples = torch.stack([demo.dataset[i][0] for i in train])
    masks = np.stack([demo.masks(i)["stripes"] for i in train])
    counter = torch.stack([demo.dataset[i][0] for i in plain[:8]])
    cv = learn_concept(crp, "features.conv4", examples, counter, masks=masks)
    assert cv.accuracy > 0.9

    held_out = torch.stack([demo.dataset[i][0] for i in test])
    truth = np.stack([demo.masks(i)["stripes"] for i in test])
    concept = np.clip(concept_maps(crp, held_out, cv).concept.numpy(), 0, None)
    share = (concept * truth).sum((1, 2)) / concept.sum((1, 2))
    chance = truth.mean((1, 2))
    assert (share / chance).mean() > 4
    assert (share / chance).min() > 2

    # TCAV-style: along v_k the striped class's logit grows on its own images, a dotted class's does not.
    labels = demo.dataset.labels
    for name, low, high in (("striped square", 0.8, 1.0), ("dotted circle", 0.0, 0.2), ("yellow square", 0.0, 0.2)):
        cls = demo.classes.index(name)
        members = torch.stack([demo.dataset[i][0] for i in range(len(demo.dataset)) if labels[i] == cls][:12])
        summary = concept_contribution(crp, members, cv, cls)
        assert low <= summary.score <= high, (name, summary)
        if name.startswith("striped"):
            assert summary.inside > summary.outside


# ------------------------------------------------------------------------------------------------------ the view


def _message(widget, content):
    widget._handle_custom_msg(content, [])


def test_the_view_learns_from_the_basket_and_shows_the_maps(demo):
    from crp_widgets.widgets.concepts import UserConceptView
    from crp_widgets.widgets.gallery import ReferenceGallery
    from crp_widgets.widgets.session import ExplorerState, Session
    from crp_widgets.widgets.worker import Worker

    session = Session(demo.model, demo.dataset, classes=demo.classes, worker=Worker(synchronous=True))
    state = ExplorerState(layer="features.conv4")
    striped, _ = _striped(demo)
    view = UserConceptView(session, state, masks=lambda _, i: demo.masks(i).get("stripes"), n_random=6,
                           summary_size=6)  # fmt: skip
    _message(view, {"type": "learn"})
    assert "basket is empty" in view.error
    state.sample = striped[0]
    _message(view, {"type": "add_current"})
    for index in striped[1:6]:
        _message(view, {"type": "add", "index": index})
    _message(view, {"type": "add", "index": striped[1]})  # already there: no duplicate
    _message(view, {"type": "add", "index": 10**6})
    assert "out of range" in view.error
    plain = next(i for i in range(len(demo.dataset)) if i not in striped)
    ReferenceGallery(session, state)._handle_custom_msg({"type": "basket", "dataset": "dataset", "index": plain}, [])
    assert state.basket[-1] == {"dataset": "dataset", "index": plain}
    assert len(state.basket) == 7
    _message(view, {"type": "remove", "position": 6})
    assert [e["index"] for e in view.basket] == striped[:6]
    assert len(view.thumbnails) == 6
    assert view.thumbnails[0].shape == (64, 64, 3)

    _message(view, {"type": "learn"})
    assert view.error == ""
    info = view.concept_info
    assert info["layer"] == "features.conv4"
    assert info["examples"] == 6
    assert info["accuracy"] > 0.9
    assert view.concept is not None
    assert view.maps_info["layer"] == "features.conv4"
    x, _label = demo.dataset[striped[0]]
    expected = concept_maps(session.crp, x, view.concept, target=view.maps_info["cls"])
    np.testing.assert_allclose(view.concept_map, expected.concept.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(view.contribution_map, expected.contribution.numpy(), rtol=1e-5, atol=1e-6)
    assert view.image.shape == (64, 64, 3)
    summary = view.summary
    assert summary["cls"] == view.maps_info["cls"]
    assert summary["images"] == 6
    assert 0 <= summary["score"] <= 1

    state.target = demo.classes.index("dotted circle")  # the maps follow the class
    assert view.maps_info["name"] == "dotted circle"
    assert view.summary["name"] == "dotted circle"
    view.layer = "features.nope"
    _message(view, {"type": "learn"})
    assert "unknown layer" in view.error
    assert view.concept_info["layer"] == "features.conv4"
