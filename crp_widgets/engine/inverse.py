"""Inverse search across classes (CRP paper Sec. 4.3, Fig. 22-23, A.8).

From "this region of this image is a suspicious artefact" to "these other classes rely on it too":
:func:`suspicious_region` ranks the channels of a layer by their relevance inside the region (Eq. 11-12),
:func:`classes_using` ranks the classes by the mean relevance those channels get over a scanned dataset (the
store's class statistics, Fig. 13, 23), and :func:`switch_off_curve` tests how decisive they are by switching the
top-N channels off one after the other and recording the class confidences (Fig. 22 right).
"""

import dataclasses

import torch

from .errors import CRPError, check_count
from .interventions import Scale

__all__ = ["SuspiciousRegion", "SwitchOffCurve", "classes_using", "suspicious_region", "switch_off_curve"]


@dataclasses.dataclass
class SuspiciousRegion:
    """The channels of a layer most relevant inside an input region (Eq. 11-12).

    Attributes
    ----------
    layer : str
        The layer.
    channels : list[int]
        The ``k`` channels with the most relevance inside the region, most relevant first.
    relevance : list[float]
        Their relevance inside the region.
    share : list[float]
        Their share of the region's relevance (Fig. 16, in parentheses).
    target : int
        The class explained.
    """

    layer: str
    channels: list
    relevance: list
    share: list
    target: int


@dataclasses.dataclass
class SwitchOffCurve:
    """Class confidences while the top channels are switched off one after the other (Fig. 22 right).

    Attributes
    ----------
    layer : str
        The layer.
    channels : list[int]
        Switched off in this order: step ``n`` has ``channels[:n]`` off (step 0 is the unedited model).
    classes : list[int]
        The recorded classes.
    confidence : torch.Tensor
        ``[N + 1, len(classes)]`` softmax probabilities of the classes at each step.
    logits : torch.Tensor
        ``[N + 1, len(classes)]`` the classes' logits at each step.
    """

    layer: str
    channels: list
    classes: list
    confidence: torch.Tensor
    logits: torch.Tensor


def _channel_list(channels, what="channels"):
    channels = [channels] if isinstance(channels, int) and not isinstance(channels, bool) else list(channels)
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) for c in channels):
        raise CRPError(f"{what} must be a non-empty list of channel indices, got {channels!r}")
    return channels


def classes_using(store, layer, channels, k=5):
    """The classes that use a set of channels most: ``[(class, relevance), ...]`` (Sec. 4.3, Fig. 23).

    A channel's use by a class is its mean relevance over the scanned samples of that class (the store's class
    statistics, as :meth:`Store.top_classes`); for several channels (a concept spread over filters, Sec. 2.2) the
    means are summed. Classes never seen in the scan are left out.

    Parameters
    ----------
    store : Store
        A reference store holding ``layer``.
    layer : str
        The layer.
    channels : int or Sequence[int]
        One channel or several.
    k : int
        How many classes.

    Returns
    -------
    list[tuple[int, float]]
        Best first.
    """
    channels = _channel_list(channels)
    for channel in channels:
        store._channel(layer, channel)
    check_count(k, "k must be a positive number of classes")
    means = store.class_relevance(layer)[channels].sum(dim=0)  # [classes], NaN where never seen
    seen = torch.nonzero(torch.isfinite(means)).flatten()
    order = seen[torch.argsort(means[seen], descending=True, stable=True)][:k]
    return [(int(c), float(means[c])) for c in order]


def suspicious_region(crp, x, layer, mask, target=None, k=6):
    """The ``k`` channels of ``layer`` with the most relevance inside an input region (Fig. 22 centre, Eq. 11-12).

    Parameters
    ----------
    crp : CRP
        The model.
    x : torch.Tensor
        One sample.
    layer : str
        The layer.
    mask : torch.Tensor or numpy.ndarray
        Boolean region, shaped like the input's spatial dimensions.
    target : int, optional
        The class explained (default: the prediction).
    k : int
        How many channels.

    Returns
    -------
    SuspiciousRegion
    """
    check_count(k, "k must be a positive number of channels")
    if target is None:
        target = int(crp.predict(x).flatten().argmax())
    region = crp.region_relevance(x, layer, mask, target=target)
    top = region.top(k)
    return SuspiciousRegion(
        layer=region.layer,
        channels=[c for c, *_ in top],
        relevance=[r for _, r, _, _ in top],
        share=[s for *_, s in top],
        target=int(target),
    )


def switch_off_curve(crp, x, layer, channels, classes=None, top=4):
    """Switch ``channels[:n]`` off for ``n = 0 .. N`` and record the class confidences (Fig. 22 right).

    All ``N + 1`` steps run as one batch through :meth:`CRP.evaluate` with per-sample
    :class:`~crp_widgets.engine.interventions.Scale` factors ``[N + 1, C]`` (row ``n`` zeroes the first ``n``
    channels).

    Parameters
    ----------
    crp : CRP
        The model.
    x : torch.Tensor
        One sample.
    layer : str
        The layer.
    channels : Sequence[int]
        Channels in the order they are switched off (e.g. by relevance inside a region).
    classes : Sequence[int], optional
        The classes to record; default: the ``top`` most confident classes of the unedited model (Fig. 22).
    top : int
        How many classes by default.

    Returns
    -------
    SwitchOffCurve
    """
    channels = _channel_list(channels)
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise CRPError(f"switch_off_curve takes one sample ([C, H, W] or [C, L]), got shape {list(x.shape)}")
    output, found = crp.evaluate(x[None], record=[layer])
    width = found[layer].shape[crp.channel_axis(layer) % found[layer].ndim]
    bad = [c for c in channels if not 0 <= c < width]
    if bad:
        raise CRPError(f"channel(s) {bad} out of range: layer {layer!r} has {width} channels (0-{width - 1})")
    logits = output[0]
    if classes is None:
        classes = torch.argsort(logits, descending=True)[: max(1, int(top))].tolist()
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < len(logits)]
    if bad:
        raise CRPError(f"class(es) {bad} out of range: the model has {len(logits)} outputs (0-{len(logits) - 1})")
    steps = len(channels) + 1
    factors = torch.ones(steps, width)
    for n in range(1, steps):
        factors[n:, channels[n - 1]] = 0.0
    output, _ = crp.evaluate(x[None].expand(steps, *x.shape), edits={layer: Scale(factors)})
    output = output.float()
    return SwitchOffCurve(
        layer=layer,
        channels=channels,
        classes=classes,
        confidence=output.softmax(dim=1)[:, classes],
        logits=output[:, classes],
    )
