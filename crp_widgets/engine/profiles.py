"""Class and layer relevance profiles, and class-wise network ablation (Islam & Tushar 2021, Sec. IV-B, V-B, V-C).

Per class, the relevance every channel of every layer receives on average, by CRP (Eq. 10 of the CRP paper) or by
Integrated Gradients on the channels (Islam & Tushar 2021, Eq. 2-3): the attribution of the class logit to each
channel's activation ``a``, on the straight path from a zero baseline at that layer,
``IG_k = sum_positions a_k * mean_alpha dF(alpha a)/da_k`` (``steps`` midpoint Riemann terms; completeness:
``sum_k IG_k = F(a) - F(0)`` up to the Riemann error). Aggregated per layer (sum of the channels' absolute scores,
Fig. 4) they give a class x layer map.

Ablation (Sec. V-C, Fig. 5-6) switches off the top or bottom fraction of a layer's channels by a class's score
(at least one channel) and measures the accuracy of every class before and after, in batched forward passes of the
canonized model with one row of :class:`~crp_widgets.engine.interventions.Scale` factors per variant.
"""

import dataclasses

import torch

from .errors import CRPError, check_count
from .interventions import Scale

METHODS = ("crp", "ig")


def _input(item):
    return torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)


def dataset_labels(dataset):
    """The label of every sample: ``dataset.labels`` or ``dataset.targets`` when present, else read item by item."""
    for name in ("labels", "targets"):
        values = getattr(dataset, name, None)
        if values is not None and len(values) == len(dataset):
            return torch.as_tensor(values).long()
    labels = []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise CRPError("class profiles need labelled samples: dataset items must be (input, label)")
        labels.append(int(item[1]))
    return torch.as_tensor(labels, dtype=torch.int64)


def class_samples(dataset, per_class=20, classes=None):
    """The first ``per_class`` samples of each class: ``{class: [indices]}`` (classes without samples left out)."""
    check_count(per_class, "per_class must be a positive number of samples per class")
    labels = dataset_labels(dataset)
    classes = sorted({int(c) for c in labels.tolist()}) if classes is None else [int(c) for c in classes]
    found = {}
    for cls in classes:
        indices = torch.nonzero(labels == cls).flatten()[:per_class].tolist()
        if indices:
            found[cls] = indices
    if not found:
        raise CRPError(f"the dataset has no samples of the classes {classes}")
    return found


def _batch(dataset, indices, device):
    return torch.stack([_input(dataset[i]) for i in indices]).to(device)


def _device(crp):
    return next(iter(crp.model.parameters()), torch.empty(0)).device


def _spatial_sum(tensor, axis):
    axis = axis % tensor.ndim
    dims = [d for d in range(1, tensor.ndim) if d != axis]
    return tensor.sum(dim=dims) if dims else tensor


def channel_integrated_gradients(crp, x, layer, target, steps=16, max_batch=256):
    """Integrated Gradients of the class logit on the channels of ``layer`` (Islam & Tushar 2021, Eq. 2), per sample.

    The baseline is zero at the layer; the path scales the layer's output (of the canonized model) by
    ``alpha = (i + 0.5) / steps``. Attributions are summed over each channel's positions.

    Parameters
    ----------
    x : torch.Tensor
        A batch ``[B, ...]``.
    target : int or torch.Tensor
        The class, or one class per sample.
    steps : int
        Riemann terms (midpoint rule).
    max_batch : int
        Rows per forward pass (steps are split to fit).

    Returns
    -------
    torch.Tensor
        ``[B, C]``.
    """
    layer = crp.validate_layer(layer)
    check_count(steps, "steps must be a positive number of Riemann terms")
    batch = x.shape[0]
    targets = torch.as_tensor(target).flatten().to(x.device)
    targets = targets.expand(batch) if targets.numel() == 1 else targets
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    chunk = max(1, max_batch // batch)
    _, found = crp.evaluate(x, record=[layer])
    activation = found[layer]
    axis = crp.channel_axis(layer) % activation.ndim
    total = None
    for start in range(0, steps, chunk):
        factors = alphas[start : start + chunk].repeat_interleave(batch).to(x.device, activation.dtype)
        rows = len(factors)
        path = Scale(factors[:, None].expand(rows, activation.shape[axis]))
        output, found = crp.evaluate(x.repeat(rows // batch, *[1] * (x.ndim - 1)), {layer: path}, [layer], grad=True)
        logit = output[torch.arange(rows, device=output.device), targets.repeat(rows // batch)].sum()
        (grad,) = torch.autograd.grad(logit, found[layer])
        grad = grad.reshape(-1, batch, *grad.shape[1:]).sum(dim=0)
        total = grad if total is None else total + grad
    return _spatial_sum(activation * total / steps, axis).detach()


@dataclasses.dataclass
class Profiles:
    """Per class, the mean relevance of every channel of every layer, and a class x layer map.

    After Islam & Tushar 2021, Fig. 4.

    Attributes
    ----------
    method : {"crp", "ig"}
        CRP relevance (Eq. 10) or Integrated Gradients on channels (Islam & Tushar 2021, Eq. 2-3).
    layers : list[str]
        The profiled layers (columns of ``layer``).
    classes : list[int]
        The profiled classes (rows).
    channel : dict[str, torch.Tensor]
        Per layer ``[classes, C]``: mean signed score of each channel over the class's samples.
    magnitude : dict[str, torch.Tensor]
        Per layer ``[classes, C]``: mean absolute score (``psi = abs``, Eq. 3).
    layer : torch.Tensor
        ``[classes, layers]``: mean over samples of the layer's summed absolute channel scores.
    samples : dict[int, list[int]]
        The samples of each class.
    """

    method: str
    layers: list
    classes: list
    channel: dict
    magnitude: dict
    layer: torch.Tensor
    samples: dict

    def scores(self, cls, layer, signed=False):
        """``[C]`` scores of the channels of ``layer`` for class ``cls`` (absolute by default, as for ablation)."""
        if cls not in self.classes:
            raise CRPError(f"class {cls!r} was not profiled; profiled classes: {self.classes}")
        if layer not in self.layers:
            raise CRPError(f"layer {layer!r} was not profiled; profiled layers: {', '.join(self.layers)}")
        table = self.channel if signed else self.magnitude
        return table[layer][self.classes.index(cls)]


def class_profiles(
    crp,
    dataset,
    layers,
    method="crp",
    per_class=20,
    classes=None,
    steps=16,
    batch_size=32,
    max_batch=256,
    progress=None,
):
    """Class x layer and class x channel relevance profiles (Islam & Tushar 2021, Sec. IV-B and V-C, Fig. 4).

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    dataset : torch.utils.data.Dataset
        Items ``(input, label)``.
    layers : Sequence[str]
        Layers to profile.
    method : {"crp", "ig"}
        CRP channel relevance for the class (Eq. 10), or channel Integrated Gradients of the class logit.
    per_class : int
        Samples per class (the first ones of each class).
    classes : Sequence[int], optional
        Default: every class present in the labels.
    steps : int
        Riemann terms of Integrated Gradients.
    batch_size : int
        Samples per pass.
    max_batch : int
        Rows per Integrated Gradients pass (its steps are split to fit).
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch; raise from it (e.g. a cancellation) to stop.

    Returns
    -------
    Profiles
    """
    if method not in METHODS:
        raise CRPError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}")
    layers = [crp.validate_layer(name) for name in (layers if not isinstance(layers, str) else [layers])]
    if not layers:
        raise CRPError("give at least one layer to profile")
    samples = class_samples(dataset, per_class, classes)
    device = _device(crp)
    sums, magnitudes, layer_rows = {name: [] for name in layers}, {name: [] for name in layers}, []
    done, total = 0, sum(-(-len(indices) // batch_size) for indices in samples.values())
    for cls, indices in samples.items():
        signed = dict.fromkeys(layers, 0.0)
        absolute = dict.fromkeys(layers, 0.0)
        for start in range(0, len(indices), batch_size):
            x = _batch(dataset, indices[start : start + batch_size], device)
            if method == "crp":
                relevance = crp.attribute(x, target=cls, record=layers).relevance
            else:
                relevance = {name: channel_integrated_gradients(crp, x, name, cls, steps, max_batch) for name in layers}
            for name in layers:
                values = relevance[name].detach().double().cpu()
                signed[name] = signed[name] + values.sum(dim=0)
                absolute[name] = absolute[name] + values.abs().sum(dim=0)
            done += 1
            if progress is not None:
                progress(done, total)
        for name in layers:
            sums[name].append(signed[name] / len(indices))
            magnitudes[name].append(absolute[name] / len(indices))
        layer_rows.append(torch.stack([magnitudes[name][-1].sum() for name in layers]))
    return Profiles(
        method=method,
        layers=layers,
        classes=list(samples),
        channel={name: torch.stack(rows).float() for name, rows in sums.items()},
        magnitude={name: torch.stack(rows).float() for name, rows in magnitudes.items()},
        layer=torch.stack(layer_rows).float(),
        samples=samples,
    )


def ablated_channels(scores, fraction, which="top"):
    """The channels with the highest (``"top"``) or lowest (``"bottom"``) scores: ``max(1, round(fraction C))``."""
    scores = torch.as_tensor(scores).flatten()
    if which not in ("top", "bottom"):
        raise CRPError(f"which must be 'top' or 'bottom', got {which!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise CRPError(f"fraction must lie in (0, 1] (0.01 ablates 1 % of the channels), got {fraction!r}")
    count = max(1, round(fraction * len(scores)))
    order = torch.argsort(scores.double(), descending=which == "top", stable=True)
    return sorted(int(c) for c in order[:count])


@dataclasses.dataclass
class Ablation:
    """Accuracy of every class before and after switching channels off (Islam & Tushar 2021, Sec. V-C, Fig. 5-6).

    Attributes
    ----------
    channels : dict[str, list[int]]
        The channels switched off, per layer.
    fraction : float
        Fraction of each layer's channels.
    which : {"top", "bottom"}
        Highest or lowest scores.
    classes : list[int]
        The evaluated classes.
    before, after : torch.Tensor
        ``[classes]`` accuracy on each class's samples.
    samples : dict[int, list[int]]
        The samples of each class.
    """

    channels: dict
    fraction: float
    which: str
    classes: list
    before: torch.Tensor
    after: torch.Tensor
    samples: dict


def _score_table(layers, scores):
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not isinstance(scores, dict):
        if len(layers) != 1:
            raise CRPError("give scores as {layer: tensor [C]} when ablating several layers")
        scores = {layers[0]: scores}
    missing = [name for name in layers if name not in scores]
    if missing:
        raise CRPError(f"no scores for layer(s) {missing}; give scores as {{layer: tensor [C]}}")
    return layers, {name: torch.as_tensor(scores[name]).flatten() for name in layers}


def ablation_table(crp, dataset, layers, scores, fractions=(0.01, 0.02, 0.03), which=("top", "bottom"),
                   per_class=20, classes=None, batch_size=32, progress=None):  # fmt: skip
    """:func:`ablate` for every ``(which, fraction)`` at once: one batched forward pass per batch of samples.

    ``progress``: called as ``progress(done, total)`` after every batch; raise from it (e.g. a cancellation) to stop.

    Returns
    -------
    list[Ablation]
        In the order ``[(w, f) for w in which for f in fractions]``; they share ``before``.
    """
    layers, scores = _score_table(layers, scores)
    for name in layers:
        crp.validate_layer(name)
    which = [which] if isinstance(which, str) else list(which)
    fractions = [fractions] if isinstance(fractions, (int, float)) else list(fractions)
    variants = [
        (w, f, {name: ablated_channels(scores[name], f, w) for name in layers}) for w in which for f in fractions
    ]
    samples = class_samples(dataset, per_class, classes)
    device = _device(crp)
    factors = {}
    for name in layers:
        rows = torch.ones(len(variants) + 1, len(scores[name]))
        for row, (_, _, channels) in enumerate(variants, start=1):
            rows[row, channels[name]] = 0.0
        factors[name] = rows
    correct = torch.zeros(len(variants) + 1, len(samples))
    done, total = 0, sum(-(-len(indices) // batch_size) for indices in samples.values())
    for column, (cls, indices) in enumerate(samples.items()):
        for start in range(0, len(indices), batch_size):
            x = _batch(dataset, indices[start : start + batch_size], device)
            count = x.shape[0]
            repeated = x.repeat(len(variants) + 1, *[1] * (x.ndim - 1))
            edits = {name: Scale(rows.repeat_interleave(count, dim=0)) for name, rows in factors.items()}
            output, _ = crp.evaluate(repeated, edits)
            predicted = output.argmax(dim=1).reshape(len(variants) + 1, count).cpu()
            correct[:, column] += (predicted == cls).sum(dim=1).float()
            done += 1
            if progress is not None:
                progress(done, total)
    accuracy = correct / torch.tensor([len(indices) for indices in samples.values()], dtype=torch.float32)
    return [
        Ablation(channels, float(f), w, list(samples), accuracy[0], accuracy[row], samples)
        for row, (w, f, channels) in enumerate(variants, start=1)
    ]


def ablate(crp, dataset, layer, scores, fraction=0.01, which="top", per_class=20, classes=None, batch_size=32):
    """Switch off the top or bottom ``fraction`` of ``layer``'s channels by ``scores``; accuracy per class.

    Parameters
    ----------
    crp : CRP
        The model's CRP (the canonized model is evaluated, with :class:`Scale` edits).
    dataset : torch.utils.data.Dataset
        Items ``(input, label)``.
    layer : str or Sequence[str]
        The layer (or layers, with ``scores`` a dict) to ablate.
    scores : torch.Tensor or dict[str, torch.Tensor]
        ``[C]`` channel scores (e.g. ``Profiles.scores(cls, layer)``).
    fraction : float
        Fraction of the channels (at least one channel).
    which : {"top", "bottom"}
        Highest or lowest scores.
    per_class : int
        Samples per class.
    classes : Sequence[int], optional
        Default: every class present.
    batch_size : int
        Samples per pass.

    Returns
    -------
    Ablation
    """
    return ablation_table(crp, dataset, layer, scores, (fraction,), (which,), per_class, classes, batch_size)[0]
