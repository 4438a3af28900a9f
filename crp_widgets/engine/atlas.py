"""The concept atlas and the concepts of an input region (CRP paper Sec. 3.3, Fig. 15-16, Appendix A.4).

A concept atlas shows *which* concepts are most relevant *where*: the conditional heatmaps of the N most relevant
channels of a layer (Eq. 9) are aggregated inside superpixels into regional relevance scores (Eq. 11, 26); each
superpixel gets the colour of its most relevant concept and a mark of its second most relevant one. Superpixels
whose relevance density (relevance per pixel) stays below a tenth of the maximal density are left out (A.4).
The single-pixel atlas (A.4, Fig. A.9) ranks the concepts per pixel and takes the density from a Gaussian filter.

All N heatmaps come from one :meth:`CRP.conditional_heatmaps` call (a shared forward and backward down to the
layer); the aggregation over superpixels is one scatter-add.
"""

import dataclasses

import numpy as np
import torch
from skimage.segmentation import slic

from .errors import CRPError, check_count
from .references import gaussian_smooth

PAPER_DENSITY_SIGMA = 4.7  # A.4: Gaussian density filter of the single-pixel atlas, for 224 x 224 images
PAPER_IMAGE_SIZE = 224


@dataclasses.dataclass
class Atlas:
    r"""A concept atlas of one sample (Sec. 3.3, Fig. 15).

    Attributes
    ----------
    layer : str
        The layer whose channels are the concepts.
    channels : list[int]
        The N concepts: the layer's most relevant channels, most relevant first (Eq. 10).
    channel_relevance : torch.Tensor
        ``[N]``, their relevance in the layer (Eq. 10).
    channel_share : torch.Tensor
        ``[N]``, that relevance divided by the layer's total.
    heatmaps : torch.Tensor
        ``[N, H, W]``, their conditional heatmaps (Eq. 9).
    segments : torch.Tensor
        ``[H, W]`` superpixel label of every pixel, ``0 .. S-1`` (in the single-pixel atlas, the pixel's index).
    relevance : torch.Tensor
        ``[S, N]``, relevance of each concept inside each superpixel, :math:`R_{I_k}(x|\theta_c)` (Eq. 11, 26).
    area : torch.Tensor
        ``[S]``, pixels per superpixel.
    density : torch.Tensor
        ``[S]``, relevance density: the N concepts' relevance per pixel of the superpixel (A.4); in the
        single-pixel atlas, their summed heatmap smoothed with a Gaussian.
    threshold : float
        The density below which a superpixel stays uncoloured.
    ranking : torch.Tensor
        ``[S, N]``, positions into ``channels`` sorted by descending relevance per superpixel, :math:`B_k` (Eq. 26).
    first, second : torch.Tensor
        ``[S]``, position into ``channels`` of the most and second most relevant concept (the fill colour and the
        mark); ``-1`` for a superpixel below the threshold, or where that concept's relevance is not positive.
    """

    layer: str
    channels: list
    channel_relevance: torch.Tensor
    channel_share: torch.Tensor
    heatmaps: torch.Tensor
    segments: torch.Tensor
    relevance: torch.Tensor
    area: torch.Tensor
    density: torch.Tensor
    threshold: float
    ranking: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor

    @property
    def pixel_mode(self):
        """Whether this is a single-pixel atlas (A.4, Fig. A.9)."""
        return self.relevance.shape[0] == self.segments.numel()

    def concept_map(self):
        """``[H, W]``: the channel of the most relevant concept at every pixel (``-1`` where uncoloured)."""
        channels = torch.tensor([-1, *self.channels], dtype=torch.int64)
        return channels[self.first + 1][self.segments]


@dataclasses.dataclass
class RegionConcepts:
    """The most relevant concepts inside an input region (Eq. 11-12, Fig. 16).

    Attributes
    ----------
    ranking : RegionRelevance
        Every channel's relevance inside the region, with its share of the layer's (global) and of the region's
        relevance.
    channels : list[int]
        The ``k`` channels most relevant inside the region, most relevant first.
    heatmaps : torch.Tensor
        ``[k, H, W]``, their conditional heatmaps over the whole input (Eq. 9).
    """

    ranking: object
    channels: list
    heatmaps: torch.Tensor


def superpixels(image, n_segments=50, compactness=10.0, sigma=1.0):
    """Superpixels of an image with SLIC (scikit-image), as the atlas's regions of interest (Sec. 3.3).

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        The image as seen by a person: ``[3, H, W]`` or ``[H, W, 3]`` RGB, or ``[H, W]`` grey, values in [0, 1].
    n_segments : int
        The approximate number of superpixels.
    compactness : float
        Balance of colour and space: higher values give squarer superpixels.
    sigma : float
        Width of the Gaussian that smooths the image before segmenting, in pixels.

    Returns
    -------
    torch.Tensor
        ``[H, W]`` int64 labels, consecutive from 0.
    """
    check_count(n_segments, "n_segments must be a positive number of superpixels")
    if not compactness > 0:
        raise CRPError(f"compactness must be positive, got {compactness!r}")
    if not sigma >= 0:
        raise CRPError(f"sigma must be zero or positive, got {sigma!r}")
    pixels = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise CRPError(f"superpixels need an image [3, H, W], [H, W, 3] or [H, W]; got shape {list(np.shape(image))}")
    labels = slic(
        pixels,
        n_segments=n_segments,
        compactness=float(compactness),
        sigma=float(sigma),
        start_label=0,
        channel_axis=-1 if pixels.ndim == 3 else None,
    )
    _, consecutive = np.unique(labels, return_inverse=True)
    return torch.from_numpy(consecutive.reshape(labels.shape).astype(np.int64))


def top_concepts(crp, x, layer, n=5, target=None, conditions=None):
    """The ``n`` most relevant channels of ``layer`` and their conditional heatmaps (Eq. 9-10).

    Parameters
    ----------
    crp : CRP
        The model and its rules.
    x : torch.Tensor
        One sample.
    layer : str
        The layer.
    n : int
        How many concepts.
    target, conditions
        As in :meth:`CRP.conditional_heatmaps` (``None``: class-free, Sec. 2.3.5).

    Returns
    -------
    tuple
        ``(channels, relevance, share, heatmaps)``: ``list[int]``, ``[n]``, ``[n]`` and ``[n, H, W]`` tensors.
    """
    check_count(n, "the number of concepts must be a positive integer")
    ranking = crp.channel_relevance(x, layer, target=target, conditions=conditions)
    order = ranking.order[:n]
    channels = [int(c) for c in order]
    heatmaps = crp.conditional_heatmaps(x, layer, channels, target=target, conditions=conditions)
    if heatmaps.ndim != 3:
        raise CRPError(f"a concept atlas needs images; the input relevance of {layer!r} has shape "
                       f"{tuple(heatmaps.shape[1:])}")  # fmt: skip
    return channels, ranking.relevance[order], ranking.share[order], heatmaps


def assign_concepts(heatmaps, segments=None, threshold=0.1, density_sigma=None):
    """Aggregate conditional heatmaps in superpixels and rank the concepts in each (Eq. 11, 26; A.4).

    Parameters
    ----------
    heatmaps : torch.Tensor
        ``[N, H, W]`` conditional heatmaps of the concepts.
    segments : torch.Tensor or numpy.ndarray, optional
        ``[H, W]`` superpixel labels ``0 .. S-1`` (see :func:`superpixels`); ``None`` for the single-pixel atlas.
    threshold : float
        Superpixels whose relevance density is below ``threshold`` times the maximal density stay uncoloured
        (one tenth by default, A.4).
    density_sigma : float, optional
        Single-pixel atlas only: the Gaussian that turns relevance into a density, in pixels (A.4: 4.7 px for
        224 px images; by default scaled to the image size).

    Returns
    -------
    dict
        The :class:`Atlas` fields ``segments``, ``relevance``, ``area``, ``density``, ``threshold``, ``ranking``,
        ``first`` and ``second``.
    """
    heatmaps = heatmaps.detach().cpu().float()
    concepts, height, width = heatmaps.shape
    if not 0 <= threshold <= 1:
        raise CRPError(f"threshold is a fraction of the maximal relevance density in [0, 1], got {threshold!r}")
    flat = heatmaps.reshape(concepts, -1).T  # [H * W, N]
    if segments is None:
        segments = torch.arange(height * width).reshape(height, width)
        relevance, area = flat, torch.ones(height * width)
        sigma = PAPER_DENSITY_SIGMA * max(height, width) / PAPER_IMAGE_SIZE if density_sigma is None else density_sigma
        density = gaussian_smooth(heatmaps.sum(0), float(sigma)).flatten()
    else:
        segments = torch.as_tensor(np.asarray(segments), dtype=torch.int64)
        if tuple(segments.shape) != (height, width):
            raise CRPError(f"the superpixel labels have shape {tuple(segments.shape)}, the heatmaps {(height, width)}")
        labels = segments.flatten()
        count = int(labels.max()) + 1
        relevance = torch.zeros(count, concepts).index_add_(0, labels, flat)
        area = torch.bincount(labels, minlength=count).float()
        density = relevance.sum(1) / area.clamp(min=1)
    peak = float(density.max())
    level = threshold * peak
    shown = (density >= level) & (area > 0) if peak > 0 else torch.zeros_like(density, dtype=torch.bool)
    ranking = torch.argsort(relevance, dim=1, descending=True, stable=True)
    best = relevance.gather(1, ranking[:, :2])
    first = torch.where(shown & (best[:, 0] > 0), ranking[:, 0], -1)
    second = torch.where(shown & (best[:, 1] > 0), ranking[:, 1], -1) if concepts > 1 else torch.full_like(first, -1)
    return {
        "segments": segments,
        "relevance": relevance,
        "area": area,
        "density": density,
        "threshold": level,
        "ranking": ranking,
        "first": first,
        "second": second,
    }


def concept_atlas(crp, x, layer, n=5, target=None, conditions=None, segments=None, threshold=0.1,
                  density_sigma=None):  # fmt: skip
    """The concept atlas of one sample (Sec. 3.3, Fig. 15; single-pixel atlas A.4, Fig. A.9).

    Parameters
    ----------
    crp : CRP
        The model and its rules.
    x : torch.Tensor
        One sample (an image).
    layer : str
        The layer whose channels are the concepts.
    n : int
        How many of the layer's most relevant channels take part.
    target : int or None
        The explained class (``None``: class-free localisation, Sec. 2.3.5).
    conditions : dict[str, list[int]], optional
        Conditions on other layers (Eq. 8).
    segments : torch.Tensor or numpy.ndarray, optional
        ``[H, W]`` superpixel labels (:func:`superpixels`); ``None`` gives the single-pixel atlas.
    threshold, density_sigma
        See :func:`assign_concepts`.

    Returns
    -------
    Atlas
    """
    channels, relevance, share, heatmaps = top_concepts(crp, x, layer, n, target, conditions)
    assigned = assign_concepts(heatmaps, segments, threshold, density_sigma)
    return Atlas(layer, channels, relevance, share, heatmaps, **assigned)


def region_concepts(crp, x, layer, mask, k=3, target=None, conditions=None):
    """The ``k`` concepts of ``layer`` most relevant inside an input region, with their heatmaps (Eq. 11-12, Fig. 16).

    Parameters
    ----------
    crp : CRP
        The model and its rules.
    x : torch.Tensor
        One sample.
    layer : str
        The layer.
    mask : torch.Tensor or numpy.ndarray
        Boolean region ``[H, W]``.
    k : int
        How many concepts get heatmaps.
    target, conditions
        As in :meth:`CRP.region_relevance`.

    Returns
    -------
    RegionConcepts
    """
    check_count(k, "k must be a positive number of concepts")
    ranking = crp.region_relevance(x, layer, mask, target=target, conditions=conditions)
    channels = [int(c) for c in ranking.order[:k]]
    heatmaps = crp.conditional_heatmaps(x, layer, channels, target=target, conditions=conditions)
    return RegionConcepts(ranking, channels, heatmaps)
