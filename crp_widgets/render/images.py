"""Images and heatmaps as ``uint8`` pixels and PNG bytes.

Images are accepted as torch tensors or numpy arrays, channels first ``[3, H, W]`` (torch's convention) or channels
last ``[H, W, 3]``, optionally with a leading batch dimension of 1, with float values in [0, 1] or ``uint8`` values.
A first dimension of 3 is read as channels first.
Heatmaps are ``[H, W]`` relevance maps, optionally with a leading batch dimension of 1.
"""

import io

import numpy as np
import torch
from PIL import Image

from .colormap import bwr_uint8, to_uint8

__all__ = ["as_heatmap", "encode_png", "heatmap_to_rgb", "image_to_uint8", "overlay"]

_RANGE_TOLERANCE = 1e-3


def _to_numpy(array: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        return tensor.numpy()
    if isinstance(array, np.ndarray):
        return array
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray; got {type(array).__name__}")


def _drop_batch(array: np.ndarray, ndim: int) -> np.ndarray:
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        return array[0]
    return array


def image_to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert an RGB image to ``uint8`` pixels, channels last.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        ``[3, H, W]`` or ``[H, W, 3]`` (optionally ``[1, ...]``), float in [0, 1] or ``uint8``.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``[H, W, 3]``.

    Raises
    ------
    ValueError
        If the shape is not one of the accepted ones, or float values lie outside [0, 1] or are not finite.
    TypeError
        If the image is not a tensor or array, or has a dtype other than float or ``uint8``.
    """
    pixels = _drop_batch(_to_numpy(image, "image"), 3)
    if pixels.ndim == 3 and pixels.shape[0] == 3:
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or 0 in pixels.shape:
        raise ValueError(
            "image must have shape [3, H, W] or [H, W, 3] (optionally with a leading batch dimension of 1); "
            f"got shape {list(np.shape(image))}"
        )
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise TypeError(f"image must be float with values in [0, 1] or uint8; got dtype {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"image values must lie in [0, 1]; got values in [{low:.4g}, {high:.4g}] "
            "(undo the input normalisation before displaying the image)"
        )
    return to_uint8(pixels)


def as_heatmap(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """Validate a heatmap and return it as a finite ``float32`` array ``[H, W]``.

    Parameters
    ----------
    heatmap : torch.Tensor or numpy.ndarray
        Relevance map ``[H, W]`` (optionally ``[1, H, W]``).

    Returns
    -------
    numpy.ndarray
        C-contiguous ``float32`` array of shape ``[H, W]``.

    Raises
    ------
    ValueError
        If the shape is not ``[H, W]`` or the values are not finite.
    TypeError
        If the heatmap is not a tensor or array.
    """
    values = _drop_batch(_to_numpy(heatmap, "heatmap"), 2)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(
            "heatmap must have shape [H, W] (optionally with a leading batch dimension of 1); "
            f"got shape {list(np.shape(heatmap))}"
        )
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("heatmap contains NaN or infinite values")
    return values


def heatmap_to_rgb(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """Colour a heatmap with the paper's convention (normalised by its maximum absolute value, ``bwr``).

    Parameters
    ----------
    heatmap : torch.Tensor or numpy.ndarray
        Relevance map ``[H, W]`` (optionally ``[1, H, W]``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``[H, W, 3]``.
    """
    return bwr_uint8(as_heatmap(heatmap))


def overlay(image: torch.Tensor | np.ndarray, heatmap: torch.Tensor | np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Draw a heatmap over an image: each pixel's relevance covers it with its sign's colour, by its size.

    The relevance is normalised by its maximum absolute value (``v`` in [-1, 1], A.3.1) and shown in the pure colour
    of its sign (red supports, blue contradicts: the hues of the paper's ``bwr`` map) with weight
    ``w = min(1, 2 * opacity * |v|)``; the pixel is ``(1 - w) * image + w * colour``, rounded half up. Pixels without
    relevance show the image as it is; at the default opacity 0.5 the weight is ``|v|``. ``|v|`` and the sign are
    read from the ``bwr`` colour (:func:`heatmap_to_rgb`), as ``js/lib/blend.ts`` does, so both give the same bytes.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        RGB image as accepted by :func:`image_to_uint8`.
    heatmap : torch.Tensor or numpy.ndarray
        Relevance map ``[H, W]`` of the image's height and width.
    opacity : float, optional
        In [0, 1]: 0 shows the image only, 0.5 weighs each colour by its relevance, 1 doubles that weight.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``[H, W, 3]``.

    Raises
    ------
    ValueError
        If the heatmap's size differs from the image's, or the opacity lies outside [0, 1].
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1]; got {opacity}")
    pixels = image_to_uint8(image)
    colours = heatmap_to_rgb(heatmap)
    if colours.shape != pixels.shape:
        raise ValueError(
            f"heatmap size {list(colours.shape[:2])} differs from image size {list(pixels.shape[:2])} ([H, W])"
        )
    smallest = colours.min(axis=-1).astype(np.float64)
    weight = np.minimum(1.0, 2.0 * opacity * (255.0 - smallest) / 255.0)[..., None]
    red = colours[..., 0] >= colours[..., 2]
    pure = np.where(red[..., None], np.array([255.0, 0.0, 0.0]), np.array([0.0, 0.0, 255.0]))
    blended = (1.0 - weight) * pixels.astype(np.float64) + weight * pure
    return np.floor(blended + 0.5).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode ``uint8`` pixels as PNG.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``uint8`` array ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).

    Returns
    -------
    bytes
        The PNG file's bytes.

    Raises
    ------
    ValueError
        If the array is not ``uint8`` or has another shape.
    """
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8; got dtype {pixels.dtype}")
    grey = pixels.ndim == 2
    if not (grey or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))) or 0 in pixels.shape:
        raise ValueError(f"PNG pixels must have shape [H, W], [H, W, 3] or [H, W, 4]; got shape {list(pixels.shape)}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()
