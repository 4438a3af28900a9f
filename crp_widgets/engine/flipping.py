"""How many concepts carry a decision (CRP paper Sec. 4.1, Fig. 19, A.16, A.17).

:func:`relevance_distribution` ranks a layer's channels by relevance and counts how many of them hold 85, 90 and 95 %
of the (positive) relevance; :func:`filter_flipping` switches the channels off in order of relevance and records
the explained output relative to its initial value ("filter flipping", after pixel flipping); :func:`layer_shares`
gives the share of the explained output's relevance each layer receives, which differs between layers of residual
networks (A.17). All edited passes of a flipping experiment run as batched forward passes with one row of
per-sample channel factors (:class:`~crp_widgets.engine.interventions.Scale`) per step.
"""

import dataclasses

import torch

from .crp import target_mask
from .errors import CRPError, check_count
from .interventions import Edit, Scale

__all__ = [
    "ORDERS",
    "QUANTILES",
    "FlippingCurve",
    "LayerShares",
    "RelevanceDistribution",
    "filter_flipping",
    "flip_steps",
    "layer_shares",
    "relevance_distribution",
]

QUANTILES = (0.85, 0.90, 0.95)  # the fractions of Fig. 19 and A.16
ORDERS = ("most", "least", "random")
_BACKWARD_BATCH = 16  # samples per recorded forward and backward pass (their graphs hold the memory)


@dataclasses.dataclass
class RelevanceDistribution:
    """How a layer's relevance distributes over its channels (Fig. 19 left and center, A.16).

    Every sample's channel relevance (Eq. 10) is divided by the sum of its positive channel relevances and sorted in
    descending order; ``shares`` averages these ranked shares over the samples. The cumulative curve sums the
    positive ranked shares: it reaches 1 at the last channel with positive relevance.

    Attributes
    ----------
    layer : str
        The layer.
    relevance : torch.Tensor
        ``[N, C]`` channel relevance of every sample (signed, Eq. 10).
    targets : torch.Tensor
        ``[N]`` the explained class of every sample.
    order : torch.Tensor
        ``[N, C]`` every sample's channels by descending relevance.
    ranked : torch.Tensor
        ``[N, C]`` every sample's ranked shares (signed, relative to its sum of positive relevance).
    shares, shares_std : torch.Tensor
        ``[C]`` mean and standard deviation over the samples of the ranked shares (Fig. 19 left).
    cumulative, cumulative_std : torch.Tensor
        ``[C]`` mean and standard deviation of the cumulative positive shares: entry ``k - 1`` is the fraction of
        the positive relevance held by the ``k`` most relevant channels (Fig. 19 center).
    counts : dict[float, int]
        Channels needed for 85 / 90 / 95 % of the positive relevance on the mean cumulative curve (the markers of
        Fig. 19 center).
    sample_counts : dict[float, torch.Tensor]
        The same count for every sample, ``[N]`` each.
    """

    layer: str
    relevance: object
    targets: object
    order: object
    ranked: object
    shares: object
    shares_std: object
    cumulative: object
    cumulative_std: object
    counts: dict
    sample_counts: dict

    @property
    def channels(self):
        """The layer's channel count."""
        return int(self.relevance.shape[1])


@dataclasses.dataclass
class FlippingCurve:
    """The explained output while a layer's channels are switched off in one order (Sec. 4.1, Fig. 19 right).

    Attributes
    ----------
    layer : str
        The layer.
    order : str
        ``"most"`` (most relevant first), ``"least"`` (least relevant first) or ``"random"``.
    steps : torch.Tensor
        ``[S]`` the number of channels switched off at each step (0 is the unedited model).
    channels : torch.Tensor
        ``[R, C]`` the order in which each row's channels are switched off.
    samples : torch.Tensor
        ``[R]`` the sample of each row (``repeats`` rows per sample for random orders).
    targets : torch.Tensor
        ``[R]`` the explained class of each row.
    initial : torch.Tensor
        ``[R]`` the explained output (logit) of the unedited model.
    output : torch.Tensor
        ``[R, S]`` the explained output after each step.
    relative : torch.Tensor
        ``[R, S]`` ``output / initial``.
    mean, std, sem : torch.Tensor
        ``[S]`` mean, standard deviation and standard error of the mean of ``relative`` over the rows.
    drops : dict[float, int or None]
        For 85 / 90 / 95 %: the fewest channels switched off after which the mean relative output has fallen by
        that fraction (to 15 / 10 / 5 %), or ``None`` if it never does.
    """

    layer: str
    order: str
    steps: object
    channels: object
    samples: object
    targets: object
    initial: object
    output: object
    relative: object
    mean: object
    std: object
    sem: object
    drops: dict


@dataclasses.dataclass
class LayerShares:
    """The share of the explained output's relevance every layer receives (A.17).

    Attributes
    ----------
    layers : list[str]
        The layers, in forward order.
    total : torch.Tensor
        ``[N, L]`` every sample's summed relevance at each layer's output.
    output : torch.Tensor
        ``[N]`` the relevance the backward pass starts with: the explained output's value (A.3).
    per_sample : torch.Tensor
        ``[N, L]`` ``total / output``.
    shares, std : torch.Tensor
        ``[L]`` mean and standard deviation over the samples.
    targets : torch.Tensor
        ``[N]`` the explained class of every sample.
    """

    layers: list
    total: object
    output: object
    per_sample: object
    shares: object
    std: object
    targets: object

    def top(self, k=None):
        """The layers by descending mean share, as ``[(layer, share), ...]``."""
        order = torch.argsort(self.shares, descending=True)[: None if k is None else int(k)]
        return [(self.layers[int(i)], float(self.shares[i])) for i in order]


# ------------------------------------------------------------------------------------------------------------ helpers


def _batch(crp, x):
    """``x`` as a validated batch ``[N, ...]``."""
    batch, _ = crp.validate_input(x)
    return batch


def _targets(target, logits):
    """A ``[N, K]`` 0/1 selection of the explained output(s): the prediction by default, else like :class:`CRP`."""
    if target is not None:
        return target_mask(logits, target)
    select = torch.zeros_like(logits)
    select[torch.arange(len(logits)), logits.argmax(dim=1)] = 1
    return select


def _explained(select):
    """One class per row for CRP (the first selected), or the selection itself when rows select several."""
    if bool((select.sum(dim=1) == 1).all()):
        return select.argmax(dim=1)
    return [int(c) for c in torch.nonzero(select[0]).flatten()]


def _logits(crp, batch, batch_size=64):
    """The logits of plain forward passes of ``batch``, in chunks."""
    outputs = []
    for start in range(0, len(batch), batch_size):
        output, _ = crp.evaluate(batch[start : start + batch_size])
        if output.ndim != 2:
            raise CRPError(f"the model output has shape {tuple(output.shape)}; expected [B, classes]")
        outputs.append(output)
    return torch.cat(outputs)


def _channel_relevance(crp, batch, layer, select, batch_size):
    """``[N, C]`` relevance of every channel of ``layer`` (Eq. 10) for the selected outputs, in chunks."""
    rows = []
    explained = _explained(select)
    for start in range(0, len(batch), batch_size):
        part = slice(start, start + batch_size)
        target = explained[part] if isinstance(explained, torch.Tensor) else explained
        result = crp.attribute(batch[part], target=target, record=[layer])
        rows.append(result.relevance[layer].detach())
    relevance = torch.cat(rows)
    if relevance.ndim != 2:
        raise CRPError(f"layer {layer!r} has output shape {tuple(relevance.shape[1:])}; expected channels")
    return relevance


def _layer(crp, layer):
    if not isinstance(layer, str):
        raise CRPError(f"layer must be a layer name (str), got {type(layer).__name__}; valid: {crp.layer_names}")
    return crp.validate_layer(layer)


def _positive_fractions(relevance):
    """Every row's relevance divided by its sum of positive relevance (0 where there is none)."""
    positive = relevance.clamp(min=0).sum(dim=1, keepdim=True)
    return torch.where(positive > 0, relevance / positive.clamp(min=1e-30), torch.zeros_like(relevance))


def _needed(cumulative, fraction):
    """Channels needed to reach ``fraction`` on cumulative curves ``[..., C]`` (C where they never do)."""
    reached = cumulative >= fraction - 1e-6
    first = torch.argmax(reached.to(torch.int8), dim=-1) + 1
    return torch.where(reached.any(dim=-1), first, torch.full_like(first, cumulative.shape[-1]))


def _std(values):
    return values.std(dim=0, unbiased=False) if len(values) > 1 else torch.zeros_like(values[0])


# ------------------------------------------------------------------------------------------------------- public API


def relevance_distribution(crp, x, layer, target=None, batch_size=16):
    """Relevance of ``layer``'s channels, ranked, and how many channels hold 85 / 90 / 95 % of it (Fig. 19, A.16).

    Each sample's channel relevance (Eq. 10) is divided by the sum of its *positive* channel relevances (as the
    paper scales it) and sorted descending. The cumulative curve sums the positive shares only, so it rises to 1;
    contradicting (negative) channels sit at the end of the ranking and do not count towards the fractions.

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    x : torch.Tensor
        One sample or a batch (the results average over it).
    layer : str
        The layer.
    target : int, list[int], torch.Tensor or None
        The explained class(es): one class, classes explained together, one class per sample, or ``None`` for each
        sample's prediction.
    batch_size : int
        Samples per backward pass.

    Returns
    -------
    RelevanceDistribution
    """
    layer = _layer(crp, layer)
    batch = _batch(crp, x)
    select = _targets(target, _logits(crp, batch, batch_size=batch_size))
    relevance = _channel_relevance(crp, batch, layer, select, batch_size)
    return _distribution(layer, relevance, select)


def _distribution(layer, relevance, select):
    ranked, order = torch.sort(_positive_fractions(relevance), dim=1, descending=True, stable=True)
    cumulative = ranked.clamp(min=0).cumsum(dim=1)
    mean_cumulative = cumulative.mean(dim=0)
    return RelevanceDistribution(
        layer=layer,
        relevance=relevance,
        targets=select.argmax(dim=1),
        order=order,
        ranked=ranked,
        shares=ranked.mean(dim=0),
        shares_std=_std(ranked),
        cumulative=mean_cumulative,
        cumulative_std=_std(cumulative),
        counts={q: int(_needed(mean_cumulative, q)) for q in QUANTILES},
        sample_counts={q: _needed(cumulative, q) for q in QUANTILES},
    )


def flip_steps(channels, n=None):
    """Numbers of channels to switch off: all of ``0 .. channels``, or about ``n + 1`` of them for large layers.

    With ``n`` smaller than ``channels``, the first and last ``n // 4`` counts are all kept and the others are spaced
    geometrically towards the middle from both ends: the curves change fastest at the ends (the few most relevant
    channels, Fig. 19 right, and the last few when the least relevant go first).

    Parameters
    ----------
    channels : int
        The layer's channel count.
    n : int, optional
        About how many steps.

    Returns
    -------
    list[int]
    """
    channels = int(channels)
    if n is None or int(n) >= channels:
        return list(range(channels + 1))
    n = int(n)
    if n < 2:
        raise CRPError(f"steps must be at least 2 (an int asks for about that many steps), got {n}")
    edge = max(1, n // 4)
    half = channels / 2
    points = max(1, (n - 2 * edge) // 2)
    ratio = (half / edge) ** (1 / points)
    counts = set(range(edge + 1)) | set(range(channels - edge, channels + 1))
    for i in range(1, points + 1):
        value = edge * ratio**i
        counts |= {round(value), round(channels - value)}
    return sorted(counts)


def _steps(steps, channels):
    if steps is None or (isinstance(steps, int) and not isinstance(steps, bool)):
        return flip_steps(channels, steps)
    try:
        counts = sorted({int(s) for s in steps})
    except (TypeError, ValueError):
        raise CRPError(
            f"steps must be None (every count), an int (about that many steps) or a sequence of channel counts; "
            f"got {steps!r}"
        ) from None
    if not counts or counts[0] < 0 or counts[-1] > channels:
        raise CRPError(f"steps must be channel counts from 0 to {channels} (the layer's channels), got {steps!r}")
    return counts


def _orders(order):
    orders = [order] if isinstance(order, str) else list(order) if isinstance(order, (list, tuple)) else None
    if not orders or any(o not in ORDERS for o in orders):
        raise CRPError(f"order must be one of {', '.join(map(repr, ORDERS))} or a list of them, got {order!r}")
    return orders


class _Rows(Edit):
    """Row ``i`` of the output: the layer's activation of sample ``samples[i]`` with channel factors ``factors[i]``.

    The layers below run once per sample, and the rows of all its steps start at the layer (Sec. 4.1).
    """

    def __init__(self, samples, factors):
        self.samples, self.scale = samples, Scale(factors)

    def __call__(self, activation, layout):
        """Repeat every sample's activation for its rows and scale each row's channels."""
        return self.scale(activation[self.samples], layout)

    def key(self):
        """The rows' samples and factors, as a hashable value."""
        return ("rows", tuple(self.samples.tolist()), self.scale.key())


def _edited_outputs(crp, batch, layer, rows, factors, select, initial, batch_size, share_lower, progress=None):
    """The explained output of every row (sample ``rows[i]`` with channel factors ``factors[i]``), in chunks.

    With ``share_lower``, each chunk runs the layers below ``layer`` once per sample (:class:`_Rows`), which is
    valid where nothing from below the layer reaches the layers above it except through it. One unedited row per
    sample is added and must reproduce the initial output; otherwise (e.g. a residual connection around the layer
    with several samples in a chunk) every row runs the whole model (a per-sample
    :class:`~crp_widgets.engine.interventions.Scale`).
    """
    if share_lower:
        count = len(batch)
        every = torch.cat([rows, torch.arange(count, device=rows.device)])
        factors_and_checks = torch.cat([factors, torch.ones(count, factors.shape[1], dtype=factors.dtype,
                                                            device=factors.device)])  # fmt: skip
        try:
            outputs = _run_rows(crp, batch, layer, every, factors_and_checks, select, batch_size, True, progress)
        except Exception:  # the model's graph does not allow it: whole passes below
            outputs = None
        if outputs is not None:
            checks = outputs[len(rows) :]
            tolerance = 1e-5 * max(1.0, float(initial.abs().max()))
            if torch.allclose(checks, initial, rtol=1e-4, atol=tolerance):
                return outputs[: len(rows)]
    return _run_rows(crp, batch, layer, rows, factors, select, batch_size, False, progress)


def _run_rows(crp, batch, layer, rows, factors, select, batch_size, shared, progress=None):
    edited = torch.empty(len(rows), dtype=select.dtype, device=select.device)
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        index = rows[part]
        if shared:
            unique, local = torch.unique(index, return_inverse=True)
            output, _ = crp.evaluate(batch[unique], {layer: _Rows(local, factors[part])})
            if output.shape[0] != len(index):
                raise CRPError(f"the model's output has {output.shape[0]} rows for {len(index)} edited rows")
        else:
            output, _ = crp.evaluate(batch[index], {layer: Scale(factors[part])})
        edited[part] = (output * select[index]).sum(dim=1)
        if progress is not None:
            progress(min(start + batch_size, len(rows)), len(rows))
    return edited


def filter_flipping(
    crp,
    x,
    layer,
    target=None,
    order="most",
    steps=None,
    seed=0,
    repeats=1,
    min_probability=None,
    batch_size=64,
    share_lower=True,
    progress=None,
):
    """Switch ``layer``'s channels off in order of relevance and record the explained output (Sec. 4.1, Fig. 19).

    Every sample's channels are ranked by its own relevance (Eq. 10); after switching off the first ``k`` channels of
    the ranking (activations set to zero) for every ``k`` in ``steps``, the model is evaluated again and the
    explained output (the logit of the explained class) is recorded relative to its initial value. All rows
    (samples x orders x steps) run as batched plain forward passes (``crp.evaluate``) of ``batch_size`` rows, each
    with its own channel factors (per-sample :class:`~crp_widgets.engine.interventions.Scale`); the layers below
    ``layer`` run once per sample (``share_lower``).

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    x : torch.Tensor
        One sample or a batch.
    layer : str
        The layer whose channels are switched off.
    target : int, list[int], torch.Tensor or None
        The explained class(es) (see :func:`relevance_distribution`); ``None``: each sample's prediction.
    order : str or Sequence[str]
        ``"most"`` relevant first, ``"least"`` relevant first (contradicting channels first: the output often rises),
        ``"random"``, or a list of these (one relevance pass for all; returns a dict).
    steps : None, int or Sequence[int]
        Numbers of channels to switch off: every count ``0 .. C`` (default), about ``steps`` counts
        (:func:`flip_steps`), or the counts themselves (e.g. ``[0, 1, 2, 4, ..., C]`` for large layers).
    seed : int
        Seed of the random orders.
    repeats : int
        Random orders per sample.
    min_probability : float, optional
        Keep only samples whose softmax probability of the explained class exceeds this (the paper uses 0.5, so that
        the channels encode meaningful information).
    batch_size : int
        Rows per forward pass (bounds the memory).
    share_lower : bool
        Run the layers below ``layer`` once per sample and start the rows of all steps at the layer (a sample's
        activations below the edit do not change). An unedited check row per sample must reproduce the model's
        output; where it does not, or the model cannot run so (a residual connection around the layer with several
        samples at once), every row runs the whole model, as with ``False``.
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch of edited rows; raise from it to stop.

    Returns
    -------
    FlippingCurve or dict[str, FlippingCurve]
        One curve for one order; a dict by order for a list.
    """
    orders = _orders(order)
    layer = _layer(crp, layer)
    check_count(repeats, "repeats must be a positive int (random orders per sample)")
    batch = _batch(crp, x)
    logits = _logits(crp, batch, batch_size=batch_size)
    select = _targets(target, logits)
    samples = torch.arange(len(batch))
    if min_probability is not None:
        probability = (torch.softmax(logits, dim=1) * select).sum(dim=1)
        samples = torch.nonzero(probability > float(min_probability)).flatten()
        if not len(samples):
            raise CRPError(
                f"no sample is predicted with a probability above {min_probability} for the explained class "
                f"(highest: {float(probability.max()):.3f}); lower min_probability or explain other samples"
            )
        batch, logits, select = batch[samples], logits[samples], select[samples]
    relevance = _channel_relevance(crp, batch, layer, select, min(batch_size, _BACKWARD_BATCH))
    channels = relevance.shape[1]
    counts = _steps(steps, channels)
    initial = (logits * select).sum(dim=1)
    generator = torch.Generator().manual_seed(int(seed))
    rankings = {}
    for name in orders:
        if name == "most":
            rankings[name] = (torch.argsort(relevance, dim=1, descending=True, stable=True), 1)
        elif name == "least":
            rankings[name] = (torch.argsort(relevance, dim=1, stable=True), 1)
        else:
            perms = [torch.randperm(channels, generator=generator) for _ in range(len(batch) * repeats)]
            rankings[name] = (torch.stack(perms), repeats)
    # One row per (order, ranking row, step): channel c is off at step k when its rank is below k.
    step_tensor = torch.tensor(counts)
    factors, rows, spans = [], [], {}
    for name, (ranking, times) in rankings.items():
        rank = torch.empty_like(ranking)
        rank.scatter_(1, ranking, torch.arange(channels).expand_as(ranking).contiguous())
        keep = (rank[:, None, :] >= step_tensor[None, :, None]).to(batch.dtype)  # [R, S, C]
        source = torch.arange(len(batch)).repeat_interleave(times)
        start = sum(len(f) for f in factors)
        factors.append(keep.reshape(-1, channels))
        rows.append(source.repeat_interleave(len(counts)))
        spans[name] = (start, len(ranking), ranking, source)
    factors, rows = torch.cat(factors).to(batch.device), torch.cat(rows).to(batch.device)
    edited = _edited_outputs(crp, batch, layer, rows, factors, select, initial, batch_size, share_lower, progress)
    results = {}
    for name, (start, count, ranking, source) in spans.items():
        output = edited[start : start + count * len(counts)].reshape(count, len(counts)).cpu()
        first = initial[source].cpu()
        relative = output / torch.where(first.abs() > 1e-12, first, torch.full_like(first, 1e-12))[:, None]
        mean = relative.mean(dim=0)
        std = _std(relative)
        drops = {}
        for q in QUANTILES:
            below = torch.nonzero(mean <= 1 - q + 1e-9).flatten()
            drops[q] = int(counts[int(below[0])]) if len(below) else None
        results[name] = FlippingCurve(
            layer=layer,
            order=name,
            steps=step_tensor,
            channels=ranking,
            samples=samples[source],
            targets=select.argmax(dim=1)[source].cpu(),
            initial=first,
            output=output,
            relative=relative,
            mean=mean,
            std=std,
            sem=std / max(count, 1) ** 0.5 if count > 1 else torch.zeros_like(std),
            drops=drops,
        )
    return results[orders[0]] if isinstance(order, str) else results


def layer_shares(crp, x, target=None, layers=None, batch_size=16):
    """The share of the explained output's relevance every layer receives (A.17, Sec. 4.1).

    A layer's share is its summed relevance (over channels and positions, at its output) divided by the relevance
    the backward pass starts with, the explained output's value (A.3). In a plain feed-forward network every layer
    receives (nearly) all of it; in a residual network the shortcut connections carry part of it past a block's
    layers, so layers inside blocks receive different shares, and the relevance of parallel branches adds up to that
    of the block (conservation).

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    x : torch.Tensor
        One sample or a batch (shares are averaged over it).
    target : int, list[int], torch.Tensor or None
        The explained class(es); ``None``: each sample's prediction.
    layers : Sequence[str], optional
        Layer (or block) names; default: every explainable layer the forward pass calls once.
    batch_size : int
        Samples per backward pass.

    Returns
    -------
    LayerShares
    """
    batch = _batch(crp, x)
    if layers is None:
        names = [info.name for info in crp.layers(batch[:batch_size])]
    else:
        if isinstance(layers, str):
            raise CRPError(f"layers must be a list of layer names, got the string {layers!r}")
        names = [_layer(crp, name) for name in layers]
        if not names:
            raise CRPError("layers is empty; give layer names, or None for every explainable layer")
    logits = _logits(crp, batch, batch_size=batch_size)
    select = _targets(target, logits)
    explained = _explained(select)
    totals = []
    for start in range(0, len(batch), batch_size):
        part = slice(start, start + batch_size)
        result = crp.attribute(
            batch[part], target=explained[part] if isinstance(explained, torch.Tensor) else explained, record=names
        )
        totals.append(torch.stack([result.relevance[name].sum(dim=1) for name in names], dim=1))
    total = torch.cat(totals).cpu()
    output = (logits * select).sum(dim=1).cpu()
    per_sample = total / torch.where(output.abs() > 1e-12, output, torch.full_like(output, 1e-12))[:, None]
    forward, _ = crp.forward_pass(batch[:batch_size])
    ordered = forward.layer_order(names)
    index = [names.index(name) for name in ordered]
    total, per_sample = total[:, index], per_sample[:, index]
    return LayerShares(
        layers=ordered,
        total=total,
        output=output,
        per_sample=per_sample,
        shares=per_sample.mean(dim=0),
        std=_std(per_sample),
        targets=select.argmax(dim=1).cpu(),
    )
