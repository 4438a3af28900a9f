"""A rule for every function a model calls (``torch.*``, ``torch.nn.functional.*``, tensor methods, operators).

:func:`handler` maps a called function to a :class:`Handler`; ``handler(run, args, kwargs)`` returns the call's
output. In an explaining run (``run.explains``) the output of an operation that needs a rule is connected to its
data inputs, the tensors that require gradients (activations; parameters and constants never do), by that rule:

- operations that only move values (reshape, permute, concatenation, split, padding, max pooling, dropout at
  evaluation) keep their plain gradient, which routes relevance exactly;
- additions, means, average pooling, products with a constant and linear maps: the epsilon rule
  (:class:`~crp_widgets.engine.rules.Linear`; zennit's ``Norm`` on ``Sum`` for residual additions);
- a product of two activations: each factor gets an equal share (Achtibat et al. 2024, "AttnLRP", Prop. 3.3), unless
  one is a gate (a sigmoid or softmax output), which is held constant (Arras et al. 2017);
- element-wise non-linearities (GELU, SiLU, Hardswish, ...): the identity rule (AttnLRP, Sec. 3);
- LayerNorm, GroupNorm, RMSNorm and functional BatchNorm: the standard deviation held constant, the rest by the
  epsilon rule (Ali et al. 2022, "XAI for Transformers"; AttnLRP);
- softmax: its output held constant (CP-LRP, Ali et al. 2022), so that attention passes relevance through its values.

A Python function the tracer kept whole (e.g. torchvision's Swin attention) runs under a torch function mode that
applies the same rules to every call inside it. Anything else is refused with :class:`UnsupportedModelError`.
"""

import inspect
import math
import operator

import torch
from torch.overrides import TorchFunctionMode

from .errors import UnsupportedModelError
from .rules import Identity, Linear, SoftmaxRule, Spread, connect

_STRUCTURAL = {
    "getitem", "getattr", "size", "dim", "numel", "shape", "view", "view_as", "reshape", "reshape_as", "flatten",
    "unflatten", "permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "contiguous", "clone",
    "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "tile", "cat", "concat", "concatenate", "stack", "hstack",
    "vstack", "split", "split_with_sizes", "chunk", "tensor_split", "unbind", "narrow", "select", "index_select",
    "gather", "take_along_dim", "roll", "flip", "fliplr", "flipud", "rot90", "pad", "channel_shuffle",
    "native_channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "to", "type", "float", "double", "half", "bfloat16",
    "type_as", "cpu", "cuda", "detach", "masked_fill", "where", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "stochastic_depth", "_assert", "amax", "amin", "max", "min", "argmax",
    "argmin", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like", "full_like",
    "empty_like", "eq", "ne", "lt", "gt", "le", "ge", "and_", "or_", "not_", "floordiv", "mod", "truth", "is_",
    "is_not", "contains", "len", "arange", "zeros", "ones", "full", "tensor", "as_tensor", "mT", "T", "unfold", "fold",
    "_patch_merging_pad", "_get_relative_position_bias", "get", "__get__", "masked_select", "index", "item", "tolist",
    "requires_grad_", "is_floating_point", "is_complex", "dtype", "device", "ndim", "ndimension", "numpy", "sort",
    "topk", "is_contiguous",
}  # fmt: skip
_ADDITIVE = {"add", "sub", "rsub", "radd", "neg", "pos", "subtract"}
_PRODUCTS = {"mul", "rmul", "multiply", "matmul", "rmatmul", "mm", "bmm", "einsum", "linear", "bilinear"}
_QUOTIENTS = {"div", "truediv", "divide", "true_divide"}
_LINEAR = {
    "sum", "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "cumsum", "upsample_bilinear", "trace",
}  # fmt: skip
_ACTIVATIONS = {
    "relu6", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "tanh", "elu", "selu", "celu",
    "leaky_relu", "softplus", "softsign", "hardtanh", "clamp", "clip", "clamp_min", "clamp_max", "prelu", "rrelu",
    "logsigmoid", "tanhshrink", "hardshrink", "softshrink", "threshold", "exp", "log", "sqrt", "rsqrt", "pow",
    "square", "abs", "erf", "sin", "cos", "reciprocal", "sign", "rpow", "glu_",
}  # fmt: skip
_SOFTMAX = {"softmax", "log_softmax", "softmin", "_softmax"}
_NORMS = {"layer_norm", "group_norm", "rms_norm", "batch_norm", "instance_norm", "normalize"}
_UNSUPPORTED = {
    "embedding": "it maps integer indices to vectors, so relevance cannot reach a discrete input",
    "embedding_bag": "it maps integer indices to vectors, so relevance cannot reach a discrete input",
    "lstm": "recurrent layers carry state across time steps",
    "gru": "recurrent layers carry state across time steps",
    "rnn_tanh": "recurrent layers carry state across time steps",
    "rnn_relu": "recurrent layers carry state across time steps",
    "setitem": "it writes into an activation in place",
    "local_response_norm": "it divides activations by their neighbours' energy, which no rule here redistributes",
}
_IN_PLACE = {
    "iadd": ("add", operator.add),
    "isub": ("sub", operator.sub),
    "imul": ("mul", operator.mul),
    "itruediv": ("truediv", operator.truediv),
    "imatmul": ("matmul", operator.matmul),
}
# modules whose functions are identified by name (anything else called by a model is run as Python code)
_LIBRARIES = ("torch", "operator", "builtins", "math", "_operator")


def data(value):
    """Whether ``value`` is an activation: a tensor that depends on the explained input (requires gradients)."""
    return isinstance(value, torch.Tensor) and value.requires_grad


class Handler:
    """Computes one call of the traced model; connects it to its data inputs by a rule in an explaining run."""

    def __init__(self, name, function):
        self.name, self.function = name, function

    def __call__(self, run, args, kwargs):
        """The call's output."""
        return self.function(*args, **kwargs)


class Plain(Handler):
    """Operations that only move or select values: their plain gradient routes relevance exactly."""


class Pool(Handler):
    """Max pooling: the plain gradient (winner takes all), as zennit; the receptive-field pass spreads evenly."""

    def __init__(self, name, function, connections):
        super().__init__(name, function)
        self.connections = connections

    def __call__(self, run, args, kwargs):
        """Pool; spread over the window in a receptive-field pass."""
        if run.mode == "flat" and data(args[0]):
            if self.connections is None:
                raise UnsupportedModelError(f"{self.name}: receptive fields through a dilated max pooling")
            return connect(Spread(lambda x: self.function(x, *args[1:], **kwargs), self.connections), args[0])
        return self.function(*args, **kwargs)


_MAX_POOLS = {
    "max_pool1d": ("avg_pool1d", False), "max_pool2d": ("avg_pool2d", False), "max_pool3d": ("avg_pool3d", False),
    "adaptive_max_pool1d": ("adaptive_avg_pool1d", True), "adaptive_max_pool2d": ("adaptive_avg_pool2d", True),
    "adaptive_max_pool3d": ("adaptive_avg_pool3d", True),
}  # fmt: skip


def pool_connections(kind, kernel_size=None, stride=None, padding=0, ceil_mode=False, output_size=None):
    """The windows of a max-pooling operation as an average pooling on ones (its connectivity)."""
    average, adaptive = _MAX_POOLS[kind]
    pool = getattr(torch.nn.functional, average)
    if adaptive:
        return lambda x: pool(x, output_size)
    return lambda x: pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


class FunctionalPool(Pool):
    """A functional max pooling (``F.max_pool2d``, ...)."""

    def __init__(self, name, function, kind):
        super().__init__(name, function, None)
        self.kind = kind
        self.signature = inspect.signature(getattr(torch.nn.functional, kind))

    def __call__(self, run, args, kwargs):
        """Pool; spread over the window in a receptive-field pass."""
        if run.mode == "flat" and data(args[0]):
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            if a.get("dilation", 1) not in (1, (1,), (1, 1), (1, 1, 1), [1, 1]) or a.get("return_indices"):
                raise UnsupportedModelError(f"{self.name}: receptive fields through a dilated max pooling")
            names = ("kernel_size", "stride", "padding", "ceil_mode", "output_size")
            connections = pool_connections(self.kind, **{k: a[k] for k in names if k in a})
            return connect(Spread(lambda x: self.function(x, *args[1:], **kwargs), connections), args[0])
        return self.function(*args, **kwargs)


class Activation(Handler):
    """Element-wise non-linearities: the identity rule."""

    def __call__(self, run, args, kwargs):
        """Apply; pass relevance unchanged."""
        if run.explains and args and data(args[0]) and not any(data(a) for a in args[1:]):
            return connect(Identity(lambda x: self.function(x, *args[1:], **kwargs)), args[0])
        return self.function(*args, **kwargs)


class Relu(Handler):
    """ReLU: its plain gradient, as zennit leaves it without a rule; the identity in a receptive-field pass.

    Under Epsilon and ZPlus the gradient equals the identity rule: inactive units receive no relevance anyway.
    """

    def __call__(self, run, args, kwargs):
        """Rectify (out of place)."""
        if run.mode == "flat" and args and data(args[0]):
            return connect(Identity(torch.relu), args[0])
        return torch.relu(args[0])


class LinearOperation(Handler):
    """An operation linear in its data inputs: the epsilon rule; a product of activations shares equally.

    ``constant``: positions of arguments held constant (a quotient's denominator, a gate).
    """

    def __init__(self, name, function, additive=False, product=False, constant=()):
        super().__init__(name, function)
        self.additive, self.product, self.constant = additive, product, set(constant)

    def __call__(self, run, args, kwargs):
        """Apply; connect by the epsilon rule."""
        if not run.explains:
            return self.function(*args, **kwargs)
        args = [a.detach() if i in self.constant and isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
        positions = [i for i, a in enumerate(args) if data(a)]
        if not positions:
            return self.function(*args, **kwargs)

        def bound(*values, constants=None):
            full = list(args) if constants is None else constants
            for position, value in zip(positions, values):
                full[position] = value
            return self.function(*full, **kwargs)

        inputs = [args[i] for i in positions]
        if run.mode == "flat":
            ones = [_one(a) if i not in positions else a for i, a in enumerate(args)]
            connections = _sum_of if self.additive else (lambda *values: bound(*values, constants=list(ones)))
            return connect(Spread(bound, connections), *inputs)
        shares = [1.0 / len(inputs)] * len(inputs) if self.product and len(inputs) > 1 else None
        return connect(Linear(bound, shares, run.epsilon), *inputs)


def _one(value):
    """A constant with every weight set to one (the flat rule's connectivity)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return torch.ones_like(value)
    return abs(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _sum_of(*values):
    return sum(values[1:], values[0])


class Norm(Handler):
    """LayerNorm, GroupNorm, RMSNorm, InstanceNorm, BatchNorm and ``normalize``: statistics held constant."""

    def __init__(self, name, function, kind):
        super().__init__(name, function)
        self.linearized = _LINEARIZED[kind]
        self.signature = inspect.signature(self.linearized)

    def __call__(self, run, args, kwargs):
        """Normalise; connect by the epsilon rule on the normalisation with its statistics held constant."""
        if not (run.explains and args and data(args[0])):
            return self.function(*args, **kwargs)
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        input = arguments.pop("x")
        if run.mode == "flat":
            return connect(Identity(lambda x: self.function(x, *args[1:], **kwargs)), input)
        return connect(Linear(lambda x: self.linearized(x, **arguments), None, run.epsilon), input)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    return _affine(_standardized(x, dims, eps), weight, bias)


def _standardized(x, dims, eps, centre=True):
    """``(x - mean) / std`` over ``dims`` with the standard deviation held constant (the centring stays linear)."""
    centred = x - x.mean(dims, keepdim=True) if centre else x
    spread = (centred.detach().pow(2).mean(dims, keepdim=True) + eps).sqrt()
    return centred / spread


def _affine(x, weight, bias, axis=None):
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        weight = None if weight is None else weight.reshape(shape)
        bias = None if bias is None else bias.reshape(shape)
    if weight is not None:
        x = x * weight
    return x if bias is None else x + bias


def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    grouped = x.reshape(x.shape[0], num_groups, -1)
    normalized = _standardized(grouped, (-1,), eps).reshape(x.shape)
    return _affine(normalized, weight, bias, axis=1)


def _instance_norm(
    x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-5
):
    if not use_input_stats:
        return _batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    normalized = _standardized(x, tuple(range(2, x.ndim)), eps)
    return _affine(normalized, weight, bias, axis=1)


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    dims = tuple(range(-len(normalized_shape), 0))
    return _affine(_standardized(x, dims, eps, centre=False), weight, None)


def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    if training or running_mean is None:
        return _affine(_standardized(x, (0, *range(2, x.ndim)), eps), weight, bias, axis=1)
    shape = [1, -1] + [1] * (x.ndim - 2)
    scale = (running_var + eps).rsqrt()
    return _affine((x - running_mean.reshape(shape)) * scale.reshape(shape), weight, bias, axis=1)


def _normalize(x, p=2.0, dim=1, eps=1e-12, out=None):
    return x / x.detach().norm(p, dim, keepdim=True).clamp_min(eps)


_LINEARIZED = {
    "layer_norm": _layer_norm,
    "group_norm": _group_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "normalize": _normalize,
}


class Softmax(Handler):
    """Softmax: its output held constant (CP-LRP), so no relevance flows into attention scores.

    With ``attention="attnlrp"``: AttnLRP's softmax rule (:class:`~crp_widgets.engine.rules.SoftmaxRule`).
    """

    def __init__(self, name, function, kind="softmax", dim=None):
        super().__init__(name, function)
        self.kind, self.dim = kind, dim
        self.signature = inspect.signature(torch.nn.functional.softmax)

    def __call__(self, run, args, kwargs):
        """Apply; detach in an explaining run (CP-LRP), or connect by AttnLRP's rule."""
        if run.explains and run.attention == "attnlrp" and args and data(args[0]):
            bound = self.signature.bind(*args, **kwargs).arguments
            if self.kind != "softmax" or bound.get("dtype") is not None:
                raise UnsupportedModelError(f"{self.name} ({self.kind}): AttnLRP's rule covers the softmax itself")
            return connect(SoftmaxRule(self.dim if self.dim is not None else bound.get("dim", -1)), args[0])
        output = self.function(*args, **kwargs)
        return output.detach() if run.explains else output


class Interpolate(Handler):
    """Nearest-neighbour resampling copies values (plain gradient); other modes are linear (epsilon rule)."""

    def __call__(self, run, args, kwargs):
        """Resample."""
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        if mode in ("nearest", "nearest-exact"):
            return self.function(*args, **kwargs)
        return LinearOperation(self.name, self.function)(run, args, kwargs)


class Attention(Handler):
    """``scaled_dot_product_attention``: weights held constant (CP-LRP), relevance through the values."""

    def __call__(self, run, args, kwargs):
        """Attend."""
        if not (run.explains and any(data(a) for a in args[:3])):
            return self.function(*args, **kwargs)
        return attend(run, *args, **kwargs)


def attend(run, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``softmax(q k^T * scale + mask) v``, computed by the rules of its operations (CP-LRP by default)."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = run.call(torch.matmul, query * scale, key.transpose(-2, -1))
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        causal = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        value = value.repeat_interleave(repeat, dim=-3)
    weights = run.call(torch.softmax, scores, dim=-1)
    return run.call(torch.matmul, weights, value)


class Opaque(Handler):
    """A Python function the tracer kept whole: run with every call inside it under these rules."""

    def __call__(self, run, args, kwargs):
        """Run the function under :class:`Intercept` in an explaining run."""
        if not run.explains:
            return self.function(*args, **kwargs)
        with Intercept(run, self.name):
            return self.function(*args, **kwargs)


class Intercept(TorchFunctionMode):
    """Applies :func:`handler`'s rules to every torch function called inside a block (opaque Python functions)."""

    def __init__(self, run, where):
        super().__init__()
        self.run, self.where = run, where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = function_name(func)
        if in_place(name):
            if not (args and data(args[0])):
                return func(*args, **(kwargs or {}))  # a constant changed in place, as the code means it
            if name not in REBOUND:
                raise UnsupportedModelError(
                    f"{self.where} changes an activation in place ({name}); the rules need out-of-place operations"
                )
        return handler(func, self.where)(self.run, args, kwargs or {})


# in-place operators whose result Python binds to the name (``x += y``): computed out of place, the result is the same
REBOUND = {"iadd", "isub", "imul", "itruediv", "imatmul"}


def in_place(name):
    """Whether a function of this name changes its first argument in place (``add_``, ``x += y``, ``x[i] = y``)."""
    return (name.endswith("_") and not name.startswith("_")) or name in REBOUND or name == "setitem"


class Unsupported(Handler):
    """An operation no rule can explain: refused when it meets an activation."""

    def __init__(self, name, function, reason):
        super().__init__(name, function)
        self.reason = reason

    def __call__(self, run, args, kwargs):
        """Refuse activations; compute constants."""
        if run.explains and any(data(a) for a in _flat(args, kwargs)):
            raise UnsupportedModelError(f"{self.name} cannot be explained by CRP/LRP: {self.reason}")
        return self.function(*args, **kwargs)


def _flat(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def function_name(function):
    """The name by which a called function is classified (``torch.add``, ``Tensor.__add__``, ``operator.add``)."""
    name = function if isinstance(function, str) else getattr(function, "__name__", "") or type(function).__name__
    if name.startswith("__") and name.endswith("__") and name != "__get__":
        name = name[2:-2]
    return name


def _library(function):
    """Whether ``function`` belongs to torch or Python's operators (else it is the model's own Python code)."""
    if isinstance(function, str) or function_name(function) == "__get__":
        return True
    owner = getattr(function, "__objclass__", None)
    if isinstance(owner, type) and issubclass(torch.Tensor, owner):
        return True
    module = getattr(function, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARIES


def method(name):
    """A tensor method called by name as a function of ``(self, *args)``."""
    return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)


def handler(function, where, name=None):
    """The :class:`Handler` of a called function (or method name).

    ``where`` names the call for error messages; ``name``: the classification name, if not the function's.
    """
    name = name or function_name(function)
    if not _library(function):
        return Opaque(where, function)
    if name in _IN_PLACE:  # out of place: the graph rebinds the name to the result
        name, callable_ = _IN_PLACE[name]
    elif name.endswith("_") and not name.startswith("_"):
        if not hasattr(torch.Tensor, name[:-1]):  # zero_, fill_, copy_: only in place, only on constants
            return Unsupported(where, method(name), f"{name} writes into an activation in place")
        name = name[:-1]
        callable_ = method(name)
    else:
        callable_ = method(function) if isinstance(function, str) else function
    return _classify(name, callable_, where)


def _classify(name, function, where):
    if name in _STRUCTURAL:
        return Plain(where, function)
    if name.removesuffix("_with_indices") in _MAX_POOLS:
        return FunctionalPool(where, function, name.removesuffix("_with_indices"))
    if name in _ADDITIVE:
        return LinearOperation(where, function, additive=True)
    if name in _PRODUCTS:
        return LinearOperation(where, function, product=True)
    if name in _QUOTIENTS:
        return LinearOperation(where, function, product=True, constant=(1,))
    if name in _LINEAR:
        return LinearOperation(where, function)
    if name == "interpolate" or name == "upsample":
        return Interpolate(where, function)
    if name == "relu":
        return Relu(where, function)
    if name in _ACTIVATIONS:
        return Activation(where, function)
    if name in _SOFTMAX:
        return Softmax(where, function, name.lstrip("_"))
    if name in _NORMS:
        return Norm(where, function, name)
    if name == "scaled_dot_product_attention":
        return Attention(where, function)
    reason = _UNSUPPORTED.get(name, f"no LRP rule is known for the operation {name!r}")
    return Unsupported(where, function, reason)
