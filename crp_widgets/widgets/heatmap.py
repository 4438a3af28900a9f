"""A relevance heatmap drawn over its image, with an opacity slider."""

import pathlib

import anywidget
import numpy as np
import torch
import traitlets

from ..render.buffers import array_buffer
from ..render.images import as_heatmap, encode_png, image_to_uint8

__all__ = ["HeatmapView"]

_STATIC = pathlib.Path(__file__).parent.parent / "static"

ArrayLike = torch.Tensor | np.ndarray


class HeatmapView(anywidget.AnyWidget):
    """Show an image with a relevance heatmap overlaid.

    The image travels as PNG bytes, the heatmap as raw ``float32`` bytes; the front end colours the heatmap with
    the paper's convention (normalised by its maximum absolute value, ``bwr`` colormap) and blends it over the
    image with weight ``opacity``.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray, optional
        RGB image ``[3, H, W]`` or ``[H, W, 3]`` in [0, 1] (or ``uint8``).
    heatmap : torch.Tensor or numpy.ndarray, optional
        Relevance map ``[H, W]`` of the image's size.
    caption : str, optional
        Text shown under the picture.
    opacity : float, optional
        Weight of the heatmap colour in [0, 1].
    **kwargs
        Passed to :class:`anywidget.AnyWidget`.

    Attributes
    ----------
    opacity : float
        Weight of the heatmap colour; the slider in the front end sets it.
    caption : str
        Text shown under the picture.
    error : str
        A message shown inside the widget while non-empty.
    """

    _esm = _STATIC / "heatmap.js"
    _css = _STATIC / "heatmap.css"

    image_png = traitlets.Bytes(b"").tag(sync=True)
    heatmap_data = traitlets.Bytes(b"").tag(sync=True)
    heatmap_meta = traitlets.Dict().tag(sync=True)
    opacity = traitlets.Float(0.5, min=0.0, max=1.0).tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        image: ArrayLike | None = None,
        heatmap: ArrayLike | None = None,
        caption: str = "",
        opacity: float = 0.5,
        **kwargs: object,
    ) -> None:
        super().__init__(caption=caption, opacity=opacity, **kwargs)
        self._image: np.ndarray | None = None
        self._heatmap: np.ndarray | None = None
        self.update(image=image, heatmap=heatmap)

    @property
    def image(self) -> np.ndarray | None:
        """numpy.ndarray or None: The image shown, as ``uint8`` ``[H, W, 3]``."""
        return self._image

    @image.setter
    def image(self, value: ArrayLike | None) -> None:
        self.update(image=value, heatmap=self._heatmap)

    @property
    def heatmap(self) -> np.ndarray | None:
        """numpy.ndarray or None: The relevance map shown, as ``float32`` ``[H, W]``."""
        return self._heatmap

    @heatmap.setter
    def heatmap(self, value: ArrayLike | None) -> None:
        self.update(image=self._image, heatmap=value)

    def update(self, image: ArrayLike | None, heatmap: ArrayLike | None) -> None:
        """Replace image and heatmap together (needed when both change size).

        Parameters
        ----------
        image : torch.Tensor or numpy.ndarray or None
            RGB image ``[3, H, W]`` or ``[H, W, 3]``; None shows no image.
        heatmap : torch.Tensor or numpy.ndarray or None
            Relevance map ``[H, W]``; None shows no heatmap.

        Raises
        ------
        ValueError
            If a shape is not accepted or the heatmap's size differs from the image's.
        """
        pixels = None if image is None else image_to_uint8(image)
        values = None if heatmap is None else as_heatmap(heatmap)
        if pixels is not None and values is not None and pixels.shape[:2] != values.shape:
            raise ValueError(
                f"heatmap size {list(values.shape)} differs from image size {list(pixels.shape[:2])} ([H, W]); "
                "use update(image=..., heatmap=...) to replace both at once"
            )
        data, meta = (b"", {}) if values is None else array_buffer(values)
        self._image, self._heatmap = pixels, values
        with self.hold_sync():
            self.image_png = b"" if pixels is None else encode_png(pixels)
            self.heatmap_data = data
            self.heatmap_meta = meta
