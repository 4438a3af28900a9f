"""Interventions on activations (Sec. 4.1-4.3, Eq. 27-29) against direct computations on split models."""

import pytest
import torch
from zoo import random_images, small_cnn

from crp_widgets.engine import CRP, CRPError
from crp_widgets.engine.interventions import Blend, Scale, layer_mask


@pytest.fixture(scope="module")
def setup():
    model = small_cnn(seed=1)
    x = random_images(4, seed=2).tensors[0]
    return model, CRP(model), x


def _split(model, x, layer, change):
    """The output of ``model`` (a Sequential) with ``change`` applied to the output of module ``layer``."""
    index = int(layer)
    with torch.no_grad():
        hidden = model[: index + 1](x)
        return model[index + 1 :](change(hidden))


def test_scale_switches_channels_off_like_a_direct_computation(setup):
    model, crp, x = setup
    output, found = crp.evaluate(x, {"4": Scale([1, 5, 7])}, record=["4"])

    def zero(h):
        h = h.clone()
        h[:, [1, 5, 7]] = 0
        return h

    torch.testing.assert_close(output, _split(model, x, "4", zero), rtol=1e-4, atol=1e-5)
    assert found["4"][:, [1, 5, 7]].abs().max() == 0
    assert found["4"][:, 0].abs().max() > 0


def test_per_sample_factors_equal_one_edit_at_a_time(setup):
    _, crp, x = setup
    factors = torch.ones(len(x), 16)
    for i in range(len(x)):
        factors[i, i * 3 : i * 3 + 3] = 0.0
    factors[0, 10] = 2.5
    batched, _ = crp.evaluate(x, {"4": Scale(factors)})
    for i in range(len(x)):
        one, _ = crp.evaluate(x[i], {"4": Scale(factors[i])})
        torch.testing.assert_close(batched[i], one, rtol=1e-4, atol=1e-5)


def test_blend_at_alpha_0_and_1_gives_the_two_original_passes(setup):
    _, crp, x = setup
    target, donor = x[0], x[1]
    _, acts = crp.evaluate(donor, record=["4"])
    original, _ = crp.evaluate(target)
    donor_output, _ = crp.evaluate(donor)
    at_0, _ = crp.evaluate(target, {"4": Blend(acts["4"], alpha=0.0)})
    at_1, _ = crp.evaluate(target, {"4": Blend(acts["4"], alpha=1.0)})
    torch.testing.assert_close(at_0, original, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(at_1, donor_output, rtol=1e-4, atol=1e-5)


def test_blend_inside_a_mask_follows_eq_28(setup):
    model, crp, x = setup
    target, donor = x[0], x[1]
    _, acts = crp.evaluate(donor, record=["4"])
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[2:9, 3:12] = True
    mask = layer_mask(region, acts["4"].shape[1:])
    alphas = torch.tensor([0.0, 0.25, 0.5, 1.0])
    sweep, _ = crp.evaluate(target.expand(4, -1, -1, -1), {"4": Blend(acts["4"], mask, alpha=alphas, channels=[2, 3])})
    for alpha, row in zip(alphas, sweep):

        def blend(h, alpha=float(alpha)):
            h = h.clone()
            m = mask.float()
            for c in (2, 3):
                h[:, c] = h[:, c] + alpha * m * (acts["4"][c] - h[:, c])
            return h

        torch.testing.assert_close(row, _split(model, target[None], "4", blend)[0], rtol=1e-4, atol=1e-5)


def test_averaged_donor_follows_eq_29(setup):
    _, crp, x = setup
    _, acts = crp.evaluate(x[1], record=["4"])
    edit = Blend.averaged(acts["4"], alpha=1.0)
    _, found = crp.evaluate(x[0], {"4": edit}, record=["4"])
    expected = acts["4"].mean(dim=(1, 2))[:, None, None].expand_as(found["4"])
    torch.testing.assert_close(found["4"], expected, rtol=1e-5, atol=1e-6)


def test_crp_under_edits_sees_the_edited_model_and_restores_it(setup):
    model, crp, x = setup
    before = crp.attribute(x[0], target=3, record=["4"])
    with crp.edited({"4": Scale([0, 1, 2])}):
        inside = crp.attribute(x[0], target=3, record=["4"])
        predicted = crp.predict(x[0])
    after = crp.attribute(x[0], target=3, record=["4"])
    plain, _ = crp.evaluate(x[0], {"4": Scale([0, 1, 2])})
    torch.testing.assert_close(predicted, plain, rtol=1e-4, atol=1e-5)
    assert inside.activations["4"][[0, 1, 2]].abs().max() == 0
    assert inside.relevance["4"][[0, 1, 2]].abs().max() == 0
    assert not torch.allclose(inside.prediction, before.prediction)
    torch.testing.assert_close(after.prediction, before.prediction)
    torch.testing.assert_close(after.heatmap, before.heatmap)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_an_identity_edit_changes_nothing_and_a_scaled_channel_changes_what_is_above(setup):
    """The edit sits outside the relevance path: a factor 1 gives exactly the unedited attribution."""
    _, crp, x = setup
    plain = crp.attribute(x[0], target=1, record=["4", "6"])
    with crp.edited({"4": Scale({5: 1.0})}):
        same = crp.attribute(x[0], target=1, record=["4", "6"])
    with crp.edited({"4": Scale({5: 3.0})}):
        scaled = crp.attribute(x[0], target=1, record=["4", "6"])
    torch.testing.assert_close(same.heatmap, plain.heatmap)
    torch.testing.assert_close(same.relevance["4"], plain.relevance["4"])
    torch.testing.assert_close(scaled.activations["4"][5], 3.0 * plain.activations["4"][5])
    assert not torch.allclose(scaled.activations["6"], plain.activations["6"])


def test_bad_edits_name_the_problem(setup):
    _, crp, x = setup
    with pytest.raises(CRPError, match="out of range"):
        crp.evaluate(x, {"4": Scale([99])})
    with pytest.raises(CRPError, match=r"unknown layer|not a layer|valid"):
        crp.evaluate(x, {"nope": Scale([1])})
    with pytest.raises(CRPError, match="alpha"):
        Blend(torch.zeros(16, 8, 8), alpha=1.5)
    with pytest.raises(CRPError, match="donor"):
        crp.evaluate(x, {"4": Blend(torch.zeros(3, 8, 8))})
    with pytest.raises(CRPError, match="Scale or a Blend"):
        crp.evaluate(x, {"4": 0})
    out, _ = crp.evaluate(x)  # still works
    assert out.shape == (4, 10)
