"""Every bad input gets a specific error naming the problem and what is accepted; the engine keeps working."""

import re

import pytest
import torch
from torch.nn import functional
from zennit.composites import EpsilonPlusFlat
from zoo import small_cnn

from crp_widgets.engine import CRP, CRPError, ModelForwardError, UnknownLayerError, UnsupportedModelError


@pytest.fixture(scope="module")
def crp():
    return CRP(small_cnn())


@pytest.fixture
def x():
    return torch.rand(3, 16, 16)


def test_unknown_layer_lists_the_valid_ones(crp, x):
    with pytest.raises(UnknownLayerError) as error:
        crp.attribute(x, target=0, conditions={"66": [1]})
    message = str(error.value)
    assert "unknown layer '66'" in message
    assert "Did you mean '6'" in message
    assert "Valid layers: '0', '4', '6', '10', '12'" in message
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'features\.99'"):
        crp.conditional_heatmaps(x, "features.99", [0], target=0)
    with pytest.raises(UnknownLayerError):
        crp.attribute(x, target=0, record=["nope"])


def test_channel_out_of_range(crp, x):
    with pytest.raises(
        CRPError, match=re.escape("channel 16 is out of range for layer '6', which has 16 channels (valid: 0 to 15)")
    ):
        crp.attribute(x, target=0, conditions={"6": [2, 16]})
    with pytest.raises(CRPError, match="channel -1 is out of range"):
        crp.conditional_heatmaps(x, "6", [-1], target=0)
    with pytest.raises(CRPError, match="not an integer index"):
        crp.conditional_heatmaps(x, "6", [1.5], target=0)


def test_class_index_out_of_range(crp, x):
    with pytest.raises(
        CRPError, match=re.escape("class index 10 is out of range: the model has 10 outputs (valid: 0 to 9)")
    ):
        crp.attribute(x, target=10)
    with pytest.raises(CRPError, match="class index -2 is out of range"):
        crp.channel_relevance(x, "6", target=-2)
    with pytest.raises(CRPError, match="expected 2 classes, got 3"):
        crp.attribute(torch.rand(2, 3, 16, 16), target=torch.tensor([1, 2, 3]))
    with pytest.raises(CRPError, match="empty list"):
        crp.attribute(x, target=[])


def test_input_rank_and_channels(crp):
    with pytest.raises(
        CRPError,
        match=re.escape(
            "rank 2), but the model's first layer '0' (Conv2d) takes [C, H, W] for one sample or "
            "[B, C, H, W] for a batch, with C = 3"
        ),
    ):
        crp.attribute(torch.rand(16, 16), target=0)
    with pytest.raises(CRPError, match=r"the input has 1 channels .* takes 3"):
        crp.attribute(torch.rand(1, 16, 16), target=0)
    with pytest.raises(CRPError, match="holds no sample"):
        crp.attribute(torch.rand(0, 3, 16, 16), target=0)
    with pytest.raises(CRPError, match=r"must be a torch\.Tensor or a numpy array, got list"):
        crp.attribute([[1.0]], target=0)


def test_input_dtype_and_device(crp):
    with pytest.raises(CRPError, match=re.escape("dtype torch.uint8, but the model computes in torch.float32")):
        crp.attribute(torch.zeros(3, 16, 16, dtype=torch.uint8), target=0)
    with pytest.raises(CRPError, match=re.escape("dtype torch.float64, but the model's parameters are torch.float32")):
        crp.attribute(torch.rand(3, 16, 16, dtype=torch.float64), target=0)
    with pytest.raises(CRPError, match="the input is on device meta, but the model's parameters are on cpu"):
        crp.attribute(torch.rand(3, 16, 16, device="meta"), target=0)


def test_nan_and_inf_inputs(crp, x):
    x[0, 0, 0] = float("nan")
    x[1, 2, 3] = float("inf")
    x[1, 2, 4] = -float("inf")
    with pytest.raises(CRPError, match="contains 1 NaN and 2 infinite values"):
        crp.attribute(x, target=0)


def test_empty_and_malformed_conditions(crp, x):
    with pytest.raises(CRPError, match="the condition for layer '6' selects no channels"):
        crp.attribute(x, target=0, conditions={"6": []})
    with pytest.raises(CRPError, match="conditions must be a dict"):
        crp.attribute(x, target=0, conditions=[("6", 1)])
    with pytest.raises(CRPError, match="pass those as `channels`"):
        crp.conditional_heatmaps(x, "6", [1], target=0, conditions={"6": [2]})


def test_misused_analyses(crp, x):
    with pytest.raises(CRPError, match="explains one sample; got a batch of 2"):
        crp.conditional_heatmaps(torch.rand(2, 3, 16, 16), "6", [0], target=0)
    with pytest.raises(CRPError, match="must come before '4' in the forward pass"):
        crp.subconcepts(x, "4", 0, "6", target=0)
    with pytest.raises(
        CRPError, match=re.escape("the region mask has shape (8, 8), but the input's spatial shape is (16, 16)")
    ):
        crp.region_relevance(x, "6", torch.ones(8, 8, dtype=torch.bool), target=0)
    with pytest.raises(CRPError, match="the region mask is empty"):
        crp.region_relevance(x, "6", torch.zeros(16, 16, dtype=torch.bool), target=0)
    with pytest.raises(CRPError, match=r"neuron \(0, 99, 0\) is not an index into the output of layer '6'"):
        crp.receptive_field("6", (0, 99, 0), x)
    with pytest.raises(CRPError, match="conditions on layers above it"):
        crp.channel_relevance(x, "4", target=None, conditions={"6": [1]})


class LayerNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.LayerNorm([4, 14, 14])
        self.head = torch.nn.Linear(4 * 14 * 14, 2)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).flatten(1))


class SoftmaxNet(torch.nn.Sequential):
    def __init__(self):
        super().__init__(
            torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2), torch.nn.Softmax(1)
        )


class FunctionalNet(torch.nn.Module):
    def __init__(self, activation):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 14 * 14, 2)
        self.activation = activation

    def forward(self, x):
        return self.head(self.activation(self.conv(x)).flatten(1))


class RaisingNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)
        raise ValueError("this model only works on Tuesdays")


class EmbeddingNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        index = self.conv(x).mean((2, 3)).argmax(1)
        return self.head(self.embed(index) * self.conv(x).mean((2, 3)))


class DataDependentNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        hidden = self.conv(x)
        if hidden.sum() > 0:  # Python control flow on the input's values
            hidden = -hidden
        return self.head(hidden.mean((2, 3)))


def test_what_the_rules_cannot_explain_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match=r"module '3' \(Softmax\)|ends with a softmax.*without its final"):
        CRP(SoftmaxNet()).attribute(torch.rand(3, 16, 16), target=0)
    model = LayerNormNet()
    model.norm = torch.nn.LocalResponseNorm(2)
    with pytest.raises(UnsupportedModelError, match=r"module 'norm' \(LocalResponseNorm\) cannot be explained"):
        CRP(model).attribute(torch.rand(3, 16, 16), target=0)
    model = DataDependentNet()
    original = model.forward
    model.forward = lambda x: original(x).cumprod(-1)  # an operation without a rule, in code fx cannot trace
    with pytest.raises(UnsupportedModelError, match=r"`cumprod`.*module by module: .*cannot be traced.*test_engine_e"):
        CRP(model).attribute(torch.rand(3, 16, 16), target=0)


def test_functional_operations_and_normalisations_conserve_relevance():
    """A functional GELU (identity rule), a LayerNorm (statistics held constant) and a residual addition outside any
    module (split in proportion to the summands) keep the relevance of a bias-free net."""

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.norm = torch.nn.LayerNorm([3, 16, 16], bias=False)
            self.head = torch.nn.Linear(3 * 16 * 16, 2, bias=False)

        def forward(self, x):
            return self.head(self.norm(functional.gelu(self.conv(x)) + x).flatten(1))

    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.rand(3, 16, 16)
    composite = EpsilonPlusFlat(zero_params=["bias"])
    result = CRP(model, composite=composite).attribute(x, target=1)
    assert float(result.heatmap.sum()) == pytest.approx(float(result.prediction[1]), rel=1e-3)


def test_a_model_raising_in_forward(x):
    model = RaisingNet()
    with pytest.raises(
        ModelForwardError,
        match=r"the model raised ValueError in its forward pass for an input of shape \(1, 3, 16, 16\) "
        r"\(torch\.float32\): this model only works on Tuesdays",
    ):
        CRP(model).attribute(x, target=0)


def test_the_engine_keeps_working_after_errors(crp, x):
    for bad in ({"6": [99]}, {"nope": [0]}, {"6": []}):
        with pytest.raises(CRPError):
            crp.attribute(x, target=0, conditions=bad)
    result = crp.attribute(x, target=0, conditions={"6": [1]})
    assert torch.isfinite(result.heatmap).all()


def test_in_place_forward_code_keeps_the_recorded_activations():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Linear(4 * 14 * 14, 2)

        def forward(self, x):
            hidden = self.conv(x)
            hidden.relu_()  # overwrites the conv layer's output
            return self.head(hidden.flatten(1))

    model = InPlace()
    x = torch.rand(3, 16, 16)
    crp = CRP(model)
    for _ in range(2):
        result = crp.attribute(x * (1 + _), target=0, record=["conv"])
        x = x * (1 + _)
        expected = model.conv(x[None])[0].detach()
        assert float(expected.min()) < 0
        assert torch.allclose(result.activations["conv"], expected)
