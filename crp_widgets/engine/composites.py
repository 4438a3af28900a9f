"""Choosing LRP rules: the default composite per architecture (CRP paper, A.3) and rule plans for a model."""

import weakref

import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from .errors import UnsupportedModelError
from .propagation import BatchNormGradient, GradientRule, Propagator, propagator_for

try:  # torchvision is a dependency, but keep the engine importable on a trimmed install
    from torchvision.models import VGG
    from torchvision.models.resnet import BasicBlock, Bottleneck
except ImportError:  # pragma: no cover
    VGG, BasicBlock, Bottleneck = (), (), ()


def default_canonizers(model):
    """Canonizers chosen by architecture (A.3, "Canonization").

    zennit's ResNet canonizer for torchvision ResNets (BatchNorm merging and a ``Sum`` module for the residual
    addition), BatchNorm merging for VGG-BN style nets, sequential BatchNorm merging for any other net with
    BatchNorm, none otherwise.
    """
    modules = list(model.modules())
    if any(isinstance(module, (BasicBlock, Bottleneck)) for module in modules):
        return [ResNetCanonizer()]
    has_batch_norm = any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in modules)
    if isinstance(model, VGG) and has_batch_norm:
        return [VGGCanonizer()]
    if has_batch_norm:
        return [SequentialMergeBatchNorm()]
    return []


def default_composite(model):
    """The composite recommended in A.3: EpsilonPlusFlat (Flat first layer, ZPlus convolutions, Epsilon dense)."""
    return EpsilonPlusFlat(canonizers=default_canonizers(model))


def describe(composite):
    """A short, stable text naming a composite and its canonizers (for manifests and captions)."""
    canonizers = ", ".join(type(canonizer).__name__ for canonizer in getattr(composite, "canonizers", []))
    return f"{type(composite).__name__}(canonizers=[{canonizers}])"


# Module types whose relevance no composite rule can redistribute, with the reason given to the user.
_UNEXPLAINABLE = (
    (
        torch.nn.RNNBase,
        "recurrent layers carry state across time steps; the LRP rules here attach to feed-forward modules",
    ),
    (
        (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer),
        "attention multiplies activations with each other, and no rule of the composite handles such products",
    ),
    (
        (
            torch.nn.LayerNorm,
            torch.nn.GroupNorm,
            torch.nn.LocalResponseNorm,
            torch.nn.modules.instancenorm._InstanceNorm,
        ),
        "it divides activations by their own statistics: its plain gradient does not conserve relevance, and no "
        "canonizer can merge it into a neighbouring layer",
    ),
    (
        (torch.nn.Embedding, torch.nn.EmbeddingBag),
        "it maps integer indices to vectors, so relevance cannot reach a discrete input",
    ),
    (
        (torch.nn.Softmax, torch.nn.LogSoftmax, torch.nn.Softmin),
        "LRP explains the model's output scores (logits), starting from the output value (A.3): pass the model "
        "without its final softmax",
    ),
)


class Refuse(Propagator):
    """Stands in for a module that cannot be explained, and raises as soon as the module runs."""

    def __init__(self, name, module, reason):
        self.message = (
            f"module {name!r} ({type(module).__name__}) cannot be explained by CRP/LRP: {reason}. "
            "Explainable models are feed-forward nets of linear layers (Conv1d/2d/3d, Linear), element-wise "
            "activations as modules, pooling, and BatchNorm that a canonizer merges."
        )

    def admit(self, module):
        """Raise :class:`UnsupportedModelError`."""
        raise UnsupportedModelError(self.message)


def _has_state(module):
    """Whether a module owns parameters or buffers (whose values a canonizer may swap)."""
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def rule_plan(model, composite, named=None):
    """Map each module of the (already canonized) model to the ``Propagator`` of its rule.

    Modules the composite leaves alone keep their plain gradient; those with parameters or buffers get a
    ``GradientRule`` (BatchNorm: its exact eval-mode gradient, ``BatchNormGradient``) so that later backward passes
    see the canonized values; unexplainable types get ``Refuse``. ``named``: the model's ``named_modules()``, when
    the caller has them.
    """
    named = list(model.named_modules()) if named is None else named
    signature = tuple((name, type(module)) for name, module in named)
    plans = _PLANS.setdefault(model, weakref.WeakKeyDictionary())
    cached = plans.get(composite)
    if cached is None or cached[0] != signature:  # the first pass, or the model's structure changed
        cached = plans[composite] = (signature, _plan_by_name(named, composite))
    modules = dict(named)
    return {modules[name]: propagator for name, propagator in cached[1].items()}


# Plans per model and composite, by module name, with the (name, type) signature of the canonized model they fit.
_PLANS = weakref.WeakKeyDictionary()


def _plan_by_name(named, composite):
    """The propagator of every module that needs one, by name (see :func:`rule_plan`)."""
    ctx = {}
    plan = {}
    for name, module in named:
        rule = composite.module_map(ctx, name, module)
        if rule is not None:
            plan[name] = propagator_for(rule)
            continue
        reason = next((why for kinds, why in _UNEXPLAINABLE if isinstance(module, kinds)), None)
        if reason is not None:
            plan[name] = Refuse(name, module, reason)
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            plan[name] = BatchNormGradient()
        elif _has_state(module) and not any(True for _ in module.children()):
            plan[name] = GradientRule()
    return plan
