"""Views of a channel's reference samples (CRP paper Sec. 2.3.4, 2.3.5, Fig. 8).

For each reference: the full sample; the sample cropped to the receptive field of the channel's most relevant (or
most active) neuron; the CRP heatmap conditioned on that neuron of the channel, initialised from relevance (for the
sample's class, or a chosen one) or from the channel's activation; and the crop masked where the Gaussian-smoothed
heatmap stays below a threshold (40 % of its maximum by default). Views are cached by everything that determines
them. Works for images ``[C, H, W]`` and 1-D signals ``[C, L]``.
"""

import collections
import dataclasses
import math

import torch

from .crp import target_mask
from .errors import CRPError
from .receptive import bounding_box


@dataclasses.dataclass
class ReferenceView:
    """One reference sample, seen through its channel.

    Attributes
    ----------
    reference : Reference
        Where it comes from and its maximisation value.
    sample : torch.Tensor
        The whole sample (``[C, H, W]`` or ``[C, L]``).
    heatmap : torch.Tensor
        Heatmap of the whole sample, conditioned on the neuron (``[H, W]`` or ``[L]``).
    box : tuple[int, ...]
        Receptive field of the neuron: ``(top, bottom, left, right)`` or ``(start, end)``.
    crop, crop_heatmap, masked : torch.Tensor
        The sample and the heatmap cut to the receptive field, and the crop masked by the heatmap.
    target : int or None
        The class the relevance was computed for (``None`` when initialised from the activation).
    follows_relevance : bool
        The neuron's receptive field is the whole input (a transformer's token, a global pooling): the crop is the
        bounding box of the heatmap's relevant region instead (Sec. 2.3.5 allows any localisation of the concept).
    """

    reference: object
    sample: torch.Tensor
    heatmap: torch.Tensor
    box: tuple
    crop: torch.Tensor
    crop_heatmap: torch.Tensor
    masked: torch.Tensor
    target: object
    follows_relevance: bool = False


def gaussian_smooth(heatmap, sigma):
    """Smooth a ``[H, W]`` or ``[L]`` heatmap with a Gaussian of ``sigma`` pixels (separable, edges replicated)."""
    if sigma <= 0:
        return heatmap
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=heatmap.dtype, device=heatmap.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    result = heatmap[None, None]
    for dim in range(heatmap.ndim):
        shape = [1, 1] + [1] * heatmap.ndim
        shape[2 + dim] = kernel.numel()
        padding = [0, 0] * heatmap.ndim
        padding[2 * (heatmap.ndim - 1 - dim)] = padding[2 * (heatmap.ndim - 1 - dim) + 1] = radius
        padded = torch.nn.functional.pad(result, padding, mode="replicate")
        conv = torch.nn.functional.conv2d if heatmap.ndim == 2 else torch.nn.functional.conv1d
        result = conv(padded, kernel.reshape(shape))
    return result[0, 0]


def heatmap_mask(heatmap, threshold=0.4, sigma=1.5):
    """Where the smoothed heatmap reaches ``threshold`` times its maximum (Fig. 8, bottom row)."""
    smooth = gaussian_smooth(heatmap, sigma)
    peak = float(smooth.max())
    if peak <= 0:
        return torch.zeros_like(heatmap, dtype=torch.bool)
    return smooth >= threshold * peak


def crop(tensor, box):
    """Cut the last one or two dimensions of ``tensor`` to ``box``."""
    if len(box) == 4:
        return tensor[..., box[0] : box[1], box[2] : box[3]]
    return tensor[..., box[0] : box[1]]


def _native(neuron, axis):
    """A store's neuron ``(channel, *position)`` as an index into one sample's output, channels on ``axis``."""
    index = list(neuron[1:])
    index.insert(axis - 1, neuron[0])
    return tuple(index)


class ReferenceViews:
    """Render reference views of a store's channels (see the module docstring).

    Parameters
    ----------
    crp : CRP
        The model and its rules (the store's model).
    store : Store
        The reference store.
    datasets : dict[str, torch.utils.data.Dataset]
        The datasets named in the store, giving the samples.
    cache_size : int
        How many channel views to keep.
    """

    def __init__(self, crp, store, datasets, cache_size=128):
        missing = [d["name"] for d in store.datasets if d["name"] not in datasets]
        if missing:
            raise CRPError(f"give the datasets named in the store: missing {', '.join(repr(m) for m in missing)}")
        self.crp, self.store, self.datasets = crp, store, datasets
        self._cache = collections.OrderedDict()
        self._cache_size = cache_size

    def _sample(self, reference):
        item = self.datasets[reference.dataset][reference.index]
        x = item[0] if isinstance(item, (tuple, list)) else item
        label = int(item[1]) if isinstance(item, (tuple, list)) and len(item) > 1 else None
        return torch.as_tensor(x), label

    def _target(self, reference, label, prediction):
        """The class a RelMax reference was explained for in the scan (A.3)."""
        mode = next(d["label"] for d in self.store.datasets if d["name"] == reference.dataset)
        if mode == "true" and label is not None:
            return label
        if isinstance(mode, int):
            return mode
        return int(prediction)

    def views(self, layer, channel, mode="relevance", target="sum", k=8, cls=None, init="relevance",
              threshold=0.4, sigma=1.5, background=0.0):  # fmt: skip
        """Views of the ``k`` references of a channel.

        Parameters
        ----------
        mode, target, k, cls
            Which references (see :meth:`Store.references`); ``cls`` also conditions the heatmaps on that class.
        init : {"relevance", "activation"}
            Start the heatmap's backward pass from the relevance for a class (the class the scan used, or ``cls``)
            or from the channel's activation (class-free, Sec. 2.3.5).
        threshold, sigma, background
            Masking: fraction of the smoothed heatmap's maximum, Gaussian width in pixels, value of masked pixels.

        Returns
        -------
        list[ReferenceView]
        """
        if init not in ("relevance", "activation"):
            raise CRPError(f"init must be 'relevance' or 'activation', got {init!r}")
        key = (self.store.manifest.get("tables"), self.store.samples, layer, channel, mode, target, k, cls, init,
               threshold, sigma, background)  # fmt: skip
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        references = self.store.references(layer, channel, mode=mode, target=target, k=k, cls=cls)
        views = self._render(layer, references, cls, init, threshold, sigma, background) if references else []
        self._cache[key] = views
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return views

    def _render(self, layer, references, cls, init, threshold, sigma, background):
        crp = self.crp
        samples, labels = zip(*(self._sample(r) for r in references))
        x = torch.stack(samples)
        forward, _ = crp.forward_pass(x)
        tap = forward.tap(layer)
        neuron_mask = torch.zeros_like(tap.activation)
        indices = [_native(reference.neuron, tap.axis) for reference in references]
        for row, index in enumerate(indices):
            neuron_mask[(row, *index)] = 1
        if init == "activation":
            targets = [None] * len(references)
            start = tap.activation * neuron_mask
        else:
            prediction = forward.output.detach().argmax(dim=1)
            targets = [cls if cls is not None else self._target(r, label, p)
                       for r, label, p in zip(references, labels, prediction)]  # fmt: skip
            grad = forward.output.detach() * target_mask(forward.output, torch.tensor(targets))
            (relevance,) = forward.backward(forward.output, grad, [tap.output])
            start = relevance.detach() * neuron_mask
        (input_relevance,) = forward.backward(tap.site, start, [forward.input])
        input_relevance = input_relevance.detach()
        heatmaps = input_relevance.sum(dim=1) if input_relevance.ndim > 2 else input_relevance
        fields = crp.receptive_fields(layer, indices, x[:1])
        views = []
        for reference, sample, heatmap, field, target in zip(references, x, heatmaps, fields, targets):
            box, follows = field.box, bool(field.mask.all())
            if follows:  # the whole input: crop to where the relevance is
                region = heatmap_mask(heatmap, threshold, sigma)
                box = bounding_box(region) if bool(region.any()) else box
            cut, cut_heatmap = crop(sample, box), crop(heatmap, box)
            keep = heatmap_mask(cut_heatmap, threshold, sigma)
            masked = torch.where(keep, cut, torch.as_tensor(background, dtype=cut.dtype).reshape(-1, *[1] * keep.ndim))
            views.append(ReferenceView(reference, sample, heatmap, box, cut, cut_heatmap, masked, target, follows))
        return views
