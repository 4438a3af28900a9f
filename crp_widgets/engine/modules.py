"""A rule for every leaf module of a traced model (the ``torch.nn`` layers the tracer does not enter).

Layers with parameters take the rule the composite maps them to (a zennit hook, evaluated on the layer's canonized
parameters by :class:`~crp_widgets.engine.rules.ZennitRule`); a layer the composite leaves alone keeps its plain
gradient, as in zennit. Modules no composite maps get the rules of :mod:`crp_widgets.engine.ops`: activations the
identity rule, normalisation layers their statistics held constant, attention CP-LRP, average pooling and unmerged
BatchNorm the epsilon rule, modules that move values their plain gradient. Every module computes its eval-mode
output, whatever its training flag.
"""

import math

import torch
from torch.nn import functional
from zennit.core import BasicHook, Hook
from zennit.rules import Pass

from . import ops
from .errors import UnsupportedModelError
from .layers import Merged, is_batch_norm, layer_of
from .rules import HookRule, Identity, Linear, ZennitRule, connect

_MOVERS = (
    torch.nn.Flatten,
    torch.nn.Unflatten,
    torch.nn.Identity,
    torch.nn.ChannelShuffle,
    torch.nn.PixelShuffle,
    torch.nn.PixelUnshuffle,
    torch.nn.ZeroPad1d,
    torch.nn.ZeroPad2d,
    torch.nn.ZeroPad3d,
    torch.nn.ConstantPad1d,
    torch.nn.ConstantPad2d,
    torch.nn.ConstantPad3d,
    torch.nn.ReflectionPad1d,
    torch.nn.ReflectionPad2d,
    torch.nn.ReflectionPad3d,
    torch.nn.ReplicationPad1d,
    torch.nn.ReplicationPad2d,
    torch.nn.ReplicationPad3d,
    torch.nn.CircularPad1d,
    torch.nn.CircularPad2d,
    torch.nn.CircularPad3d,
    torch.nn.Fold,
    torch.nn.Unfold,
)
_DROPOUTS = (
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)
_MAX_POOLS = {
    torch.nn.MaxPool1d: "max_pool1d",
    torch.nn.MaxPool2d: "max_pool2d",
    torch.nn.MaxPool3d: "max_pool3d",
    torch.nn.AdaptiveMaxPool1d: "adaptive_max_pool1d",
    torch.nn.AdaptiveMaxPool2d: "adaptive_max_pool2d",
    torch.nn.AdaptiveMaxPool3d: "adaptive_max_pool3d",
}
_AVERAGE_POOLS = (
    torch.nn.AvgPool1d,
    torch.nn.AvgPool2d,
    torch.nn.AvgPool3d,
    torch.nn.AdaptiveAvgPool1d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveAvgPool3d,
)
_SOFTMAXES = (torch.nn.Softmax, torch.nn.LogSoftmax, torch.nn.Softmin, torch.nn.Softmax2d)
_UNSUPPORTED = (
    (torch.nn.RNNBase, "recurrent layers carry state across time steps"),
    ((torch.nn.Embedding, torch.nn.EmbeddingBag), "it maps integer indices to vectors: relevance cannot reach them"),
    (
        (torch.nn.LocalResponseNorm, torch.nn.CrossMapLRN2d),
        "it divides activations by their neighbours' energy, which no rule here redistributes",
    ),
)


class Ruled(ops.Handler):
    """A layer with parameters and the composite's rule (``template``; ``None``: the plain gradient)."""

    def __init__(self, name, layer, template):
        super().__init__(name, layer.function)
        self.layer, self.template = layer, template

    def __call__(self, run, args, kwargs):
        """The layer's output, connected by its rule."""
        input = args[0]
        if not (run.explains and ops.data(input) and self.template is not None):
            return self.layer.function(input, run.parameters(self.layer, None, None))
        return connect(self.rule(run), input)

    def rule(self, run):
        """The rule of this layer for one pass (it holds the context, not the run: no reference cycle)."""
        context, layer = run.context, self.layer

        def parameters(index, modifier):
            return context.parameters(layer, index, modifier)

        if isinstance(self.template, BasicHook):
            return ZennitRule(self.template, self.layer, parameters)
        if type(self.template) is Pass:
            return Identity(lambda x: self.layer.function(x, parameters(None, None)))
        return HookRule(self.template.copy(), self.layer, parameters)


class Affine(ops.Handler):
    """A BatchNorm that no linear layer can absorb (e.g. after a concatenation): an affine layer, epsilon rule."""

    def __init__(self, name, layer):
        super().__init__(name, layer.function)
        self.layer = layer

    def __call__(self, run, args, kwargs):
        """Normalise by the running statistics; connect by the epsilon rule."""
        parameters = run.parameters(self.layer, None, None)
        if not (run.explains and ops.data(args[0])):
            return self.layer.function(args[0], parameters)
        if run.mode == "flat":
            return connect(Identity(lambda x: self.layer.function(x, parameters)), args[0])
        return connect(Linear(lambda x: self.layer.function(x, parameters), None, run.epsilon), args[0])


def _activation(module):
    """The activation's eval-mode function, on a copy of its input if the module works in place."""
    if isinstance(module, torch.nn.RReLU):
        return lambda x: functional.rrelu(x, module.lower, module.upper, training=False)
    if getattr(module, "inplace", False):
        return lambda x: module(x.clone())
    return module


def _norm(module):
    """The linearised normalisation of a LayerNorm, GroupNorm, RMSNorm or InstanceNorm module, or ``None``."""
    weight = None if getattr(module, "weight", None) is None else module.weight.detach()
    bias = None if getattr(module, "bias", None) is None else module.bias.detach()
    if isinstance(module, torch.nn.LayerNorm):
        return lambda x: ops._layer_norm(x, module.normalized_shape, weight, bias, module.eps)
    if isinstance(module, torch.nn.GroupNorm):
        return lambda x: ops._group_norm(x, module.num_groups, weight, bias, module.eps)
    if hasattr(torch.nn, "RMSNorm") and isinstance(module, torch.nn.RMSNorm):
        return lambda x: ops._rms_norm(x, module.normalized_shape, weight, module.eps)
    if isinstance(module, (torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)):
        stats = module.track_running_stats
        mean, var = (module.running_mean, module.running_var) if stats else (None, None)
        return lambda x: ops._instance_norm(x, mean, var, weight, bias, not stats, 0.0, module.eps)
    return None


class NormModule(ops.Handler):
    """A normalisation module: its statistics held constant, the rest by the epsilon rule."""

    def __init__(self, name, module, linearized):
        super().__init__(name, module)
        self.linearized = linearized

    def __call__(self, run, args, kwargs):
        """Normalise; connect by the epsilon rule on the linearised normalisation."""
        if not (run.explains and ops.data(args[0])):
            return self.function(*args, **kwargs)
        if run.mode == "flat":
            return connect(Identity(self.function), args[0])
        return connect(Linear(self.linearized, None, run.epsilon), args[0])


class MultiheadAttention(ops.Handler):
    """``nn.MultiheadAttention`` in eval mode, computed by the rules of its operations (CP-LRP by default).

    The input projections and the attention-weighted sum of the values follow the epsilon rule; the attention
    weights are held constant (Ali et al. 2022), so relevance flows through the values only; the output projection
    takes the composite's rule for its ``out_proj`` layer.
    """

    def __init__(self, name, module, out_proj):
        super().__init__(name, module)
        self.module, self.out_proj = module, out_proj
        if module.bias_k is not None or module.add_zero_attn:
            self.unsupported = "its bias_k/bias_v or add_zero_attn options"
        else:
            self.unsupported = None

    def __call__(self, run, args, kwargs):
        """Attend as ``nn.MultiheadAttention.forward`` does in eval mode."""
        if self.unsupported:
            raise UnsupportedModelError(f"attention module {self.name!r} uses {self.unsupported}, which no rule covers")
        return self.attend(run, *args, **kwargs)

    def attend(
        self,
        run,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        """The attention output and (if ``need_weights``) the weights averaged over the heads."""
        module = self.module
        if not module.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._projections(run, query, key, value)
        batch, length, width = query.shape
        heads = module.num_heads
        split = [(t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2)) for t in (q, k, v)]
        q, k, v = split
        scores = run.call(torch.matmul, q / math.sqrt(q.shape[-1]), k.transpose(-2, -1))
        scores = _masked(scores, attn_mask, key_padding_mask, is_causal, batch, heads)
        weights = run.call(torch.softmax, scores, dim=-1)
        attended = run.call(torch.matmul, weights, v).transpose(1, 2).reshape(batch, length, width)
        output = self.out_proj(run, (attended,), {})
        if not module.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        weights = weights.detach()
        return output, (weights.mean(dim=1) if average_attn_weights else weights)

    def _projections(self, run, query, key, value):
        module = self.module
        width = module.embed_dim
        if module.in_proj_weight is not None:
            weights = module.in_proj_weight.detach().split(width)
        else:
            weights = [w.detach() for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)]
        biases = [None] * 3 if module.in_proj_bias is None else module.in_proj_bias.detach().split(width)
        return [
            run.call(functional.linear, x, weight, bias)
            for x, weight, bias in zip((query, key, value), weights, biases)
        ]


def _masked(scores, attn_mask, key_padding_mask, is_causal, batch, heads):
    """Attention scores with the masks of ``nn.MultiheadAttention`` applied (``-inf`` where masked)."""
    if attn_mask is None and is_causal:
        length, source = scores.shape[-2:]
        attn_mask = ~torch.ones(length, source, dtype=torch.bool, device=scores.device).tril()
    for mask in (attn_mask, key_padding_mask):
        if mask is None:
            continue
        if mask is key_padding_mask:
            mask = mask.reshape(batch, 1, 1, -1)
        elif mask.ndim == 3:
            mask = mask.reshape(batch, heads, *mask.shape[-2:])
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores


def module_handler(name, module, template, merged=None, out_proj=None):
    """The handler of a leaf module named ``name``.

    ``template``: the composite's rule for it; ``merged``: a BatchNorm folded into it; ``out_proj``: for an
    ``nn.MultiheadAttention``, the handler of its output projection.
    """
    if isinstance(module, torch.nn.MultiheadAttention):
        return MultiheadAttention(name, module, out_proj)
    for kinds, reason in _UNSUPPORTED:
        if isinstance(module, kinds):
            return ops.Unsupported(f"module {name!r} ({type(module).__name__})", module, reason)
    layer = layer_of(name, module)
    if merged is not None:
        return Ruled(name, Merged(layer, merged), template)
    if template is not None and type(template) is not Pass and isinstance(template, Hook):
        return Ruled(name, layer, template)
    return _default_handler(name, module, layer, template)


def _default_handler(name, module, layer, template):
    """The handler of a module the composite maps to no rule (or to ``Pass``)."""
    where = f"module {name!r} ({type(module).__name__})"
    if is_batch_norm(module):
        return Affine(name, layer)
    if any(True for _ in module.parameters(recurse=False)) and type(module).__module__.startswith("torch.nn.modules"):
        linearized = _norm(module)
        if linearized is not None:
            return NormModule(where, module, linearized)
        if isinstance(module, (torch.nn.PReLU,)):
            return ops.Activation(where, module)
        return Ruled(name, layer, template)  # a layer without a rule: its plain gradient, as in zennit
    linearized = _norm(module)
    if linearized is not None:
        return NormModule(where, module, linearized)
    if isinstance(module, _DROPOUTS):
        return ops.Plain(where, lambda x: x)
    if isinstance(module, _MOVERS):
        return ops.Plain(where, module)
    if type(module) in _MAX_POOLS:
        return _max_pool(where, module)
    if isinstance(module, _AVERAGE_POOLS):
        return ops.LinearOperation(where, module)
    if isinstance(module, (torch.nn.Upsample, torch.nn.UpsamplingNearest2d, torch.nn.UpsamplingBilinear2d)):
        nearest = module.mode in ("nearest", "nearest-exact")
        return ops.Plain(where, module) if nearest else ops.LinearOperation(where, module)
    if isinstance(module, _SOFTMAXES):
        kind = "softmax" if type(module) is torch.nn.Softmax else type(module).__name__.lower()
        return ops.Softmax(where, module, kind, getattr(module, "dim", None))
    if type(module) is torch.nn.ReLU:
        return ops.Relu(where, module)
    if type(module).__module__ == "torch.nn.modules.activation":
        return ops.Activation(where, _activation(module))
    return ops.Unsupported(where, module, "no LRP rule is known for this module type")


def _max_pool(where, module):
    kind = _MAX_POOLS[type(module)]
    if kind.startswith("adaptive"):
        connections = ops.pool_connections(kind, output_size=module.output_size)
    else:
        dilation = module.dilation if isinstance(module.dilation, (tuple, list)) else (module.dilation,)
        if any(d != 1 for d in dilation):
            connections = None
        else:
            connections = ops.pool_connections(
                kind, module.kernel_size, module.stride, module.padding, module.ceil_mode
            )
    return ops.Pool(where, module, connections)
