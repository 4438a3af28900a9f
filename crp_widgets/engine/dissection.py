"""Concept labels for channels by Network Dissection (Islam & Tushar 2021, Sec. IV-A, Eq. 1; Bau et al., CVPR 2017).

For every channel k of a layer: the top-quantile level ``T_k`` of its activations over the dataset, such that
``P(a_k > T_k) = quantile`` over all images and positions; each activation map upsampled bilinearly to the masks'
resolution and thresholded into a mask ``M_k(x) = S_k(x) >= T_k``; and for every concept c the intersection over
union accumulated over the dataset, ``IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|``. The channel's
label is the concept with the highest IoU.

Two passes over the data: the first keeps, per channel, only the largest values needed for the quantile (a running
``torch.topk`` buffer: exact, memory ``O(channels x quantile x positions x images)``); the second accumulates the
intersections, activation areas and mask areas. Activations are those of the canonized model, as CRP sees them
(:meth:`CRP.evaluate`).
"""

import dataclasses
import math

import numpy as np
import torch

from .errors import CRPError, check_count


@dataclasses.dataclass
class Labels:
    """Concept labels of the channels of one layer (Islam & Tushar 2021, Eq. 1).

    Attributes
    ----------
    layer : str
        The dissected layer.
    concepts : list[str]
        The concepts seen in the masks (columns of ``iou``), in order of first appearance.
    iou : torch.Tensor
        ``[C, K]`` float64: IoU of every channel with every concept, accumulated over the dataset (Eq. 1).
    thresholds : torch.Tensor
        ``[C]``: the top-quantile level ``T_k`` of each channel's activations.
    quantile : float
        ``P(a_k > T_k)``.
    samples : int
        How many samples were dissected.
    """

    layer: str
    concepts: list
    iou: torch.Tensor
    thresholds: torch.Tensor
    quantile: float
    samples: int

    @property
    def best(self):
        """``[C]`` index into ``concepts`` of each channel's best concept (-1 without any concept)."""
        if not self.concepts:
            return torch.full((self.iou.shape[0],), -1, dtype=torch.int64)
        return self.iou.argmax(dim=1)

    @property
    def best_iou(self):
        """``[C]`` IoU of each channel's best concept (0 without any concept)."""
        if not self.concepts:
            return torch.zeros(self.iou.shape[0], dtype=self.iou.dtype)
        return self.iou.max(dim=1).values

    @property
    def concept(self):
        """Each channel's best concept (``None`` when it overlaps no concept at all)."""
        best, iou = self.best.tolist(), self.best_iou.tolist()
        return [self.concepts[b] if b >= 0 and v > 0 else None for b, v in zip(best, iou)]

    def label(self, channel):
        """``(concept, IoU)`` of one channel."""
        channel = int(channel)
        if not 0 <= channel < self.iou.shape[0]:
            raise CRPError(
                f"channel {channel} is out of range: layer {self.layer!r} has {self.iou.shape[0]} channels "
                f"(valid: 0 to {self.iou.shape[0] - 1})"
            )
        return self.concept[channel], float(self.best_iou[channel])

    def describe(self):
        """JSON-able ``{"layer", "concepts": [best concept or None per channel], "iou": [per channel]}``."""
        return {"layer": self.layer, "concepts": self.concept, "iou": [round(v, 4) for v in self.best_iou.tolist()]}

    def counts(self, min_iou=0.0):
        """How many channels each concept labels (with IoU above ``min_iou``), most first."""
        found = {}
        for concept, iou in zip(self.concept, self.best_iou.tolist()):
            if concept is not None and iou > min_iou:
                found[concept] = found.get(concept, 0) + 1
        return dict(sorted(found.items(), key=lambda item: -item[1]))


def _mask_source(dataset, masks):
    """A function ``index -> {concept: bool [H, W]}`` from ``masks`` or the dataset."""
    if masks is not None:
        if hasattr(masks, "masks") and callable(masks.masks):
            return masks.masks
        if not callable(masks):
            raise CRPError(
                f"masks must be a callable masks(index) -> {{concept: bool [H, W]}} (e.g. demo.masks), got "
                f"{type(masks).__name__}"
            )
        return masks
    if hasattr(dataset, "masks") and callable(dataset.masks):
        return dataset.masks

    def from_items(index):
        item = dataset[index]
        if isinstance(item, (tuple, list)) and len(item) >= 3 and isinstance(item[2], dict):
            return item[2]
        raise CRPError(
            "no concept masks: pass masks=callable(index) -> {concept: bool [H, W]}, give the dataset a masks(index) "
            "method, or let its items be (input, label, {concept: mask})"
        )

    return from_items


def _input(item):
    return torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)


def _batches(indices, size):
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _activations(crp, dataset, layer, batch):
    """``[B, C, *S]`` activations of ``layer`` (channels second) for ``batch``, and the input spatial shape."""
    device = next(iter(crp.model.parameters()), torch.empty(0)).device
    x = torch.stack([_input(dataset[i]) for i in batch]).to(device)
    _, found = crp.evaluate(x, record=[layer])
    return crp.layout(layer).to_grid(found[layer]).float(), tuple(x.shape[2:])


def interpolation_matrix(out, size, device=None):
    """``[out, size]`` weights of linear interpolation from ``size`` to ``out`` points (``align_corners=False``).

    The same weights as ``torch.nn.functional.interpolate(..., mode="bilinear")`` along one axis, edges clamped.
    """
    source = ((torch.arange(out, dtype=torch.float64) + 0.5) * size / out - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    weight = source - low
    matrix = torch.zeros(out, size, dtype=torch.float64)
    matrix[torch.arange(out), low] += 1 - weight
    matrix[torch.arange(out), high] += weight
    return matrix.float().to(device)


def upsample(maps, size):
    """Bilinear (1-D: linear) upsampling of ``[B, C, *S]`` to ``size``, as two matrix products (separable)."""
    if maps.ndim == 3:
        return maps @ interpolation_matrix(size[0], maps.shape[2], maps.device).T
    rows = interpolation_matrix(size[0], maps.shape[2], maps.device)
    columns = interpolation_matrix(size[1], maps.shape[3], maps.device)
    return rows @ (maps @ columns.T)


def _keep_count(total, quantile):
    """Values per channel the quantile needs: ``ceil(r) + 2`` of the largest, ``r = (total - 1) * quantile``."""
    return min(total, math.ceil((total - 1) * quantile) + 2)


def quantile_levels(top, total, quantile):
    """``T_k`` from each channel's largest values ``top`` ``[C, n]`` (descending), as ``numpy.quantile(a, 1 - q)``.

    Linear interpolation between order statistics (numpy's default): with ``r = (total - 1) q`` the level lies
    between the ``floor(r)``-th and ``ceil(r)``-th largest values.
    """
    r = (total - 1) * quantile
    low, high = math.floor(r), math.ceil(r)
    fraction = r - low
    return top[:, low] * (1 - fraction) + top[:, high] * fraction


def dissect(crp, dataset, layer, masks=None, quantile=0.005, batch_size=32, indices=None, channel_chunk=64):
    """Label every channel of ``layer`` with the concept its top activations segment best (Islam & Tushar 2021, Eq. 1).

    Parameters
    ----------
    crp : CRP
        The model's CRP (activations of the canonized model).
    dataset : torch.utils.data.Dataset
        Items ``(input, label)`` (or ``(input, label, masks)``).
    layer : str
        A convolutional layer.
    masks : callable or object with ``masks(index)``, optional
        ``masks(index) -> {concept: bool [H, W]}`` for the concepts present in sample ``index`` (absent concepts
        count as empty masks). Default: ``dataset.masks``, or the third element of each item.
    quantile : float
        ``P(a_k > T_k)``: the fraction of activations above the threshold (0.005 in Network Dissection).
    batch_size : int
        Samples per forward pass.
    indices : Sequence[int], optional
        Samples to dissect (default: all).
    channel_chunk : int
        Channels upsampled at once in the second pass (bounds its memory).

    Returns
    -------
    Labels
    """
    crp.validate_layer(layer)
    if not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise CRPError(f"quantile must lie strictly between 0 and 1 (0.005 in Network Dissection), got {quantile!r}")
    check_count(batch_size, "batch_size must be a positive integer")
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise CRPError("nothing to dissect: the dataset (or the given indices) is empty")
    source = _mask_source(dataset, masks)

    # Pass 1: the largest values of every channel (exact top-quantile level, bounded memory).
    top, total, spatial = None, 0, None
    for batch in _batches(indices, batch_size):
        activation, _ = _activations(crp, dataset, layer, batch)
        if activation.ndim not in (3, 4):
            raise CRPError(
                f"layer {layer!r} has output {list(activation.shape[1:])} per sample; dissection needs a 1-D or 2-D "
                "convolutional layer (channels and spatial axes)"
            )
        spatial = tuple(activation.shape[2:])
        channels = activation.shape[1]
        if top is None:
            total = len(indices) * math.prod(spatial)
            keep = _keep_count(total, quantile)
            top = torch.full((channels, keep), -math.inf, dtype=torch.float32, device=activation.device)
        values = activation.transpose(0, 1).reshape(channels, -1)
        top = torch.topk(torch.cat([top, values], dim=1), top.shape[1], dim=1).values
    thresholds = quantile_levels(top, total, quantile)

    # Pass 2: intersections with every concept, activation areas and mask areas.
    concepts, column = [], {}
    intersection = torch.zeros(len(thresholds), 0, dtype=torch.float64)
    mask_area = torch.zeros(0, dtype=torch.float64)
    active_area = torch.zeros(len(thresholds), dtype=torch.float64)
    level, size = thresholds.reshape(1, -1, *[1] * len(spatial)), None
    for batch in _batches(indices, batch_size):
        activation, shape = _activations(crp, dataset, layer, batch)
        found = [source(i) for i in batch]
        for masks_of in found:
            for name in masks_of:
                if name not in column:
                    column[name] = len(concepts)
                    concepts.append(name)
        if len(concepts) > intersection.shape[1]:
            grow = len(concepts) - intersection.shape[1]
            intersection = torch.cat([intersection, torch.zeros(len(thresholds), grow, dtype=torch.float64)], 1)
            mask_area = torch.cat([mask_area, torch.zeros(grow, dtype=torch.float64)])
        size = _mask_size(found, size or shape)
        labels = torch.zeros(len(batch), math.prod(size), max(1, len(concepts)), dtype=torch.float32)
        for row, masks_of in enumerate(found):
            for name, mask in masks_of.items():
                mask = torch.as_tensor(np.asarray(mask)).bool()
                if tuple(mask.shape) != size:
                    raise CRPError(
                        f"the mask of concept {name!r} for sample {batch[row]} has shape {tuple(mask.shape)}; all "
                        f"masks must share one shape, here {size}"
                    )
                labels[row, :, column[name]] = mask.reshape(-1).float()
        labels = labels.to(activation.device)
        mask_area += labels.sum(dim=(0, 1)).double().cpu()[: len(concepts)]
        for start in range(0, activation.shape[1], channel_chunk):
            part = activation[:, start : start + channel_chunk]
            upsampled = upsample(part, size)
            segmented = (
                (upsampled >= level[:, start : start + channel_chunk]).float().reshape(len(batch), part.shape[1], -1)
            )
            active_area[start : start + part.shape[1]] += segmented.sum(dim=(0, 2)).double().cpu()
            if concepts:
                overlap = torch.bmm(segmented, labels).sum(dim=0).double().cpu()
                intersection[start : start + part.shape[1]] += overlap[:, : len(concepts)]
    union = active_area[:, None] + mask_area[None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    return Labels(layer, concepts, iou, thresholds.cpu(), float(quantile), len(indices))


def _mask_size(found, default):
    """The masks' spatial shape: that of the first mask found, else ``default`` (the input's)."""
    for masks_of in found:
        for mask in masks_of.values():
            return tuple(np.asarray(mask).shape)
    return default


def reference_coverage(crp, store, dataset, layer, masks=None, k=8, channels=None, mode="relevance", dilate=0):
    """Which concept a channel's references show: the share of their relevance inside each concept's mask.

    For every reference (RelMax-sum, Eq. 18; or ActMax-sum) the channel's conditional heatmap (Eq. 9) is computed
    for the class the scan explained (the sample's label; for ActMax from the channel's activation, Sec. 2.3.5);
    its positive relevance is summed inside each concept's mask and over the whole sample.
    Coverage of a concept = relevance inside its masks / all positive relevance, over the channel's ``k``
    references. One batched backward pass per reference sample serves every channel using it.

    Parameters
    ----------
    store : Store
        A reference store (:func:`crp_widgets.scan`) holding ``layer``.
    dataset : torch.utils.data.Dataset
        The scanned dataset.
    masks : callable, optional
        As for :func:`dissect`.
    channels : Sequence[int], optional
        Default: every channel of the layer.
    mode : {"relevance", "activation"}
        RelMax or ActMax references.
    dilate : int
        Grow every mask by this many pixels first (relevance sits on a concept's edges).

    Returns
    -------
    concepts : list[str]
        The columns.
    coverage : torch.Tensor
        ``[len(channels), K]``: share of the references' positive relevance inside each concept's masks.
    """
    source = _mask_source(dataset, masks)
    count = store.layers[layer]["channels"] if layer in store.layers else None
    if count is None:
        raise CRPError(f"layer {layer!r} is not in the reference store; it holds {', '.join(store.layers)}")
    channels = list(range(count)) if channels is None else [int(c) for c in channels]
    users = {}
    for row, channel in enumerate(channels):
        for reference in store.references(layer, channel, mode=mode, k=k):
            users.setdefault(reference.index, []).append(row)
    concepts, column = [], {}
    inside = {}
    totals = torch.zeros(len(channels), dtype=torch.float64)
    for index, rows in users.items():
        item = dataset[index]
        x = _input(item)
        label = int(item[1]) if isinstance(item, (tuple, list)) and len(item) > 1 and mode == "relevance" else None
        heatmaps = crp.conditional_heatmaps(x, layer, [channels[r] for r in rows], target=label).clamp(min=0)
        heatmaps = heatmaps.double().cpu()
        for row, heatmap in zip(rows, heatmaps):
            totals[row] += heatmap.sum()
        for name, mask in source(index).items():
            if name not in column:
                column[name] = len(concepts)
                concepts.append(name)
            mask = torch.as_tensor(np.asarray(mask)).bool()
            if dilate > 0:
                size = 2 * int(dilate) + 1
                pool = torch.nn.functional.max_pool2d if mask.ndim == 2 else torch.nn.functional.max_pool1d
                mask = pool(mask[None, None].float(), size, stride=1, padding=int(dilate))[0, 0] > 0
            for row, heatmap in zip(rows, heatmaps):
                inside[row, column[name]] = inside.get((row, column[name]), 0.0) + float(heatmap[mask].sum())
    coverage = torch.zeros(len(channels), len(concepts), dtype=torch.float64)
    for (row, col), value in inside.items():
        coverage[row, col] = value
    return concepts, coverage / totals.clamp(min=1e-30)[:, None]
