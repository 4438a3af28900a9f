"""A user's own input for the explorer: a tensor, a numpy array or a PIL image, made into the model's input.

``explorer.show(image)`` accepts what a user has at hand. Without a ``transform``, a PIL image becomes an RGB (or
grey) float tensor in [0, 1] at the size of the dataset's samples; a numpy array or tensor may be channels-last
(``[H, W, C]``) or ``uint8`` (divided by 255). With a ``transform`` (e.g. torchvision's ``ToTensor`` and
``Normalize``), anything that is not already a tensor or an array goes through it.
"""

import numpy as np
import torch
from PIL import Image

from .validation import StateError

__all__ = ["as_input"]

_CHANNELS = (1, 3, 4)


def _is_pil(value):
    return isinstance(value, Image.Image)


def _channels_first(x, like):
    """``[H, W, C]`` to ``[C, H, W]`` when the last axis looks like colour channels and the first does not."""
    if x.ndim != 3:
        return x
    want = None if like is None or like.ndim != 3 else like.shape[0]
    last, first = x.shape[-1], x.shape[0]
    if (want is not None and last == want and first != want) or (want is None and last in _CHANNELS and first > 4):
        return x.permute(2, 0, 1)
    return x


def _from_pil(image, like):
    """A PIL image as a float tensor ``[C, H, W]`` in [0, 1], resized to the size of ``like`` (when given)."""
    channels = like.shape[0] if like is not None and like.ndim == 3 else 3
    note = ""
    picture = image.convert("L" if channels == 1 else "RGB")
    if like is not None and like.ndim == 3 and tuple(like.shape[1:]) != (picture.height, picture.width):
        height, width = like.shape[1:]
        note = f"resized from {picture.width}x{picture.height} to {width}x{height}, the size of the dataset's samples"
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    x = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())
    return x, note


def as_input(value, transform=None, like=None):
    """Make ``value`` an input tensor for the model.

    Parameters
    ----------
    value : torch.Tensor, numpy.ndarray or PIL.Image.Image
        The user's input, one sample.
    transform : callable, optional
        Applied to anything that is not a tensor or an array (the session's ``transform``).
    like : torch.Tensor, optional
        A sample of the dataset: its channel count and size are what the model was given so far.

    Returns
    -------
    x : torch.Tensor
        The input (float).
    note : str
        What was done to it beyond a plain conversion (a resize), or ``""``.

    Raises
    ------
    StateError
        When the value is none of the accepted kinds or the transform fails, naming the accepted kinds.
    """
    note = ""
    if transform is not None and not isinstance(value, (torch.Tensor, np.ndarray)):
        try:
            value = transform(value)
        except Exception as error:
            raise StateError(f"the session's transform could not convert the {type(value).__name__}: {error}") from None
    if _is_pil(value):
        return _from_pil(value, like)
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise StateError(f"a numpy array of dtype {value.dtype} is not an image; give numbers (float or uint8)")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise StateError(
            f"cannot explain a {type(value).__name__}: give a torch.Tensor, a numpy array or a PIL image "
            "([C, H, W] or [H, W, C]; float in the model's range, or uint8 0-255)"
        )
    x = value.detach()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype == torch.bool or not x.is_floating_point():
        x = x.float()
    x = _channels_first(x, like)
    if like is not None and x.is_floating_point() and like.is_floating_point():
        x = x.to(like.dtype)
    return x, note
