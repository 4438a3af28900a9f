"""Layers with parameters as the rules see them: the operation, its canonized parameters and its transpose.

A :class:`Layer` computes a module's eval-mode output from a dictionary of parameters, so that a rule can run it
with modified parameters (zennit's parameter modifiers) without touching the module. A convolution or linear layer
followed by a BatchNorm is one :class:`Merged` layer whose parameters fold the BatchNorm in (canonization, CRP paper
A.3): the merged values are computed from the user's parameters, never written into them.
"""

import torch
from torch.nn import functional

_CONVOLUTIONS = {
    torch.nn.Conv1d: (functional.conv1d, torch.nn.grad.conv1d_input),
    torch.nn.Conv2d: (functional.conv2d, torch.nn.grad.conv2d_input),
    torch.nn.Conv3d: (functional.conv3d, torch.nn.grad.conv3d_input),
}


class Layer:
    """A module's operation as a function of its parameters.

    Attributes
    ----------
    name : str
        The module's name.
    module : torch.nn.Module
        The module (its parameters are read, never written).
    linear : bool
        ``function(0, parameters)`` is the bias alone (:meth:`at_zero` is valid).
    transposable : bool
        :meth:`transpose` computes the vector-Jacobian product directly.
    """

    linear = False
    transposable = False

    def __init__(self, name, module):
        self.name, self.module = name, module

    def parameters(self):
        """The module's own parameters by name, detached."""
        return {key: value.detach() for key, value in self.module.named_parameters(recurse=False)}

    def function(self, input, parameters):
        """The module's eval-mode output for ``input`` with ``parameters``."""
        buffers = {key: _detached(value) for key, value in self.module.named_buffers(recurse=False)}
        state = {key: value for key, value in (parameters | buffers).items() if value is not None}
        return torch.func.functional_call(self.module, state, (input,))

    def transpose(self, input, parameters, grad):
        """The vector-Jacobian product of :meth:`function` at ``input`` for ``grad``."""
        raise NotImplementedError

    def at_zero(self, parameters, output):
        """``function(0, parameters)``, broadcastable to ``output`` (for a linear layer)."""
        raise NotImplementedError


def _detached(tensor):
    return None if tensor is None else tensor.detach()


class Convolution(Layer):
    """``Conv1d``, ``Conv2d`` or ``Conv3d``."""

    linear = True

    def __init__(self, name, module, kind):
        super().__init__(name, module)
        self.convolve, self.input_gradient = _CONVOLUTIONS[kind]
        self.pad = _explicit_padding(module) if module.padding_mode != "zeros" else None
        self.transposable = self.pad is None and not isinstance(module.padding, str)

    def parameters(self):
        """``weight`` and ``bias``, detached."""
        return {"weight": self.module.weight.detach(), "bias": _detached(self.module.bias)}

    def function(self, input, parameters):
        """The convolution with ``parameters``."""
        module = self.module
        padding = module.padding
        if self.pad is not None:
            input = functional.pad(input, self.pad, mode=module.padding_mode)
            padding = 0
        return self.convolve(
            input, parameters["weight"], parameters.get("bias"), module.stride, padding, module.dilation, module.groups
        )

    def transpose(self, input, parameters, grad):
        """The transposed convolution of ``grad`` with the branch's weight."""
        module = self.module
        return self.input_gradient(
            input.shape, parameters["weight"], grad, module.stride, module.padding, module.dilation, module.groups
        )

    def at_zero(self, parameters, output):
        """The bias on every position (a zero scalar without a bias)."""
        bias = parameters.get("bias")
        if bias is None:
            return output.new_zeros(())
        return bias.reshape(1, -1, *[1] * (output.ndim - 2)).expand_as(output)


def _explicit_padding(module):
    """The padding of a convolution that pads by other means than zeros, as ``functional.pad`` takes it."""
    pads = []
    kernel = module.kernel_size
    for dim in reversed(range(len(kernel))):
        if module.padding == "same":
            total = module.dilation[dim] * (kernel[dim] - 1)
            pads += [total // 2, total - total // 2]
        elif module.padding == "valid":
            pads += [0, 0]
        else:
            pads += [module.padding[dim]] * 2
    return pads


class Dense(Layer):
    """``Linear``."""

    linear = True
    transposable = True

    def parameters(self):
        """``weight`` and ``bias``, detached."""
        return {"weight": self.module.weight.detach(), "bias": _detached(self.module.bias)}

    def function(self, input, parameters):
        """``input @ weight.T + bias``."""
        return functional.linear(input, parameters["weight"], parameters.get("bias"))

    def transpose(self, input, parameters, grad):
        """``grad @ weight``."""
        return grad @ parameters["weight"]

    def at_zero(self, parameters, output):
        """The bias for every input row (a zero scalar without a bias)."""
        bias = parameters.get("bias")
        return output.new_zeros(()) if bias is None else bias.expand_as(output)


class BatchNorm(Layer):
    """A BatchNorm in eval mode (running statistics), whatever the module's training flag."""

    def function(self, input, parameters):
        """Normalise by the running statistics, then scale and shift."""
        module = self.module
        return functional.batch_norm(
            input,
            module.running_mean.detach(),
            module.running_var.detach(),
            parameters.get("weight"),
            parameters.get("bias"),
            False,
            0.0,
            module.eps,
        )


class Merged(Layer):
    """A convolution or linear layer with the BatchNorm that follows it folded in (zennit's merge, A.3).

    ``scale = gamma / sqrt(running_var + eps)``; the merged weight is ``weight * scale`` per output channel and the
    merged bias ``(bias - running_mean) * scale + beta``.
    """

    def __init__(self, layer, batch_norm):
        super().__init__(layer.name, layer.module)
        self.layer, self.batch_norm = layer, batch_norm
        self.linear, self.transposable = layer.linear, layer.transposable

    def parameters(self):
        """The merged ``weight`` and ``bias``."""
        parameters = self.layer.parameters()
        scale, shift = batch_norm_affine(self.batch_norm)
        weight = parameters["weight"]
        bias = parameters.get("bias")
        merged_bias = shift if bias is None else bias * scale + shift
        return {"weight": weight * scale.reshape(-1, *[1] * (weight.ndim - 1)), "bias": merged_bias}

    def function(self, input, parameters):
        """The layer's operation with the merged parameters."""
        return self.layer.function(input, parameters)

    def transpose(self, input, parameters, grad):
        """The layer's transpose with the merged weight."""
        return self.layer.transpose(input, parameters, grad)

    def at_zero(self, parameters, output):
        """The merged bias."""
        return self.layer.at_zero(parameters, output)


def batch_norm_affine(module):
    """``(scale, shift)`` of a BatchNorm in eval mode: ``y = x * scale + shift`` per channel."""
    with torch.no_grad():
        scale = (module.running_var + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        if module.bias is not None:
            shift = shift + module.bias
    return scale.detach(), shift.detach()


BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def layer_of(name, module):
    """The :class:`Layer` of a module (one whose class or instance has its own ``forward`` runs that code)."""
    if "forward" in vars(module):
        return Layer(name, module)
    for kind in _CONVOLUTIONS:
        if isinstance(module, kind) and type(module).forward is kind.forward:
            return Convolution(name, module, kind)
    if isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward:
        return Dense(name, module)
    if is_batch_norm(module):
        return BatchNorm(name, module)
    return Layer(name, module)


def is_batch_norm(module):
    """Whether ``module`` is a BatchNorm with running statistics (an affine map per channel in eval mode)."""
    return (
        isinstance(module, BATCH_NORMS)
        and type(module).forward in {kind.forward for kind in BATCH_NORMS}
        and module.track_running_stats
        and module.running_mean is not None
    )
