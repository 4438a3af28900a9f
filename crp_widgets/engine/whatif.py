"""What-if analyses: concept insertion and replacement sweeps, switching channels off (CRP paper Sec. 4.2, A.7).

:func:`insertion_curve` blends a donor's activations into target samples inside a region, for a sweep of
``alpha`` in [0, 1] (Eq. 27-28), or a spatially averaged "clean" donor (replacement, Eq. 29), and records the class
outputs and the relevance of the most changing channels against ``alpha`` (Fig. 21, A.18-A.20): every (alpha,
sample) pair is one row of one batched forward and backward pass. :func:`switch_off` compares a prediction and its
heatmap before and after switching channels off or scaling them (Sec. 4.1, Fig. 22, A.21). Both are thin layers
over :mod:`crp_widgets.engine.interventions` and :meth:`CRP.edited`.
"""

import dataclasses

import torch

from .errors import CRPError, check_count
from .interventions import Blend, Scale, layer_mask

__all__ = ["InsertionCurve", "SwitchOff", "insertion_curve", "switch_off"]


@dataclasses.dataclass
class InsertionCurve:
    """Class outputs and channel relevance against the blending degree ``alpha`` (Fig. 21).

    Attributes
    ----------
    layer : str
        The edited layer.
    alphas : torch.Tensor
        ``[A]``, the blending degrees.
    outputs : torch.Tensor
        ``[A, N, K]``: the model output (logits, all ``K`` classes) of each of the ``N`` target samples per alpha.
    target : object
        The class whose relevance is tracked (``None`` when no relevance was computed).
    relevance : dict[str, torch.Tensor]
        Per tracked layer (the edited one, and the one above if asked), ``[A, N, C]``: the relevance of every
        channel for ``target`` (Eq. 10), per alpha and sample.
    tracked : dict[str, torch.Tensor]
        Per tracked layer, the indices of its most changing channels (largest change of the mean relevance over
        the samples against the first alpha), most changing first.
    averaged : bool
        Whether the donor was averaged over space (replacement, Eq. 29) rather than inserted (Eq. 27-28).
    """

    layer: str
    alphas: object
    outputs: object
    target: object
    relevance: dict
    tracked: dict
    averaged: bool

    @property
    def output_mean(self):
        """``[A, K]``: the mean output over the target samples."""
        return self.outputs.mean(dim=1)

    @property
    def output_std(self):
        """``[A, K]``: the standard deviation of the output over the target samples (zero for one sample)."""
        return self.outputs.std(dim=1, unbiased=False)

    def channel_curves(self, layer=None):
        """The tracked channels of ``layer`` (default: the edited one) and their relevance against alpha.

        Returns
        -------
        channels : torch.Tensor
            ``[k]`` channel indices.
        mean, std : torch.Tensor
            ``[A, k]``: the mean and the standard deviation of their relevance over the target samples.
        """
        layer = self.layer if layer is None else layer
        if layer not in self.relevance:
            raise CRPError(f"layer {layer!r} was not tracked; tracked: {', '.join(self.relevance) or 'none'}")
        values = self.relevance[layer][:, :, self.tracked[layer]]
        return self.tracked[layer], values.mean(dim=1), values.std(dim=1, unbiased=False)


@dataclasses.dataclass
class SwitchOff:
    """A prediction and its explanation before and after scaling channels (Sec. 4.1, Fig. 22 right).

    Attributes
    ----------
    layer : str
        The edited layer.
    factors : dict[int, float]
        ``{channel: factor}``: 0 switches a channel off.
    target : int
        The explained class (the prediction before the edit unless given).
    before, after : Attribution
        :meth:`CRP.attribute` for ``target`` on the unedited and the edited model (prediction, heatmap, relevance
        of ``layer``).
    """

    layer: str
    factors: dict
    target: int
    before: object
    after: object


def _factors(channels, factor):
    if isinstance(channels, dict):
        return {int(c): float(f) for c, f in channels.items()}
    if isinstance(channels, int):
        channels = [channels]
    try:
        return {int(c): float(factor) for c in channels}
    except TypeError:
        raise CRPError(
            f"channels must be a channel index, a list of channels or a dict {{channel: factor}}, "
            f"got {type(channels).__name__}"
        ) from None


def switch_off(crp, x, layer, channels, factor=0.0, target=None):
    """Switch ``channels`` of ``layer`` off (or scale them by ``factor``) and compare prediction and heatmap.

    Parameters
    ----------
    crp : CRP
        The engine.
    x : torch.Tensor
        One sample (or a batch).
    layer : str
        The layer whose channels are edited.
    channels : int, Sequence[int] or dict[int, float]
        The channels, or ``{channel: factor}``.
    factor : float
        The factor for listed channels: 0 switches them off (Sec. 4.1), 2 doubles them.
    target : int, optional
        The explained class; default: the prediction before the edit (so both heatmaps explain the same class).

    Returns
    -------
    SwitchOff
    """
    factors = _factors(channels, factor)
    before_output = crp.predict(x)
    if target is None:
        target = int(before_output.reshape(-1, before_output.shape[-1])[0].argmax())
    before = crp.attribute(x, target, record=[layer])
    with crp.edited({layer: Scale(factors)}):
        after = crp.attribute(x, target, record=[layer])
    return SwitchOff(layer, factors, target, before, after)


def _alphas(alphas):
    alphas = torch.as_tensor(alphas, dtype=torch.float32).flatten()
    if not len(alphas) or not bool(((alphas >= 0) & (alphas <= 1)).all()):
        raise CRPError(f"alphas must be a non-empty list of values in [0, 1], got {alphas.tolist()}")
    return alphas


def _layer_masks(mask, count, spatial, image_shape):
    """The input mask(s) ``[H, W]`` or ``[N, H, W]`` brought to the layer grid: ``[N, *S]`` or ``None``."""
    if mask is None:
        return None
    if not spatial:
        raise CRPError("the layer has no spatial grid (e.g. a Linear layer): give mask=None to blend everywhere")
    mask = torch.as_tensor(mask)
    if mask.ndim == len(image_shape):
        mask = mask.unsqueeze(0).expand(count, *mask.shape)
    if mask.ndim != len(image_shape) + 1 or tuple(mask.shape[1:]) != tuple(image_shape) or len(mask) != count:
        raise CRPError(
            f"the mask has shape {list(mask.shape)}; expected the input's spatial shape {list(image_shape)} (one "
            f"region for all targets) or [{count}, {', '.join(map(str, image_shape))}] (one per target sample)"
        )
    return torch.stack([layer_mask(m.bool(), spatial) for m in mask])


def _next_layer(crp, x, layer):
    infos = crp.layers(x)
    names = [info.name for info in infos]
    if layer not in names or names.index(layer) == len(names) - 1:
        raise CRPError(f"layer {layer!r} has no explainable layer above it; layers: {', '.join(names)}")
    return names[names.index(layer) + 1]


def insertion_curve(
    crp,
    target_x,
    donor_x,
    layer,
    mask=None,
    alphas=tuple(i / 10 for i in range(11)),
    channels=None,
    averaged=False,
    track=5,
    target_classes=None,
    upper=None,
    donor_mask=None,
    batch_size=64,
    progress=None,
):
    """Blend a donor's concept into target samples for a sweep of ``alpha`` (Sec. 4.2, Eq. 27-29, Fig. 21).

    At ``layer``, each target's activations become ``Z + alpha M o (Z_donor - Z)`` (Eq. 28) with ``M`` the input
    ``mask`` brought to the layer's grid (:func:`~crp_widgets.engine.interventions.layer_mask`); ``alpha = 1`` is the
    insertion of Eq. 27. With ``averaged`` the donor's activations are first averaged over space (inside
    ``donor_mask`` if given): the replacement by a "clean" concept of Eq. 29.

    Parameters
    ----------
    crp : CRP
        The engine.
    target_x : torch.Tensor
        One target sample or a batch of ``N`` (Fig. 21 averages over many).
    donor_x : torch.Tensor
        One donor sample (the one showing the concept, or the clean one for a replacement).
    layer : str
        The edited layer.
    mask : array-like, optional
        Boolean input region ``[H, W]`` (the donor's concept, for an insertion) or ``[N, H, W]`` (one per target,
        e.g. the concept to replace in each); default: everywhere.
    alphas : Sequence[float]
        Blending degrees in [0, 1].
    channels : Sequence[int], optional
        Blend only these channels of ``layer`` (default: all).
    averaged : bool
        Replace by the spatially averaged donor (Eq. 29) instead of inserting the donor's activations (Eq. 27).
    track : int
        How many of the most changing channels to track per layer; 0 computes only the outputs (plain forward
        passes, no relevance).
    target_classes : int or list[int], optional
        The class whose relevance is tracked; default: the class whose mean output changes most between
        ``alpha = 0`` and ``alpha = 1``.
    upper : str or bool, optional
        Also track a layer above: its name, or ``True`` for the next explainable layer (A.18).
    donor_mask : array-like, optional
        With ``averaged``: average the donor only inside this input region ``[H, W]`` (e.g. its background).
    batch_size : int
        Rows (alpha, sample) per forward and backward pass.
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch; raise from it (e.g. a cancellation) to stop.

    Returns
    -------
    InsertionCurve
    """
    alphas = _alphas(alphas)
    check_count(track, "track must be a non-negative number of channels", minimum=0)
    layer = crp.validate_layer(layer)
    batch, _ = crp.validate_input(target_x)
    donor, _ = crp.validate_input(donor_x)
    if len(donor) != 1:
        raise CRPError(f"the donor must be one sample; got a batch of {len(donor)}")
    _, found = crp.evaluate(donor, record=[layer])
    layout = crp.layout(layer)
    donor_acts = layout.to_grid(found[layer])[0]  # channels first, on the layer's grid
    count, image_shape = len(batch), tuple(batch.shape[2:])
    spatial = layout.grid
    masks = _layer_masks(mask, count, spatial, image_shape)
    if averaged:
        region = None if donor_mask is None else _layer_masks(donor_mask, 1, spatial, image_shape)[0]
        edit_donor = Blend.averaged(donor_acts, donor_mask=region).donor
    else:
        if donor_mask is not None:
            raise CRPError("donor_mask selects where the donor is averaged: give it with averaged=True")
        edit_donor = donor_acts

    rows = len(alphas) * count
    row_alpha = alphas.repeat_interleave(count)  # row r = (alpha r // N, sample r % N)
    row_x = batch.repeat(len(alphas), *[1] * (batch.ndim - 1))
    row_mask = None if masks is None else masks.repeat(len(alphas), *[1] * (masks.ndim - 1))

    def edits(start, stop):
        mask_rows = None if row_mask is None else row_mask[start:stop]
        return {layer: Blend(edit_donor, mask_rows, alpha=row_alpha[start:stop], channels=channels)}

    chunks = [(start, min(start + max(1, int(batch_size)), rows)) for start in range(0, rows, max(1, int(batch_size)))]
    target = target_classes

    def report(index):
        if progress is not None:
            progress(index + 1, len(chunks))

    if track == 0:
        outputs = []
        for index, (a, b) in enumerate(chunks):
            outputs.append(crp.evaluate(row_x[a:b], edits(a, b))[0])
            report(index)
        outputs = torch.cat(outputs)
        outputs = outputs.reshape(len(alphas), count, -1).cpu()
        return InsertionCurve(layer, alphas, outputs, None, {}, {}, bool(averaged))

    recorded = [layer]
    if upper:
        recorded.append(_next_layer(crp, batch[:1], layer) if upper is True else crp.validate_layer(upper))
    if target is None:
        ends = torch.tensor([0.0, 1.0]).repeat_interleave(count)
        end_mask = None if masks is None else masks.repeat(2, *[1] * (masks.ndim - 1))
        end_x = batch.repeat(2, *[1] * (batch.ndim - 1))
        ends_out, _ = crp.evaluate(end_x, {layer: Blend(edit_donor, end_mask, alpha=ends, channels=channels)})
        change = ends_out[count:].mean(dim=0) - ends_out[:count].mean(dim=0)
        target = int(change.abs().argmax())
    outputs, relevance = [], {name: [] for name in recorded}
    for index, (start, stop) in enumerate(chunks):
        with crp.edited(edits(start, stop)):
            result = crp.attribute(row_x[start:stop], target, record=recorded)
        outputs.append(result.prediction)
        for name in recorded:
            relevance[name].append(result.relevance[name])
        report(index)
    outputs = torch.cat(outputs).reshape(len(alphas), count, -1).cpu()
    relevance = {name: torch.cat(values).reshape(len(alphas), count, -1).cpu() for name, values in relevance.items()}
    tracked = {}
    for name, values in relevance.items():
        mean = values.mean(dim=1)
        change = (mean - mean[:1]).abs().amax(dim=0)
        tracked[name] = torch.argsort(change, descending=True)[:track]
    return InsertionCurve(layer, alphas, outputs, target, relevance, tracked, bool(averaged))
