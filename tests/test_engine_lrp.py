"""The engine against plain zennit LRP, conservation, and the user's model left as found."""

import gc
import weakref

import pytest
import torch
from reference import reference
from zennit.attribution import Gradient
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, WSquare, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, Convolution, Linear
from zoo import conv1d_net, small_cnn, torchvision_model

from crp_widgets.engine import CRP, describe, explainable_layers
from crp_widgets.engine.errors import UnsupportedModelError
from crp_widgets.engine.state import ModelState


def zennit_composite(model):
    """EpsilonPlusFlat with the canonizers zennit needs for ``model`` (the engine canonizes by itself)."""
    modules = list(model.modules())
    if any(type(module).__name__ in ("BasicBlock", "Bottleneck") for module in modules):
        return EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    if any(isinstance(module, torch.nn.BatchNorm2d) for module in modules):
        return EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    return EpsilonPlusFlat()


def zennit_lrp(model, composite, x, target):
    """zennit's own attribution: relevance initialised with the explained output's value (A.3)."""
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * torch.nn.functional.one_hot(torch.tensor(target), out.shape[1]))
    return relevance


def close(a, b, rtol=1e-4):
    """Equal up to float32 rounding, relative to the largest magnitude."""
    scale = max(float(b.abs().max()), 1e-30)
    return float((a - b).abs().max()) <= rtol * scale


MODELS = [
    ("small_cnn", small_cnn, (2, 3, 16, 16)),
    ("conv1d", conv1d_net, (2, 2, 32)),
    ("vgg16", lambda: torchvision_model("vgg16"), (1, 3, 64, 64)),
    ("vgg16_bn", lambda: torchvision_model("vgg16_bn"), (1, 3, 64, 64)),
    ("resnet18", lambda: torchvision_model("resnet18"), (1, 3, 64, 64)),
    ("resnet50", lambda: torchvision_model("resnet50"), (1, 3, 64, 64)),
]
# zennit 0.5's merge leaves each BatchNorm scaling by 1 / sqrt(1 + eps) (zennit 1.0 and the engine: exactly 1):
# a relative difference of about 5e-6 per BatchNorm layer
TOLERANCE = {"vgg16_bn": 3e-4, "resnet50": 3e-4}


@pytest.mark.parametrize(("name", "build", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_unconditioned_heatmap_equals_zennit_lrp(name, build, shape):
    model = build()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    crp = CRP(model)
    target = [int(t) for t in crp.predict(x).argmax(1)]
    expected = zennit_lrp(model, zennit_composite(model), x, target)
    result = crp.attribute(x, target=torch.tensor(target))
    rtol = TOLERANCE.get(name, 1e-4)
    assert result.input_relevance.shape == x.shape
    assert close(result.input_relevance, expected, rtol), name
    assert result.heatmap.shape == (shape[0], *shape[2:])
    assert close(result.heatmap, expected.sum(1), rtol)
    one = x[-1:] * 0.5  # a later pass of one sample
    assert close(
        crp.attribute(one, target=target[-1]).input_relevance,
        zennit_lrp(model, zennit_composite(model), one, [target[-1]]),
        rtol,
    )


def test_branches_whose_input_is_all_zeros_give_zennit_result():
    """z+ after a ReLU (an all-zero negative branch) and on an all-zero image (every branch zero)."""
    composite = EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])
    model = small_cnn()
    crp = CRP(model, composite=composite)
    for x in (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)), torch.zeros(2, 3, 16, 16)):
        relevance = crp.attribute(x, target=4).input_relevance
        expected = zennit_lrp(model, composite, x, [4, 4])
        assert relevance.shape == expected.shape
        assert close(relevance, expected)
    assert not relevance.any()


@pytest.mark.parametrize(
    "composite",
    [
        EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]),
        EpsilonAlpha2Beta1(canonizers=[SequentialMergeBatchNorm()]),
        EpsilonGammaBox(low=0.0, high=1.0, canonizers=[SequentialMergeBatchNorm()]),
    ],
    ids=describe,
)
def test_any_zennit_composite_gives_zennit_result(composite):
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    crp = CRP(model, composite=composite)
    expected = zennit_lrp(model, composite, x, [4, 4])
    assert close(crp.attribute(x, target=4).input_relevance, expected)


@pytest.mark.parametrize(
    "first",
    [
        torch.nn.Conv2d(3, 8, 3, padding="same"),
        torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(3, 6, 3, padding=2, stride=2, dilation=2, groups=3),
        torch.nn.Conv2d(3, 8, (3, 5), padding=(1, 2), stride=(1, 2)),
    ],
    ids=["same", "reflect", "grouped-strided-dilated", "rectangular"],
)
def test_every_convolution_geometry_gives_zennit_result(first):
    """Direct vector-Jacobian products (and the Flat rule's shortcut) hold for every convolution geometry."""
    torch.manual_seed(3)
    channels = first.out_channels
    model = torch.nn.Sequential(
        first,
        torch.nn.ReLU(),
        torch.nn.Conv2d(channels, 8, 3, padding=1, groups=2 if channels % 2 == 0 else 1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 5),
    ).eval()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    for composite in (EpsilonPlusFlat(), EpsilonAlpha2Beta1()):
        expected = zennit_lrp(model, composite, x, [1, 3])
        result = CRP(model, composite=composite).attribute(x, target=torch.tensor([1, 3]))
        assert close(result.input_relevance, expected), describe(composite)


RULES = {
    "Epsilon": Epsilon(),
    "ZPlus": ZPlus(),
    "AlphaBeta": AlphaBeta(2.0, 1.0),
    "Gamma": Gamma(0.25),
    "Flat": Flat(),
    "WSquare": WSquare(),
    "ZBox": ZBox(-1.0, 1.0),
}


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_batch_norm_merges_and_modified_parameters_reach_every_rule(rule):
    """Every zennit rule on a convolution and a linear layer with a BatchNorm folded in gives zennit's relevance.

    The merged parameters and each branch's modified parameters are computed by the engine from the user's
    parameters (zennit 0.5 rewrites the data, zennit 1.0 shadows the attributes: neither is used), and stay
    right after the parameters change.
    """
    torch.manual_seed(12)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 8 * 8, 10),
        torch.nn.BatchNorm1d(10),
    ).eval()
    with torch.no_grad():
        for batch_norm in (model[1], model[5]):
            batch_norm.running_mean.uniform_(-0.3, 0.3)
            batch_norm.running_var.uniform_(0.5, 2.0)
            batch_norm.weight.uniform_(0.5, 1.5)
            batch_norm.bias.uniform_(-0.2, 0.2)
    composite = LayerMapComposite([(Convolution, RULES[rule]), (Linear, RULES[rule])], [SequentialMergeBatchNorm()])
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(13)) * 2 - 1
    crp = CRP(model, composite=composite)
    for step in range(2):
        expected = zennit_lrp(model, composite, x, [4, 7])
        result = crp.attribute(x, target=torch.tensor([4, 7]))
        assert close(result.input_relevance, expected, rtol=1e-3), (rule, step)
        with torch.no_grad():
            model[1].running_var.mul_(1.5)
            model[0].weight.mul_(-0.5)


class DoubleBatchNormWeights(Canonizer):
    """A canonizer that rewrites data (doubles every BatchNorm weight) while it is applied."""

    def apply(self, root_module):
        instances = []
        for module in root_module.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                instance = self.copy()
                instance.register(module)
                instances.append(instance)
        return instances

    def register(self, module):
        self.module, self.original = module, module.weight.data
        module.weight.data = self.original * 2

    def remove(self):
        self.module.weight.data = self.original

    def copy(self):
        return DoubleBatchNormWeights()


def test_a_canonizer_that_rewrites_parameters_is_refused():
    """The engine canonizes BatchNorm layers itself; a canonizer that changes values would be silently lost."""
    model = small_cnn()
    layer_map = [(Activation, Pass()), (Convolution, ZPlus()), (Linear, Epsilon())]
    composite = LayerMapComposite(layer_map=layer_map, canonizers=[DoubleBatchNormWeights()])
    with pytest.raises(UnsupportedModelError, match="DoubleBatchNormWeights"):
        CRP(model, composite=composite).attribute(torch.rand(1, 3, 16, 16), target=2)
    assert torch.equal(model[1].weight, small_cnn()[1].weight)


def test_resnet_conditions_match_zennit_with_tensor_hook_masks():
    """On a residual net a condition masks relevance only where it passes the layer (shortcuts keep theirs)."""
    model = torchvision_model("resnet18")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    crp = CRP(model)
    conditions = {"layer2.0.conv1": [3, 9], "layer3.1.conv2": [5]}
    expected, _, _, _ = reference(model, zennit_composite(model), x, 7, conditions)
    assert close(crp.attribute(x, target=7, conditions=conditions).input_relevance, expected)


def bias_free(model):
    """EpsilonPlusFlat whose rules ignore biases, so that relevance is conserved (Eq. 7)."""
    return EpsilonPlusFlat(zero_params=["bias"], canonizers=[SequentialMergeBatchNorm()])


@pytest.mark.parametrize(("build", "shape"), [(small_cnn, (1, 3, 16, 16)), (conv1d_net, (1, 2, 32))])
def test_relevance_is_conserved_layer_by_layer(build, shape):
    model = build()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    crp = CRP(model, composite=bias_free(model))
    layers = explainable_layers(model)
    result = crp.attribute(x, target=2, record=layers)
    logit = float(result.prediction[0, 2])
    for layer in layers:
        # Eq. 10: a layer's channel relevances sum to the layer's total, which equals the explained output.
        assert float(result.relevance[layer].sum()) == pytest.approx(
            float(result.relevance_maps[layer].sum()), rel=1e-5
        )
        assert float(result.relevance[layer].sum()) == pytest.approx(logit, rel=1e-3)
    assert float(result.input_relevance.sum()) == pytest.approx(logit, rel=1e-3)


def test_record_equals_reference_relevance_and_activation():
    model = small_cnn()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    crp = CRP(model)
    result = crp.attribute(x, target=1, conditions={"6": [2, 5]}, record=["4", "6", "10"])
    _, recorded, activations, _ = reference(
        model, zennit_composite(model), x, 1, {"6": [2, 5]}, record=["4", "6", "10"], axes={"10": -1}
    )
    for layer in ("4", "6", "10"):
        assert close(result.relevance_maps[layer], recorded[layer])
        assert torch.allclose(result.activations[layer], activations[layer], atol=1e-6)
    # The recorded relevance of a conditioned layer is what its condition lets through.
    assert set(torch.nonzero(result.relevance["6"][0]).flatten().tolist()) <= {2, 5}


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "attributes": [sorted(vars(m).keys()) for m in model.modules()],
        "modules": [name for name, _ in model.named_modules()],
        "in_place": [getattr(m, "inplace", None) for m in model.modules()],
        # the very tensors: a canonizer's stand-ins must be gone (and with them their values)
        "tensors": [
            (id(t), t.data_ptr())
            for m in model.modules()
            for t in (*m._parameters.values(), *m._buffers.values())
            if t is not None
        ],
    }


def test_a_forward_set_on_a_layer_instance_is_run_and_stays():
    """A layer whose instance carries its own forward (as zennit's attribute canonizers set) runs that code."""
    model = small_cnn()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    calls = []
    own_forward = model[4].forward
    model[4].forward = lambda input: calls.append("forward") or own_forward(input)
    instance_forward = model[4].forward
    inputs = [(y, zennit_lrp(model, zennit_composite(model), y, [3])) for y in (x, x * 0.5)]
    calls.clear()
    crp = CRP(model)
    for y, expected in inputs:
        assert close(crp.attribute(y, target=3).input_relevance, expected)
    assert calls.count("forward") >= 2
    assert model[4].forward is instance_forward
    assert all("forward" not in vars(module) for i, module in enumerate(model) if i != 4)


@pytest.mark.parametrize("name", ["resnet18", "vgg16_bn"])
def test_model_is_left_exactly_as_found(name):
    model = torchvision_model(name)
    model.train()
    model.layer1[0].conv1.weight.requires_grad_(False) if name == "resnet18" else model.features[
        0
    ].weight.requires_grad_(False)
    before = snapshot(model)
    try:
        crp = CRP(model)
        x = torch.rand(1, 3, 64, 64)
        modules = dict(model.named_modules())
        layer = [n for n in crp.layer_names if isinstance(modules[n], torch.nn.Conv2d)][-1]
        crp.attribute(x, target=0, record=[layer])
        crp.attribute(torch.rand(1, 3, 64, 64), target=1)  # a second pass replays the canonization
        crp.conditional_heatmaps(x, layer, [0, 1], target=0)
        crp.region_relevance(x, layer, torch.ones(64, 64, dtype=torch.bool), target=0)
        crp.receptive_field(layer, (0, 0, 0), x)
        after = snapshot(model)
        assert after["training"] == before["training"]
        assert all(before["training"])
        assert after["requires_grad"] == before["requires_grad"]
        assert after["hooks"] == before["hooks"]
        assert after["attributes"] == before["attributes"]
        assert after["modules"] == before["modules"]
        assert after["in_place"] == before["in_place"]
        assert after["tensors"] == before["tensors"]
        for key, value in before["state"].items():
            assert torch.equal(after["state"][key], value), key
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        model.eval()


def test_results_of_a_training_mode_model_are_those_of_eval_mode():
    model = small_cnn()
    x = torch.rand(1, 3, 16, 16)
    expected = CRP(model).attribute(x, target=3).heatmap
    model.train()
    try:
        assert torch.allclose(CRP(model).attribute(x, target=3).heatmap, expected)
        assert model.training
    finally:
        model.eval()


def test_forward_cache_follows_model_updates():
    model = small_cnn()
    crp = CRP(model)
    x = torch.rand(1, 3, 16, 16)
    first = crp.attribute(x, target=3).heatmap
    with torch.no_grad():
        model[4].weight.mul_(-1)
    second = crp.attribute(x, target=3).heatmap
    assert not torch.allclose(first, second)
    assert torch.allclose(second, CRP(model).attribute(x, target=3).heatmap)


def test_forward_cache_is_keyed_by_the_input_content():
    """Equal content hits the cache (another tensor, a numpy copy); changed or permuted content does not."""
    from crp_widgets.engine.forward import ForwardPass

    model = small_cnn()
    crp = CRP(model)
    recorded = []
    original = ForwardPass.__init__

    def counting(self, *args, **kwargs):
        recorded.append(self)
        original(self, *args, **kwargs)

    # eighths add up exactly in any order: swapping two values keeps every sum the cache key is made of
    x = torch.randint(0, 9, (3, 16, 16), generator=torch.Generator().manual_seed(5)).float() / 8
    x[0, 0, 1], x[0, 0, 2] = 0.25, 0.75
    array = x.numpy().copy()
    swapped = x.clone()
    swapped[0, 0, 1], swapped[0, 0, 2] = 0.75, 0.25
    changed = array.copy()
    changed[0, 0, 0] += 0.5
    expected = {
        name: CRP(model).attribute(value, target=3).heatmap
        for name, value in [("x", x), ("swapped", swapped), ("changed", torch.from_numpy(changed))]
    }
    ForwardPass.__init__ = counting
    try:
        assert torch.allclose(crp.attribute(array, target=3).heatmap, expected["x"])
        assert len(recorded) == 1
        assert torch.allclose(crp.attribute(x.clone(), target=3).heatmap, expected["x"])
        assert len(recorded) == 1  # the same content: a cache hit
        assert torch.allclose(crp.attribute(swapped, target=3).heatmap, expected["swapped"])
        assert len(recorded) == 2
        array[0, 0, 0] += 0.5  # changed in place, where torch cannot see it
        assert torch.allclose(crp.attribute(array, target=3).heatmap, expected["changed"])
        assert len(recorded) == 3
    finally:
        ForwardPass.__init__ = original


def test_cached_canonization_and_rule_parameters_follow_every_model_change():
    """Merged BatchNorms, modified (z+) parameters and the Flat rule's pass are reused only while nothing changed."""
    model = small_cnn()
    crp = CRP(model, composite=EpsilonPlusFlat())  # the rules of zennit's reference, whatever the graph
    composite = zennit_composite(model)
    x = torch.rand(1, 3, 16, 16)

    def check(x):
        assert close(crp.attribute(x, target=3).input_relevance, zennit_lrp(model, composite, x, 3))

    check(x)
    check(x + 0.1)  # cached merges and parameters
    with torch.no_grad():
        model[1].running_mean.add_(0.3)  # BatchNorm statistics changed in place
    check(x)
    with torch.no_grad():
        model[4].weight.mul_(0.5)  # a z+ layer's weight changed in place
    check(x)
    model[4].weight = torch.nn.Parameter(torch.randn_like(model[4].weight))  # a new weight
    check(x)
    check(torch.rand(2, 3, 24, 24))  # another input shape for the Flat rule's cached pass
    check(x * 0.5)  # and back to the first: the Flat rule's kept state follows the input's shape
    model[5] = torch.nn.Tanh()  # a module replaced: the pass's layout (modules, rules, forwards) is found anew
    check(x)
    model[5] = torch.nn.LocalResponseNorm(2)  # a module no rule explains
    with pytest.raises(UnsupportedModelError, match="LocalResponseNorm"):
        crp.attribute(x, target=3)
    model[5] = torch.nn.ReLU()
    check(x)
    model[1] = torch.nn.Identity()  # the BatchNorm removed: no merge
    composite = EpsilonPlusFlat()
    check(x)


def test_a_freed_module_never_lends_its_identity_to_a_cached_pass():
    """Modules replaced one after another: a new one may take the memory of a freed one, but is never taken for it.

    The model's state (the forward cache's key) keeps the modules and tensors it names alive.
    """
    model = small_cnn()
    state = ModelState(model)
    module, weight = weakref.ref(model[5]), weakref.ref(model[4].weight)
    model[5], model[4].weight = torch.nn.Tanh(), torch.nn.Parameter(model[4].weight.detach() * 2)
    gc.collect()
    assert module() is not None  # held by the state that names it
    assert weight() is not None
    assert ModelState(model) != state
    del state
    gc.collect()
    assert module() is None
    assert weight() is None
    crp = CRP(model, composite=EpsilonPlusFlat())  # the rules of zennit's reference, whatever the graph
    composite = zennit_composite(model)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    for kind in (torch.nn.Tanh, torch.nn.ReLU, torch.nn.Sigmoid, torch.nn.ReLU, torch.nn.Tanh):
        model[5] = kind()  # the module before it is freed once a pass no longer needs it
        for sample in (x, x.flip(-1)):
            relevance = crp.attribute(sample, target=3).input_relevance
            assert close(relevance, zennit_lrp(model, composite, sample, 3)), kind.__name__


def test_a_recorded_forward_pass_is_freed_by_reference_counting():
    """No reference cycles: a graph is freed as soon as it is dropped, not at the next garbage collection."""
    import gc
    import weakref

    model = small_cnn()
    crp = CRP(model)
    gc.disable()
    try:
        forward = crp.record(torch.rand(2, 3, 16, 16), crp.layer_names)
        forward.backward(forward.output, forward.output.detach(), [forward.tap("6").site])
        tensors = [forward.input, forward.output] + [tap.site for tap in forward.taps.values()]
        refs = [weakref.ref(t) for t in tensors] + [weakref.ref(tap) for tap in forward.taps.values()]
        del forward, tensors
        assert all(ref() is None for ref in refs)
    finally:
        gc.enable()
