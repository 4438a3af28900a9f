"""The heatmap colour convention of Achtibat et al. 2023 (Appendix A.3.1).

Relevance is divided by its maximum absolute value, so it lies in [-1, 1], and coloured with the ``bwr``
colormap: blue ``(0, 0, 1)`` at -1, white at 0, red ``(1, 0, 0)`` at +1, linear in between. This is the segment
data of matplotlib's ``bwr``, evaluated exactly rather than through matplotlib's 256-entry lookup table.
The front end implements the same functions in ``js/lib/colormap.ts``; both must give identical bytes.
"""

import numpy as np

__all__ = ["bwr", "bwr_uint8", "normalize", "to_uint8"]


def normalize(relevance: np.ndarray) -> np.ndarray:
    """Divide relevance by its maximum absolute value.

    Parameters
    ----------
    relevance : numpy.ndarray
        Relevance values of any shape; must be finite.

    Returns
    -------
    numpy.ndarray
        Float64 array of the same shape with values in [-1, 1]. All-zero (or empty) input stays zero.

    Raises
    ------
    ValueError
        If the relevance contains NaN or infinite values.
    """
    values = np.asarray(relevance, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("relevance contains NaN or infinite values; only finite values can be coloured")
    peak = np.abs(values).max(initial=0.0)
    if peak == 0.0:
        return np.zeros_like(values)
    return values / peak


def bwr(values: np.ndarray) -> np.ndarray:
    """Colour normalised values with the ``bwr`` colormap.

    Parameters
    ----------
    values : numpy.ndarray
        Values in [-1, 1] of any shape; values outside are clipped.

    Returns
    -------
    numpy.ndarray
        Float64 RGB in [0, 1], shape ``values.shape + (3,)``.
    """
    v = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
    red = np.minimum(1.0, 1.0 + v)
    green = 1.0 - np.abs(v)
    blue = np.minimum(1.0, 1.0 - v)
    return np.stack([red, green, blue], axis=-1)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Convert intensities in [0, 1] to bytes, rounding half up (as ``Math.round`` does in the front end).

    Parameters
    ----------
    values : numpy.ndarray
        Intensities in [0, 1]; values outside are clipped.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the same shape.
    """
    scaled = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * 255.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def bwr_uint8(relevance: np.ndarray) -> np.ndarray:
    """Normalise relevance by its maximum absolute value and colour it with ``bwr``.

    Parameters
    ----------
    relevance : numpy.ndarray
        Finite relevance values of any shape.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB, shape ``relevance.shape + (3,)``.
    """
    return to_uint8(bwr(normalize(relevance)))
