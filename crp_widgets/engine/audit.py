"""Finding operations in a model's forward code that LRP rules cannot reach.

Rules attach to modules. An activation, a convolution or a matrix product written as a function call in a model's
``forward`` gets no rule: relevance would pass it by its plain gradient. ReLU is the exception: its gradient gives
exactly what the ``Pass`` rule gives, because inactive units carry no relevance under the Epsilon and ZPlus rules.
"""

import warnings

import torch
from torch.overrides import TorchFunctionMode

from .errors import UnsupportedModelError

_LINEAR_OPS = {
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "linear",
    "bilinear",
    "matmul",
    "mm",
    "bmm",
    "addmm",
    "einsum",
    "__matmul__",
    "__rmatmul__",
}
_ACTIVATIONS = {
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "softplus",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "mish",
    "relu6",
    "prelu",
    "rrelu",
    "logsigmoid",
    "softsign",
}
_SOFTMAX = {"softmax", "log_softmax", "softmin"}
_NORMS = {"layer_norm", "group_norm", "batch_norm", "instance_norm", "normalize", "local_response_norm"}
_ADDITIONS = {"add", "__add__", "__radd__", "__iadd__", "add_"}


def _classify(name):
    """Return why a function called in forward code defeats the rules, or ``None``."""
    base = name.rstrip("_") if not name.startswith("__") else name
    if base in _LINEAR_OPS:
        return f"{name} is a linear map with weights; a rule needs it as a module (torch.nn.Conv2d, torch.nn.Linear)"
    if base in _ACTIVATIONS:
        return (
            f"{name} is an activation; its gradient would scale the relevance, whereas the Pass rule, which "
            "needs the activation as a module (e.g. torch.nn.GELU()), passes it unchanged"
        )
    if base in _SOFTMAX:
        return (
            f"{name} normalises the outputs; LRP explains the output scores (logits) starting from their value "
            "(A.3): return the logits from forward"
        )
    if base in _NORMS:
        return f"{name} normalises by the activations' own statistics; no rule conserves relevance through it"
    return None


_IN_PLACE = {"__iadd__", "__isub__", "__imul__", "__itruediv__"}


def _in_place(name, kwargs):
    """Whether a call modifies a tensor in place (``relu_``, ``+=``, ``inplace=True``)."""
    return (name.endswith("_") and not name.startswith("__")) or name in _IN_PLACE or bool(kwargs.get("inplace"))


def _residual(args):
    """Whether ``args`` add two gradient-carrying tensors of one shape (a residual connection)."""
    if len(args) < 2 or not all(isinstance(a, torch.Tensor) for a in args[:2]):
        return False
    return args[0].shape == args[1].shape and args[0].requires_grad and args[1].requires_grad


class FunctionalAudit(TorchFunctionMode):
    """Record the torch functions called by forward code outside any leaf module.

    ``enter``/``leave`` are called by module hooks; calls made at depth zero are forward code of containers or of
    the model itself.
    """

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.problems = {}
        self.additions = 0
        self.in_place = False

    def enter(self, *_):
        """Count a module entered."""
        self.depth += 1

    def leave(self, *_):
        """Count a module left."""
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth == 0:
            name = getattr(func, "__name__", "")
            reason = _classify(name)
            if reason is not None:
                self.problems.setdefault(name, reason)
            elif name in _ADDITIONS and _residual(args):
                self.additions += 1
            self.in_place = self.in_place or _in_place(name, kwargs)
        return func(*args, **kwargs)

    def verdict(self):
        """Raise :class:`UnsupportedModelError` for operations no rule can explain; warn about additions.

        Returns
        -------
        bool
            Whether the forward code modifies tensors in place (then layer outputs are copied when recorded).
        """
        if self.problems:
            details = "; ".join(self.problems.values())
            raise UnsupportedModelError(
                f"the model's forward code calls {', '.join(sorted(self.problems))} directly, outside any module, "
                f"so no LRP rule can attach to it: {details}."
            )
        if self.additions:
            warnings.warn(
                f"the model's forward code adds {self.additions} pairs of tensors outside modules (residual "
                "connections?): the plain gradient copies relevance to both summands instead of splitting it. Route "
                "additions through zennit.layer.Sum with a canonizer (zennit's ResNetCanonizer does this for "
                "torchvision ResNets).",
                stacklevel=4,
            )
        return self.in_place
