"""Typed arrays for the front end: raw little-endian bytes plus a JSON description.

A widget sends the bytes in a ``Bytes`` trait and ``{"shape": [...], "dtype": "float32" | "uint8"}`` in a sibling
``Dict`` trait; ``js/lib/codecs.ts`` decodes the pair. There is no header inside the bytes.
"""

import numpy as np

__all__ = ["ArrayMeta", "array_buffer"]

ArrayMeta = dict[str, list[int] | str]

_WIRE_DTYPES = {"float32": np.dtype("<f4"), "uint8": np.dtype("u1")}


def array_buffer(array: np.ndarray) -> tuple[bytes, ArrayMeta]:
    """Serialise an array for the front end.

    Parameters
    ----------
    array : numpy.ndarray
        Floating-point arrays are sent as ``float32``, ``uint8`` arrays as they are.

    Returns
    -------
    tuple of (bytes, dict)
        The C-order little-endian bytes and ``{"shape": [...], "dtype": ...}``.

    Raises
    ------
    TypeError
        If the array is neither floating-point nor ``uint8``.
    """
    if np.issubdtype(array.dtype, np.floating):
        name = "float32"
    elif array.dtype == np.uint8:
        name = "uint8"
    else:
        raise TypeError(f"only floating-point and uint8 arrays can be sent to the front end; got dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[name]).tobytes()
    return data, {"shape": [int(n) for n in array.shape], "dtype": name}
