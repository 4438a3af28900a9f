"""Model inspection: the explainable layers of any ``nn.Module``, their shapes and channels, and input checks."""

import dataclasses
import math

import numpy as np
import torch

from .errors import CRPError, UnknownLayerError

EXPLAINABLE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def explainable_layers(model):
    """Names of the modules whose channels are concepts: Conv1d/2d/3d and Linear, in definition order."""
    return [name for name, module in model.named_modules() if name and isinstance(module, EXPLAINABLE_TYPES)]


def channel_axis(module):
    """The axis of a layer's output that holds its channels (features for Linear, else dimension 1)."""
    return -1 if isinstance(module, torch.nn.Linear) else 1


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """An explainable layer, as seen in one forward pass.

    Attributes
    ----------
    name : str
        Module name, as in ``model.named_modules()``.
    kind : str
        Module class name.
    channels : int
        Number of channels (concepts).
    shape : tuple[int, ...]
        Output shape of one sample.
    order : int
        Position in the forward pass.
    """

    name: str
    kind: str
    channels: int
    shape: tuple
    order: int


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the model's first layer accepts: the rank of one sample and its channel count."""

    layer: str
    kind: str
    rank: int
    channels: int

    @classmethod
    def of(cls, model):
        """Derive the spec from the first layer with parameters, if it is a convolution; else ``None``.

        Layers are modules without submodules (a model's own parameters, e.g. a class token, do not count).
        """
        for name, module in model.named_modules():
            if any(True for _ in module.children()):
                continue
            if any(True for _ in module.parameters(recurse=False)):
                if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                    rank = {torch.nn.Conv1d: 2, torch.nn.Conv2d: 3, torch.nn.Conv3d: 4}[type(module)]
                    return cls(name, type(module).__name__, rank, module.in_channels)
                return None
        return None

    def describe(self):
        """The accepted shapes, in words."""
        dims = {2: "[C, L]", 3: "[C, H, W]", 4: "[C, D, H, W]"}[self.rank]
        batched = "[B, " + dims[1:]
        return f"{dims} for one sample or {batched} for a batch, with C = {self.channels}"


def model_tensor(model):
    """The model's first parameter (else buffer) in ``parameters()`` order, giving its dtype and device, or ``None``.

    Found by a walk of the modules' own tables: every input check asks, and abandoning ``parameters()``' nested
    generators costs more than the walk.
    """
    for store in ("_parameters", "_buffers"):
        stack = [model]
        while stack:
            module = stack.pop()
            if module is None:  # a submodule slot set to None
                continue
            for tensor in getattr(module, store).values():
                if tensor is not None:
                    return tensor
            stack.extend(reversed(module._modules.values()))
    return None


def validate_input(x, model, spec, finite=True):
    """Check an input and return it batched, with a flag telling whether the caller passed one unbatched sample.

    ``finite=False`` leaves the check for NaN and Inf to the caller (:func:`check_finite`), e.g. to reuse a sum.

    Raises
    ------
    CRPError
        For a wrong type, rank, channel count, dtype or device, an empty batch, or NaN/Inf values.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise CRPError(f"the input must be a torch.Tensor or a numpy array, got {type(x).__name__}")
    unbatched = False
    if spec is not None:
        if x.ndim == spec.rank:
            x, unbatched = x.unsqueeze(0), True
        elif x.ndim != spec.rank + 1:
            raise CRPError(
                f"the input has shape {tuple(x.shape)} (rank {x.ndim}), but the model's first layer {spec.layer!r} "
                f"({spec.kind}) takes {spec.describe()}"
            )
        if x.shape[1] != spec.channels:
            raise CRPError(
                f"the input has {x.shape[1]} channels (shape {tuple(x.shape)}), but the model's first layer "
                f"{spec.layer!r} ({spec.kind}) takes {spec.channels}"
            )
    if x.ndim == 0 or x.shape[0] == 0:
        raise CRPError(f"the input has shape {tuple(x.shape)}: it holds no sample")
    reference = model_tensor(model)
    if not x.is_floating_point():
        expected = reference.dtype if reference is not None else torch.float32
        raise CRPError(
            f"the input has dtype {x.dtype}, but the model computes in {expected}: convert it, e.g. "
            f"x.to({expected}) (and scale images to the range the model was trained on, e.g. / 255)"
        )
    if reference is not None and x.dtype != reference.dtype:
        raise CRPError(
            f"the input has dtype {x.dtype}, but the model's parameters are {reference.dtype}: "
            f"use x.to({reference.dtype})"
        )
    if reference is not None and x.device != reference.device:
        raise CRPError(
            f"the input is on device {x.device}, but the model's parameters are on {reference.device}: move one of "
            f"them, e.g. x.to({str(reference.device)!r})"
        )
    if finite:
        check_finite(x)
    return x, unbatched


def check_finite(x, total=None):
    """Raise :class:`CRPError` if ``x`` holds NaN or Inf values.

    ``total``: a sum of ``x`` (plain or weighted) as a float when the caller has it. NaN and Inf propagate into a
    sum (one pass, no boolean temporary); only a sum that is not finite (or overflowed) makes the element-wise check
    run.
    """
    if math.isfinite(float(x.detach().sum()) if total is None else total):
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan = int(torch.isnan(x).sum())
        raise CRPError(
            f"the input contains {nan} NaN and {int((~finite).sum()) - nan} infinite values; CRP needs finite inputs"
        )


def resolve_layer(name, modules, valid):
    """Return the module called ``name``, or raise :class:`UnknownLayerError` listing the ``valid`` layers."""
    if not isinstance(name, str) or name not in modules or name == "":
        raise UnknownLayerError(name, valid)
    return modules[name]


def channel_list(channels, layer, count, ordered=False):
    """Validate channel indices of ``layer`` (with ``count`` channels); return them as a sorted list of ints.

    With ``ordered``, return them in the order given (one result per channel, e.g. per-channel heatmaps).
    """
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [int(channels)]
    elif isinstance(channels, torch.Tensor):
        channels = channels.flatten().tolist()
    elif isinstance(channels, np.ndarray):
        channels = channels.ravel().tolist()
    else:
        try:
            channels = list(channels)
        except TypeError:
            raise CRPError(
                f"channels of layer {layer!r} must be an int or a sequence of ints, got {type(channels).__name__}"
            ) from None
    if not channels:
        raise CRPError(
            f"the condition for layer {layer!r} selects no channels; give at least one channel index "
            f"(0 to {count - 1}) or leave the layer out of the conditions"
        )
    result = []
    for channel in channels:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise CRPError(f"channel {channel!r} of layer {layer!r} is not an integer index")
        if not 0 <= channel < count:
            raise CRPError(
                f"channel {int(channel)} is out of range for layer {layer!r}, which has {count} channels "
                f"(valid: 0 to {count - 1})"
            )
        result.append(int(channel))
    return result if ordered else sorted(set(result))
