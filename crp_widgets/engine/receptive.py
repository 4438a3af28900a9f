"""Receptive fields of neurons with the LRP flat rule (CRP paper Sec. 2.3.4, Eq. 25).

Relevance placed on one neuron is spread by the flat rule, which ignores weights and inputs, down to the input:
exactly the input positions connected to the neuron receive relevance (more where more paths connect them).
Pooling layers spread it evenly over their window, whatever unit won a max-pooling.
"""

import torch
from torch.nn import functional
from zennit.core import Composite
from zennit.rules import Flat, Pass
from zennit.types import Activation, AvgPool, BatchNorm, Linear, MaxPool

from .errors import UnsupportedModelError
from .propagation import Propagator, _vjp


def _uniform_pool(module, ones):
    """Average pooling with the module's window: the connectivity of a max- or average-pooling layer."""
    dims = ones.ndim - 2
    if isinstance(
        module,
        (
            torch.nn.AdaptiveMaxPool1d,
            torch.nn.AdaptiveMaxPool2d,
            torch.nn.AdaptiveMaxPool3d,
            torch.nn.AdaptiveAvgPool1d,
            torch.nn.AdaptiveAvgPool2d,
            torch.nn.AdaptiveAvgPool3d,
        ),
    ):
        pool = (functional.adaptive_avg_pool1d, functional.adaptive_avg_pool2d, functional.adaptive_avg_pool3d)[
            dims - 1
        ]
        return pool(ones, module.output_size)
    dilation = getattr(module, "dilation", 1)
    if any(d != 1 for d in ((dilation,) if isinstance(dilation, int) else dilation)):
        raise UnsupportedModelError(f"receptive fields through a dilated {type(module).__name__} are not supported")
    pool = (functional.avg_pool1d, functional.avg_pool2d, functional.avg_pool3d)[dims - 1]
    stride = module.stride if module.stride is not None else module.kernel_size
    return pool(ones, module.kernel_size, stride, module.padding, module.ceil_mode, count_include_pad=True)


class UniformPool(Propagator):
    """Flat rule for pooling layers: a pooled unit's relevance is shared evenly by its whole window."""

    def prepare(self, module, input, shared=False):
        """Build the window-averaging graph on a tensor of ones."""
        ones = torch.ones_like(input.detach()).requires_grad_()
        return ones, _uniform_pool(module, ones)

    def propagate(self, state, relevance):
        """Spread ``relevance`` evenly over each window (conserving it over the input positions)."""
        ones, output = state
        return _vjp(output, ones, relevance / output.detach().clamp(min=1e-12))[0]


class FlatComposite(Composite):
    """Flat rule on linear layers, even spreading over pooling windows, pass-through elsewhere (Sec. 2.3.4)."""

    def __init__(self):
        flat, uniform, passing = Flat(), UniformPool(), Pass()

        def module_map(ctx, name, module):
            if isinstance(module, Linear):
                return flat
            if isinstance(module, (MaxPool, AvgPool)):
                return uniform
            if isinstance(module, (Activation, BatchNorm)):
                return passing
            return None

        super().__init__(module_map=module_map)


def bounding_box(mask):
    """``(top, bottom, left, right)`` of a 2-D boolean mask, ``(start, end)`` of a 1-D one (exclusive ends)."""
    box = []
    for dim in range(mask.ndim):
        other = [d for d in range(mask.ndim) if d != dim]
        hits = torch.nonzero(mask.any(dim=other) if other else mask).flatten()
        box += [int(hits.min()), int(hits.max()) + 1] if len(hits) else [0, 0]
    return tuple(box)
