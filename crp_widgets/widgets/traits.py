"""Typed traits that own their serialisation to the front end (binary buffers, never base64 in JSON).

``Array`` carries a numpy array as ``{"data": <bytes>, "shape": [...], "dtype": "float32" | "uint8"}``; ipywidgets
sends the bytes as a binary buffer and ``js/lib/codecs.ts`` (``decodeArray``) reads them. ``PNG`` carries an RGB
image (numpy ``uint8 [H, W, 3]``) as PNG bytes. ``PNGList`` carries several (a gallery, a thumbnail page).
"""

import numpy as np
import torch
import traitlets

from ..render.buffers import array_buffer
from ..render.images import encode_png, image_to_uint8


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def array_to_json(value, widget=None):
    """``{"data", "shape", "dtype"}`` for an array (``None`` stays ``None``)."""
    if value is None:
        return None
    data, meta = array_buffer(value)
    return {"data": memoryview(data), **meta}


def array_from_json(value, widget=None):
    """The inverse of :func:`array_to_json` (arrays coming from the front end, e.g. a drawn region)."""
    if value is None:
        return None
    dtype = {"float32": "<f4", "uint8": "u1"}[value["dtype"]]
    return np.frombuffer(bytes(value["data"]), dtype=dtype).reshape(value["shape"]).copy()


class Array(traitlets.TraitType):
    """A numpy array (``float32`` or ``uint8``; tensors are converted) synced as a binary buffer."""

    info_text = "a float32 or uint8 array (numpy or torch)"
    default_value = None

    def __init__(self, dtype="float32", ndim=None, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self.dtype = np.dtype(dtype)
        self.ndim = ndim
        self.tag(sync=True, to_json=array_to_json, from_json=array_from_json)

    def validate(self, obj, value):
        """Convert to a contiguous numpy array of the trait's dtype (booleans become 0/1 for uint8)."""
        if value is None:
            return None
        array = _to_numpy(value)
        if array.dtype == bool and self.dtype == np.uint8:
            array = array.astype(np.uint8)
        if self.ndim is not None and array.ndim != self.ndim:
            self.error(obj, value, info=f"an array of {self.ndim} dimensions, got shape {list(array.shape)}")
        return np.ascontiguousarray(array, dtype=self.dtype)


def png_to_json(value, widget=None):
    """PNG bytes of an ``[H, W, 3]`` ``uint8`` image."""
    return None if value is None else memoryview(encode_png(value))


class PNG(traitlets.TraitType):
    """An RGB image (``[3, H, W]`` or ``[H, W, 3]``, float in [0, 1] or ``uint8``) synced as PNG bytes."""

    info_text = "an RGB image array"
    default_value = None

    def __init__(self, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self.tag(sync=True, to_json=png_to_json)

    def validate(self, obj, value):
        """Convert to ``uint8 [H, W, 3]`` (see :func:`crp_widgets.render.images.image_to_uint8`)."""
        return None if value is None else image_to_uint8(value)


class PNGList(traitlets.TraitType):
    """A list of RGB images synced as a list of PNG bytes."""

    info_text = "a list of RGB image arrays"
    default_value = ()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tag(sync=True, to_json=lambda value, widget=None: [png_to_json(v) for v in value])

    def validate(self, obj, value):
        """Convert every image to ``uint8 [H, W, 3]``."""
        return tuple(image_to_uint8(v) for v in value)
