"""1-D signals and their relevance as small line-plot pictures (Achtibat et al. 2023, Sec. 3.5, Fig. 18).

Time series are shown as line plots: one line per input channel, the relevance of each time step as a band of
``bwr`` colours (Appendix A.3.1) under the lines, and the receptive field of a reference's neuron as a shaded
window. Heatmaps of 1-D inputs are drawn as bars from a zero line, each coloured by its normalised relevance.
The pictures are ``uint8 [h, w, 3]`` arrays, encoded to PNG like images (:mod:`crp_widgets.render.images`).
"""

import numpy as np
import torch
from PIL import Image, ImageDraw

from .colormap import bwr_uint8
from .images import heatmap_to_rgb, image_to_uint8, overlay

__all__ = [
    "LINE_COLOURS",
    "heatmap_picture",
    "input_picture",
    "plot_heatmap",
    "plot_signal",
    "signal_display",
    "signal_reference_picture",
]

LINE_COLOURS = ((33, 33, 33), (25, 118, 210), (230, 81, 0), (56, 142, 60), (123, 31, 162), (0, 131, 143))
BACKGROUND = (255, 255, 255)
WINDOW = (255, 236, 179)
WINDOW_EDGE = (255, 160, 0)
AXIS = (189, 189, 189)


def _numpy(values, name):
    array = values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def signal_display(x):
    """Show a 1-D input ``[C, L]`` as it is (line plots need no value range), as float32."""
    return x.detach().float() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float32)


def _x(length, width):
    """Pixel column of each of ``length`` samples across ``width`` pixels."""
    return np.linspace(0.5, width - 0.5, length) if length > 1 else np.full(1, width / 2)


def plot_signal(signal, heatmap=None, window=None, size=(96, 72)):
    """Draw a signal as a line per channel, optionally with its relevance band and a marked window.

    Parameters
    ----------
    signal : torch.Tensor or numpy.ndarray
        ``[C, L]`` (or ``[L]`` for one channel).
    heatmap : torch.Tensor or numpy.ndarray, optional
        Relevance ``[L]``, drawn as a ``bwr`` band along the bottom (normalised by its maximum absolute value).
    window : tuple[int, int], optional
        ``(start, end)`` samples to shade, e.g. a neuron's receptive field (Sec. 2.3.4).
    size : tuple[int, int]
        ``(width, height)`` of the picture in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8 [height, width, 3]``.
    """
    values = _numpy(signal, "signal")
    values = values[None] if values.ndim == 1 else values
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"a signal must have shape [C, L] or [L]; got shape {list(values.shape)}")
    width, height = int(size[0]), int(size[1])
    length = values.shape[1]
    band = max(3, height // 8) if heatmap is not None else 0
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    xs = _x(length, width)
    if window is not None:
        start, end = int(window[0]), int(window[1])
        left = xs[min(max(start, 0), length - 1)] - 0.5 * width / length
        right = xs[min(max(end - 1, 0), length - 1)] + 0.5 * width / length
        draw.rectangle([left, 0, right, height - 1], fill=WINDOW)
        draw.line([(left, 0), (left, height - 1)], fill=WINDOW_EDGE)
        draw.line([(right, 0), (right, height - 1)], fill=WINDOW_EDGE)
    plot = height - band - 2
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    low, high = low - 0.06 * span, high + 0.06 * span
    to_y = lambda v: 1 + (high - v) / (high - low) * (plot - 1)  # noqa: E731
    if low < 0 < high:
        draw.line([(0, to_y(0.0)), (width - 1, to_y(0.0))], fill=AXIS)
    for channel, line in enumerate(values):
        colour = LINE_COLOURS[channel % len(LINE_COLOURS)]
        points = list(zip(xs.tolist(), to_y(line).tolist()))
        draw.line(points if len(points) > 1 else points * 2, fill=colour, width=1)
    pixels = np.asarray(picture).copy()
    if heatmap is not None:
        relevance = _numpy(heatmap, "heatmap").reshape(-1)
        if relevance.shape[0] != length:
            raise ValueError(f"heatmap length {relevance.shape[0]} differs from signal length {length}")
        colours = bwr_uint8(relevance)
        columns = np.clip((np.arange(width) + 0.5) * length / width, 0, length - 1).astype(int)
        pixels[height - band :] = colours[columns][None]
    return pixels


def plot_heatmap(heatmap, size=(96, 72)):
    """Draw a 1-D heatmap ``[L]`` as bars from a zero line, coloured ``bwr`` by their normalised relevance (A.3.1).

    Parameters
    ----------
    heatmap : torch.Tensor or numpy.ndarray
        Relevance ``[L]``.
    size : tuple[int, int]
        ``(width, height)`` of the picture in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8 [height, width, 3]``.
    """
    relevance = _numpy(heatmap, "heatmap")
    if relevance.ndim != 1 or relevance.shape[0] == 0:
        raise ValueError(f"a 1-D heatmap must have shape [L]; got shape {list(relevance.shape)}")
    width, height = int(size[0]), int(size[1])
    length = relevance.shape[0]
    peak = float(np.abs(relevance).max())
    scaled = relevance / peak if peak > 0 else np.zeros_like(relevance)
    colours = bwr_uint8(relevance)
    middle = (height - 1) / 2
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    edges = np.linspace(0, width, length + 1)
    for i in range(length):
        top = middle - scaled[i] * (middle - 1)
        box = [edges[i], min(top, middle), max(edges[i], edges[i + 1] - 1), max(top, middle)]
        draw.rectangle(box, fill=tuple(int(c) for c in colours[i]))
    draw.line([(0, middle), (width - 1, middle)], fill=AXIS)
    return np.asarray(picture).copy()


def input_picture(x, size=(96, 96)):
    """An input as a picture: an RGB image ``[3, H, W]`` as pixels, a signal ``[C, L]`` as a line plot."""
    return plot_signal(x, size=size) if np.ndim(x) == 2 else image_to_uint8(x)


def heatmap_picture(heatmap, signal=None, size=(96, 96), opacity=0.6):
    """A heatmap as a picture in the paper's colours (A.3.1), over its input, for images and 1-D signals alike.

    Parameters
    ----------
    heatmap : torch.Tensor or numpy.ndarray
        ``[H, W]`` (coloured per pixel) or ``[L]``.
    signal : torch.Tensor or numpy.ndarray, optional
        The displayed input. An image ``[3, H, W]`` (or ``[H, W, 3]``) of the heatmap's size is drawn under the
        colours (weight ``opacity``); for a 1-D heatmap, the signal ``[C, L]`` is drawn with the relevance as a band
        under it (Fig. 18). Without it, the colours alone (2-D) or bars (1-D).
    size : tuple[int, int]
        ``(width, height)`` of a 1-D picture.
    opacity : float
        Weight of the colours over an image.

    Returns
    -------
    numpy.ndarray
        ``uint8 [h, w, 3]``.
    """
    if np.ndim(heatmap) != 1:
        if signal is not None and np.ndim(signal) == 3:
            return overlay(signal, heatmap, opacity)
        return heatmap_to_rgb(heatmap)
    return plot_heatmap(heatmap, size) if signal is None else plot_signal(signal, heatmap, size=size)


def signal_reference_picture(display, reference, view, size=(96, 96)):
    """A reference of a 1-D channel as a line plot (Sec. 3.5, Fig. 18; Sec. 2.3.4 for the crop).

    Parameters
    ----------
    display : callable
        Maps the signal ``[C, L]`` to the values to plot (e.g. undoing a normalisation).
    reference : ReferenceView
        The reference (:class:`crp_widgets.engine.references.ReferenceView`).
    view : {"sample", "crop", "heatmap", "masked"}
        The whole signal with the crop's span shaded (the neuron's receptive field, or the relevant region where
        the neuron sees the whole signal) and its relevance band; the crop with its relevance band; the crop's
        heatmap as bars; the crop masked by its heatmap.
    size : tuple[int, int]
        ``(width, height)`` in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8 [height, width, 3]``.
    """
    if view == "sample":
        return plot_signal(display(reference.sample), reference.heatmap, reference.box, size)
    if view == "crop":
        return plot_signal(display(reference.crop), reference.crop_heatmap, size=size)
    if view == "heatmap":
        return plot_heatmap(reference.crop_heatmap, size)
    if view == "masked":
        return plot_signal(display(reference.masked), size=size)
    raise ValueError(f"view must be one of 'sample', 'crop', 'heatmap', 'masked'; got {view!r}")
