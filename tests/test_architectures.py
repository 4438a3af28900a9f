"""Faithful CRP on every torchvision classification family, on hand-written blocks, and on a ViT against CP-LRP.

The table of supported architectures in ``docs/architectures.md`` is generated from these tests: run them with
``CRP_WRITE_TABLE=1`` to rewrite it; without, the last test fails when the table does not say what the tests find.
"""

import os
import pathlib

import pytest
import torch
from architectures import FAMILIES, build, family
from torch.nn import functional

from crp_widgets.engine import CRP
from crp_widgets.engine.composites import DefaultComposite
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.channels import default_layer

TABLE = pathlib.Path(__file__).parent.parent / "docs" / "architectures.md"
FOUND = {}  # family -> (model, input size, heatmap sum / logit, layer)


def bias_free():
    return DefaultComposite(zero_params=["bias"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_conserves_ranks_channels_and_scans(name, tmp_path):
    model, size = build(name)
    crp = CRP(model, composite=bias_free())
    x = torch.rand(3, size, size, generator=torch.Generator().manual_seed(5))
    logits = crp.predict(x)
    target = int(logits.argmax())
    ratio = float(crp.attribute(x, target=target).heatmap.sum()) / float(logits[target])
    assert ratio == pytest.approx(1.0, abs=1e-2), name
    layer = default_layer(crp)
    ranking = crp.channel_relevance(x, layer, target)
    assert bool(torch.isfinite(ranking.relevance).all())
    assert float(ranking.relevance.abs().sum()) > 0
    data = torch.utils.data.TensorDataset(
        torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(6)), torch.tensor([0, 1, 2, 3])
    )
    store = scan(crp, data, [layer], tmp_path, k=2, batch_size=4, progress=False)
    assert len(store.references(layer, int(ranking.order[0]), k=2)) == 2
    FOUND[name] = (FAMILIES[name][0], size, ratio, layer)


def test_every_classification_model_of_torchvision_has_a_family_here():
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    assert {family(name) for name in names} == set(FAMILIES)


class Residual(torch.nn.Module):
    """A user's own residual block: ``relu(conv(x) + x)``."""

    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


class SqueezeExcite(torch.nn.Module):
    """A user's own squeeze-and-excitation gate: ``x * sigmoid(fc(mean(x)))``."""

    def __init__(self, channels):
        super().__init__()
        self.fc = torch.nn.Linear(channels, channels, bias=False)

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean((2, 3))))
        return x * gate[:, :, None, None]


class SelfAttention(torch.nn.Module):
    """A user's own attention over the positions of a feature map: ``softmax(q k^T / sqrt(d)) v``."""

    def __init__(self, channels):
        super().__init__()
        self.qkv = torch.nn.Linear(channels, 3 * channels, bias=False)
        self.out = torch.nn.Linear(channels, channels, bias=False)

    def forward(self, x):
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        weights = (q @ k.transpose(-2, -1) / channels**0.5).softmax(dim=-1)
        mixed = self.out(weights @ v) + tokens
        return mixed.transpose(1, 2).reshape(batch, channels, height, width)


@pytest.mark.parametrize("block", [Residual, SqueezeExcite, SelfAttention])
def test_hand_written_blocks_conserve_without_a_canonizer(block):
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.ReLU(),
        block(8),
        block(8),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4, bias=False),
    ).eval()
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(2))
    crp = CRP(model, composite=bias_free())
    logits = crp.predict(x)
    for target in range(4):
        heatmap = crp.attribute(x, target=target).heatmap
        assert float(heatmap.sum()) == pytest.approx(float(logits[target]), rel=1e-3, abs=1e-6), block.__name__


class DataDependent(torch.nn.Module):
    """A model torch.fx cannot trace: Python control flow on the input's values around a whole network."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if x.sum() > -1e9:
            return self.model(x)
        return -self.model(x)


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_a_model_that_cannot_be_traced_runs_module_by_module(name):
    """The module-level path gives the traced graph's relevance (BatchNorm as an affine layer instead of merged)."""
    model, size = build(name)
    x = torch.rand(3, size, size, generator=torch.Generator().manual_seed(5))
    traced, hooked = CRP(model, composite=bias_free()), CRP(DataDependent(model), composite=bias_free())
    target = int(traced.predict(x).argmax())
    expected = traced.attribute(x, target=target).heatmap
    found = hooked.attribute(x, target=target, record=["model.fc" if name == "resnet" else "model.heads"])
    assert type(hooked.context.graph()).__name__ == "HookedGraph"
    assert "cannot be traced" in hooked.context.graph().reason
    assert float(found.heatmap.sum()) == pytest.approx(float(hooked.predict(x)[target]), rel=1e-2)
    assert float((found.heatmap - expected).abs().max()) <= 1e-3 * float(expected.abs().max())
    layer = "model.layer4.1" if name == "resnet" else "model.encoder.layers.encoder_layer_11"
    heatmaps = hooked.conditional_heatmaps(x, layer, [0, 1], target=target)
    single = hooked.attribute(x, target=target, conditions={layer: [1]}).heatmap
    assert torch.allclose(heatmaps[1], single, atol=1e-6 * float(single.abs().max()) + 1e-12)


def _cp_lrp_by_gradient_times_input(model, x, target):
    """An independent CP-LRP of a torchvision ViT, as LXT's torchvision recipe computes it (Achtibat et al. 2024).

    Gradient times input on a patched copy: GELU by the identity rule (its gradient replaced by output / input),
    LayerNorm with its standard deviation detached, attention with its queries and keys detached (the weights held
    constant, relevance through the values); linear layers keep their gradient (LRP-0). ``test_lxt.py`` compares
    with LXT itself.
    """
    import copy

    model = copy.deepcopy(model)

    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            output = functional.gelu(input)
            ctx.save_for_backward(output / (input + 1e-10))
            return output

        @staticmethod
        def backward(ctx, grad):
            return ctx.saved_tensors[0] * grad

    def layer_norm(module):
        def forward(x):
            mean = x.mean(-1, keepdim=True)
            std = ((x - mean) ** 2).mean(-1, keepdim=True).add(module.eps).sqrt()
            return (x - mean) / std.detach() * module.weight + module.bias

        return forward

    def attention(module):
        original = module.forward

        def forward(query, key, value, **kwargs):
            return original(query.detach(), key.detach(), value, **kwargs)

        return forward

    for module in model.modules():
        if isinstance(module, torch.nn.GELU):
            module.forward = Identity.apply
        elif isinstance(module, torch.nn.LayerNorm):
            module.forward = layer_norm(module)
        elif isinstance(module, torch.nn.MultiheadAttention):
            module.forward = attention(module)
    x = x[None].clone().requires_grad_()
    output = model(x)[0, target]
    (gradient,) = torch.autograd.grad(output, x)
    return (x * gradient).detach()[0]


def test_vit_equals_an_independent_cp_lrp():
    """With the epsilon rule on every linear layer, the engine's relevance is CP-LRP's (Ali et al. 2022)."""
    import torchvision
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon
    from zennit.types import Convolution, Linear

    torch.manual_seed(3)
    model = torchvision.models.vit_b_16(weights=None, image_size=64).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    composite = LayerMapComposite([(Convolution, Epsilon(1e-9)), (Linear, Epsilon(1e-9))])
    crp = CRP(model, composite=composite, epsilon=1e-9)
    target = int(crp.predict(x).argmax())
    ours = crp.attribute(x, target=target).input_relevance
    expected = _cp_lrp_by_gradient_times_input(model, x, target)
    scale = float(expected.abs().max())
    assert float((ours - expected).abs().max()) <= 1e-3 * scale
    assert float(ours.sum()) == pytest.approx(float(expected.sum()), rel=1e-3)


def _table():
    rows = [
        "| family | model tested | input | heatmap sum / logit | default layer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(FOUND):
        model, size, ratio, layer = FOUND[name]
        rows.append(f"| {name} | `{model}` | {size}x{size} | {ratio:.3f} | `{layer}` |")
    header = TABLE.read_text().split("<!-- table -->")[0] if TABLE.exists() else "# Supported architectures\n\n"
    return header + "<!-- table -->\n" + "\n".join(rows) + "\n"


def test_the_table_of_supported_architectures_says_what_the_tests_find():
    if set(FOUND) != set(FAMILIES):
        pytest.skip("run with every family to check the table")
    table = _table()
    if os.environ.get("CRP_WRITE_TABLE"):
        TABLE.write_text(table)
    assert TABLE.read_text() == table, "rerun tests/test_architectures.py with CRP_WRITE_TABLE=1 to update the table"


def test_attnlrp_passes_relevance_through_the_softmax():
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1) as a rule node, and on a ViT besides CP-LRP."""
    import torchvision

    from crp_widgets.engine.rules import SoftmaxRule, connect

    scores = torch.randn(2, 5, generator=torch.Generator().manual_seed(7)).requires_grad_()
    relevance = torch.randn(2, 5, generator=torch.Generator().manual_seed(8))
    (found,) = torch.autograd.grad(connect(SoftmaxRule(-1), scores), scores, relevance)
    weights = scores.detach().softmax(-1)
    assert torch.allclose(found, scores.detach() * (relevance - weights * relevance.sum(-1, keepdim=True)))
    torch.manual_seed(3)
    model = torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=4).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.05)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    cp = CRP(model).attribute(x, target=1).heatmap
    attn = CRP(model, attention="attnlrp").attribute(x, target=1).heatmap
    assert bool(torch.isfinite(attn).all())
    assert not torch.allclose(attn, cp, rtol=1e-3, atol=1e-9)
    with pytest.raises(Exception, match="attention must be 'cp'"):
        CRP(model, attention="softmax")
