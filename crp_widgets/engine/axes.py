"""Which axis of a value holds its channels, followed through the graph as the model permutes and reshapes.

A convolution puts its channels on axis 1, a linear layer or a LayerNorm on the last axis (the features of each
token or row); reshapes, permutes, indexing and reductions move that axis, and element-wise operations keep it.
:func:`channel_axis` computes the output's channel axis of one call from its inputs' (``None``: unknown).
"""

import torch

from . import ops

_CHANNELS_FIRST = (
    torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
)  # fmt: skip
_CHANNELS_LAST = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.MultiheadAttention, torch.nn.Bilinear)
_FIRST_FUNCTIONS = {"conv1d", "conv2d", "conv3d", "group_norm", "batch_norm", "instance_norm"}
_LAST_FUNCTIONS = {"linear", "layer_norm", "rms_norm", "scaled_dot_product_attention"}


def channel_axis(kind, target, args, kwargs, output, axes):
    """The channel axis (non-negative) of ``output``, or ``None``.

    ``kind``: the fx node's op; ``target``: its module (for ``call_module``) or function; ``axes``: the channel
    axis of each tensor argument, by position in ``args`` (``None`` where unknown).
    """
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]  # the axis of a tuple of tensors is that of its elements (attention, chunk, split)
    if not isinstance(output, torch.Tensor) or output.ndim == 0:
        return None
    ndim = output.ndim
    if kind == "call_module":
        if isinstance(target, _CHANNELS_FIRST) and ndim > 1:
            return 1
        if isinstance(target, _CHANNELS_LAST) or (
            hasattr(torch.nn, "RMSNorm") and isinstance(target, torch.nn.RMSNorm)
        ):
            return ndim - 1
        return _kept(args, axes, output)
    name = ops.function_name(target)
    if name in _FIRST_FUNCTIONS and ndim > 1:
        return 1
    if name in _LAST_FUNCTIONS or name in ("matmul", "mm", "bmm"):
        return ndim - 1
    move = _MOVES.get(name.rstrip("_"))
    if move is None:
        return _kept(args, axes, output)
    axis, source = _first(args, axes)
    if axis is None:
        return None
    if not isinstance(source, torch.Tensor):  # an element of a tuple of tensors
        return axis if name == "getitem" else None
    return move(axis, source, args, kwargs, output)


def _first(args, axes):
    """The first argument that is a tensor or a sequence of tensors, with its axis."""
    for value, axis in zip(args, axes):
        if isinstance(value, torch.Tensor):
            return axis, value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return axis, value
    return None, None


def _kept(args, axes, output):
    """Element-wise operations keep the axis of their first tensor argument of the same rank."""
    for value, axis in zip(args, axes):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            value = value[0]
        if isinstance(value, torch.Tensor) and value.ndim == output.ndim and axis is not None:
            return axis
    return None


def _dims(args, kwargs, start=1, key="dims"):
    dims = kwargs.get(key, args[start:])
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    return [int(d) for d in dims]


def _permute(axis, source, args, kwargs, output):
    dims = [d % source.ndim for d in _dims(args, kwargs)]
    return dims.index(axis) if axis in dims else None


def _transpose(axis, source, args, kwargs, output):
    first, second = (int(d) % source.ndim for d in (*args[1:3], *kwargs.values())[:2])
    return second if axis == first else first if axis == second else axis


def _movedim(axis, source, args, kwargs, output):
    sources = args[1] if len(args) > 1 else kwargs.get("source")
    destinations = args[2] if len(args) > 2 else kwargs.get("destination")
    sources = [s % source.ndim for s in (sources if isinstance(sources, (list, tuple)) else [sources])]
    destinations = [
        d % source.ndim for d in (destinations if isinstance(destinations, (list, tuple)) else [destinations])
    ]
    order = [d for d in range(source.ndim) if d not in sources]
    for position, dimension in sorted(zip(destinations, sources)):
        order.insert(position, dimension)
    return order.index(axis)


def _flatten(axis, source, args, kwargs, output):
    start = int(kwargs.get("start_dim", args[1] if len(args) > 1 else 0)) % max(source.ndim, 1)
    end = int(kwargs.get("end_dim", args[2] if len(args) > 2 else -1)) % max(source.ndim, 1)
    if axis < start:
        return axis
    return axis - (end - start) if axis > end else start


def _reshape(axis, source, args, kwargs, output):
    """The output dimension with the channel axis's size and the same number of elements before it, if any."""
    before = 1
    for size in source.shape[:axis]:
        before *= size
    count = 1
    for dimension, size in enumerate(output.shape):
        if count == before and size == source.shape[axis]:
            return dimension
        count *= size
    return None


def _unsqueeze(axis, source, args, kwargs, output):
    dim = int(kwargs.get("dim", args[1])) % output.ndim
    return axis + 1 if dim <= axis else axis


def _squeeze(axis, source, args, kwargs, output):
    if output.ndim == source.ndim:
        return axis
    dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
    removed = [d for d in range(source.ndim) if source.shape[d] == 1] if dims is None else _listed(dims, source)
    return None if axis in removed else axis - sum(1 for d in removed if d < axis)


def _listed(dims, source):
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    return [int(d) % source.ndim for d in dims]


def _reduce(axis, source, args, kwargs, output):
    if output.ndim == source.ndim:
        return axis
    dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dims is None:
        return None
    removed = _listed(dims, source)
    return None if axis in removed else axis - sum(1 for d in removed if d < axis)


def _getitem(axis, source, args, kwargs, output):
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    if any(isinstance(i, torch.Tensor) for i in index):
        return None
    explicit = sum(1 for i in index if i is not None and i is not Ellipsis)
    position, dimension = 0, 0
    for item in index:
        if item is Ellipsis:
            skipped = source.ndim - explicit
            if dimension <= axis < dimension + skipped:
                return position + axis - dimension
            position, dimension = position + skipped, dimension + skipped
        elif item is None:
            position += 1
        elif isinstance(item, int):
            if dimension == axis:
                return None
            dimension += 1
        else:
            if dimension == axis:
                return position
            position, dimension = position + 1, dimension + 1
    return position + axis - dimension


def _stack(axis, source, args, kwargs, output):
    dim = int(kwargs.get("dim", args[1] if len(args) > 1 else 0)) % output.ndim
    return axis + 1 if dim <= axis else axis


_MOVES = {
    "permute": _permute,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "swapdims": _transpose,
    "movedim": _movedim,
    "moveaxis": _movedim,
    "flatten": _flatten,
    "reshape": _reshape,
    "view": _reshape,
    "unsqueeze": _unsqueeze,
    "squeeze": _squeeze,
    "sum": _reduce,
    "mean": _reduce,
    "amax": _reduce,
    "amin": _reduce,
    "getitem": _getitem,
    "stack": _stack,
}
