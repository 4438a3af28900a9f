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


_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def layer_groups(model, runs_once=None):
    """The layers a user explores, grouped: the outputs of the model's blocks by stage, or its conv/linear layers.

    A block is a module with submodules of a type that occurs more than once (a ResNet ``BasicBlock``, a
    transformer's encoder layer, an ``MBConv``), not inside another block; its stage is the module holding it. A
    sequence of blocks of one type (RegNet's stages) is a stage, not a block. A model without repeated blocks (VGG,
    a small CNN) lists its convolution and linear layers by parent module.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    runs_once : Callable[[str], bool], optional
        Whether a layer runs exactly once per forward pass (others cannot carry conditions); default: all do.

    Returns
    -------
    list[tuple[str, list[str]]]
        ``(group, layers)`` in definition order; the group is a stage's name, ``"stem"`` for the convolutions before
        the first block outside any block, or the parent module's name.
    """
    runs_once = runs_once or (lambda name: True)
    modules = dict(model.named_modules())
    candidates = [name for name, module in modules.items() if name and _composite(module) and runs_once(name)]
    counts = {}
    for name in candidates:
        counts[type(modules[name])] = counts.get(type(modules[name]), 0) + 1
    blocks = []
    for name in candidates:
        repeated = counts[type(modules[name])] > 1 and not _stage(modules[name])
        if repeated and not any(name.startswith(block + ".") for block in blocks):
            blocks.append(name)
    if len(blocks) < 2:
        return _by_parent([name for name in explainable_layers(model) if runs_once(name)])
    order = list(modules)
    first = blocks[0]
    stem = [
        name
        for name in explainable_layers(model)
        if order.index(name) < order.index(first) and runs_once(name)
        and not any(name.startswith(block + ".") for block in blocks)
    ]  # fmt: skip
    return ([("stem", stem)] if stem else []) + _by_parent(blocks)


def _composite(module):
    """A module with submodules that is not a bare container (``Sequential``, ``ModuleList``, ``ModuleDict``)."""
    return any(True for _ in module.children()) and type(module) not in _CONTAINERS


def _stage(module):
    """A sequence of at least two blocks of one type (e.g. a RegNet stage): a stage, not a block."""
    children = list(module.children())
    kinds = {type(child) for child in children}
    return isinstance(module, torch.nn.Sequential) and len(children) > 1 and len(kinds) == 1 and _composite(children[0])


def _by_parent(names):
    groups = {}
    for name in names:
        groups.setdefault(name.rpartition(".")[0] or "model", []).append(name)
    return list(groups.items())


class Layout:
    """Where a layer's channels and positions lie in its output, and how its positions map onto the input's grid.

    A convolution's output ``[B, C, H', W']`` is on the grid already; a channels-last output ``[B, H', W', C]``
    (ConvNeXt, Swin) moves its channels second; a token layer ``[B, N, C]`` (a vision transformer) puts its patch
    tokens on a grid of the input's aspect ratio and leaves its ``extra`` leading tokens (class, distillation,
    register tokens) out of the grid. A layer without positions (a linear layer ``[B, C]``) has an empty grid.

    Attributes
    ----------
    axis : int
        The channel axis of the layer's output (with the batch axis).
    extra : int
        Leading tokens that are not on the grid.
    grid : tuple[int, ...]
        The layer's positions as a grid (``()`` for none).
    """

    def __init__(self, axis, extra=0, grid=()):
        self.axis, self.extra, self.grid = axis, extra, tuple(grid)

    @classmethod
    def of(cls, shape, axis, input_spatial):
        """The layout of an output of ``shape`` with channels on ``axis``, for an input of ``input_spatial`` size."""
        rest = [size for dim, size in enumerate(shape[1:], start=1) if dim != axis]
        if len(shape) == 3 and axis == 2 and len(input_spatial) == 2:
            extra, grid = _token_grid(shape[1], input_spatial)
            return cls(axis, extra, grid)
        return cls(axis, 0, rest)

    def to_grid(self, tensor):
        """``[B, C, *grid]`` from the layer's output (or relevance) ``tensor``; extra tokens left out."""
        moved = tensor.movedim(self.axis, 1)
        if self.extra:
            moved = moved[:, :, self.extra :]
        return moved.reshape(moved.shape[0], moved.shape[1], *self.grid)

    def from_grid(self, grid, original):
        """The layer's layout from ``[B, C, *grid]`` values; extra tokens taken from ``original``."""
        flat = grid.reshape(grid.shape[0], grid.shape[1], -1) if self.extra or len(self.grid) != grid.ndim - 2 else grid
        if self.extra:
            kept = original.movedim(self.axis, 1)[:, :, : self.extra].expand(grid.shape[0], -1, -1)
            flat = torch.cat([kept.to(flat.dtype), flat], dim=2)
        return flat.movedim(1, self.axis)


def _token_grid(tokens, input_spatial):
    """``(extra, (h, w))``: the patch tokens of a token layer laid out with the input's aspect ratio."""
    height, width = input_spatial
    for extra in range(0, min(tokens, 9)):
        patches = tokens - extra
        rows = max(1, round(math.sqrt(patches * height / width)))
        if rows * (patches // rows) == patches and patches // rows > 0:
            return extra, (rows, patches // rows)
    return 0, (tokens,)
