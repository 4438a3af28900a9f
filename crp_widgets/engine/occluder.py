"""Global class importance by attacking: AfI (Wu et al., CVPR 2020, Sec. 3.1-3.2).

A *global feature occluder* ``delta`` is one input perturbation, learned for all images of a class ``y`` at once,
that is subtracted from every image (``x - delta``) and flips the model's decision away from ``y`` (Eq. 4). It is
learned with Adam on Eq. 5: the class logit of the occluded images and of randomly transformed occluded images,
plus an l1 penalty on ``delta``. The activation drop it causes scores every neuron (Eq. 6-7, FIS) and every channel
(Eq. 8, CIS); the CIS-weighted sum of a layer's feature maps is the class's meta-detector (Eq. 9).

The model is used in eval mode and left exactly as found: gradients are taken with ``torch.autograd.grad`` with
respect to ``delta`` only. Activations are those of the canonized model, as CRP sees its layers
(:meth:`CRP.evaluate`), so that AfI's channel importance compares directly with CRP's channel relevance.
"""

import dataclasses
import math
import operator

import torch

from .crp import CRP
from .errors import CRPError, check_count

__all__ = [
    "Agreement",
    "Occluder",
    "Transforms",
    "attack_success_rate",
    "channel_importance",
    "class_relevance",
    "compare_with_crp",
    "feature_importance",
    "learn_occluder",
    "meta_detector",
]


@dataclasses.dataclass(frozen=True)
class Transforms:
    """The random image transformations ``t`` of Eq. 4-5 (Wu et al. 2020, Sec. 4: noise and small rotations).

    Parameters
    ----------
    noise : float
        Uniform noise in ``[-noise, noise]`` added to every input value (the paper: 0.04 for inputs in [-1, 1]).
    rotation : float
        Random rotation within ``[-rotation, rotation]`` degrees (the paper: 5). Images (4-D batches) only.
    shift : float
        Random translation within ``[-shift, shift]`` pixels along each axis. Images only.
    flip : bool
        Mirror each image horizontally with probability 1/2. Images only.
    """

    noise: float = 0.04
    rotation: float = 5.0
    shift: float = 0.0
    flip: bool = False

    def __post_init__(self):
        for name in ("noise", "rotation", "shift"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise CRPError(f"Transforms.{name} must be a finite number >= 0, got {value!r}")

    def __call__(self, x, generator):
        """Transform a batch ``x`` with random draws from ``generator`` (a CPU ``torch.Generator``)."""
        batch = x.shape[0]
        if x.ndim == 4 and (self.rotation or self.shift or self.flip):
            height, width = x.shape[-2:]
            angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(self.rotation)
            shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * self.shift
            mirror = torch.ones(batch)
            if self.flip:
                mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.stack(
                [
                    torch.stack([cos * mirror, -sin, 2 * shift[:, 0] / width], dim=1),
                    torch.stack([sin * mirror, cos, 2 * shift[:, 1] / height], dim=1),
                ],
                dim=1,
            ).to(x.device, x.dtype)
            grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
            x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
        if self.noise:
            x = x + ((torch.rand(x.shape, generator=generator) * 2 - 1) * self.noise).to(x.device, x.dtype)
        return x


@dataclasses.dataclass
class Occluder:
    """A learned global feature occluder ``delta^*`` of class ``cls`` (Eq. 4-5).

    Attributes
    ----------
    delta : torch.Tensor
        The perturbation, one input's shape (e.g. ``[C, H, W]``); the occluded input is ``x - delta``.
    cls : int
        The class it attacks.
    bounds : tuple[float, float] or tuple[torch.Tensor, torch.Tensor] or None
        The valid input range ``x - delta`` is clipped to (Eq. 4, last condition).
    l1 : float
        The weight lambda of the l1 penalty (Eq. 5).
    losses : list[float]
        The objective of Eq. 5 at every step.
    steps : int
        The steps run (fewer than asked when every image was flipped: the constraints of Eq. 4 hold).
    converged : bool
        Whether it stopped because every (transformed) image was flipped.
    success_rate : float
        The attack success rate on the training images when learning stopped (:func:`attack_success_rate`).
    model : torch.nn.Module
        The attacked model.
    """

    delta: torch.Tensor
    cls: int
    bounds: object
    l1: float
    losses: list
    steps: int
    converged: bool
    success_rate: float
    model: torch.nn.Module = dataclasses.field(repr=False)

    def apply(self, x):
        """The occluded input ``x - delta``, clipped to the valid range (Eq. 4)."""
        return _clip(x - self.delta.to(x.device, x.dtype), self.bounds)

    @property
    def norm(self):
        """The mean absolute value of ``delta`` (its l1 norm divided by the input size)."""
        return float(self.delta.abs().mean())


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How AfI channel importance and CRP channel relevance agree on a layer's channels.

    Attributes
    ----------
    spearman : float
        Spearman rank correlation over all channels (ties ranked by their average rank; NaN if one is constant).
    overlap : float
        ``|top-k(importance) & top-k(relevance)| / k``.
    k : int
        The k of the top-k sets.
    shared : list[int]
        The channels in both top-k sets.
    top_importance, top_relevance : list[int]
        The top-k channels of each score, highest first.
    """

    spearman: float
    overlap: float
    k: int
    shared: list
    top_importance: list
    top_relevance: list


def _clip(x, bounds):
    if bounds is None:
        return x
    low, high = bounds
    return torch.maximum(torch.minimum(x, high), low) if isinstance(low, torch.Tensor) else x.clamp(low, high)


def _model(model_or_crp):
    """The CRP that evaluates the model (its own function in eval mode, as CRP sees its layers)."""
    if isinstance(model_or_crp, CRP):
        return model_or_crp
    if isinstance(model_or_crp, torch.nn.Module):
        return CRP(model_or_crp)
    raise CRPError(f"expected a torch.nn.Module or a CRP, got {type(model_or_crp).__name__}")


def _crp(crp):
    if not isinstance(crp, CRP):
        raise CRPError(f"expected a CRP (cw.CRP(model)) to record the layer's activations, got {type(crp).__name__}")
    return crp


def _images(images, crp, role="images"):
    """Validate a batch of inputs ``[N, ...]`` for the model; return it on the model's device."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise CRPError(f"{role} is empty: give a batch [N, C, H, W] of the class's inputs")
        images = torch.stack([torch.as_tensor(image) for image in images])
    x, _ = crp.validate_input(images)
    return x


def _classes(crp, x):
    return crp.evaluate(x[:1])[0].shape[-1]


def _check_class(cls, outputs):
    try:
        index = operator.index(cls) if not isinstance(cls, bool) else None
    except TypeError:
        index = None
    if index is None or not 0 <= index < outputs:
        raise CRPError(f"class {cls!r} is out of range: the model has {outputs} outputs (valid: 0 to {outputs - 1})")
    return index


def _batches(x, batch_size):
    check_count(batch_size, "batch_size must be a positive integer")
    return torch.split(x, batch_size)


def _bounds(bounds, x):
    """Eq. 4's valid input range: ``"images"`` = per-channel min and max of ``x``, a pair, or ``None``."""
    if bounds is None:
        return None
    if isinstance(bounds, str):
        if bounds != "images":
            raise CRPError(f"bounds must be 'images', a pair (low, high) or None, got {bounds!r}")
        dims = [d for d in range(x.ndim) if d != 1]
        shape = [1] * (x.ndim - 1)
        shape[0] = x.shape[1]
        return x.amin(dim=dims).reshape(shape), x.amax(dim=dims).reshape(shape)
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise CRPError(f"bounds must be 'images', a pair (low, high) or None, got {bounds!r}") from None
    if not low < high:
        raise CRPError(f"bounds (low, high) need low < high, got {bounds!r}")
    return low, high


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CRPError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise CRPError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def learn_occluder(
    model_or_crp,
    images,
    cls,
    steps=100,
    lr=0.01,
    l1=100.0,
    transforms=Transforms(),
    bounds="images",
    batch_size=None,
    seed=0,
    callback=None,
):
    """Learn the global feature occluder of class ``cls`` on its images (Wu et al. 2020, Eq. 4-5, Sec. 3.1.1).

    Minimises ``1/N sum_i (Z(x_i - delta)[y] + Z(t(x_i - delta))[y]) + lambda * D(delta)`` (Eq. 5), with ``D``
    the l1 norm divided by the input size (so one ``lambda`` suits any resolution), ``delta`` starting at zero and
    ``x - delta`` clipped to ``bounds``. Adam takes the logit term; the l1 term is applied by its proximal step
    (soft thresholding with Adam's per-input step size), so that inputs the attack does not need stay at zero
    rather than oscillating around it. Stops when every occluded and transformed image is flipped
    (the constraints of Eq. 4 hold) or after ``steps`` steps.

    Parameters
    ----------
    model_or_crp : torch.nn.Module or CRP
        The model (used in eval mode and left as found).
    images : torch.Tensor
        The class's images ``[N, ...]`` (those the model classifies as ``cls``, per Eq. 4).
    cls : int
        The class ``y``.
    steps : int
        Maximum number of Adam steps.
    lr : float
        Adam's learning rate, in input units.
    l1 : float
        lambda of Eq. 5; larger values give smaller occluders.
    transforms : Transforms or None
        The random transformations ``t`` (``None`` drops the second term of Eq. 5, the paper's ablation).
    bounds : "images", tuple[float, float] or None
        The valid input range: ``"images"`` takes each input channel's min and max over ``images``.
    batch_size : int, optional
        Images per step, drawn at random (with ``seed``); all of them by default.
    seed : int
        Seeds the transformations and the batches: the same seed gives the same occluder.
    callback : callable, optional
        ``callback(step, steps, loss)`` after every step (progress); returning ``False`` stops early.

    Returns
    -------
    Occluder

    Notes
    -----
    Eq. 4 also asks that ``t`` keeps the clean predictions (``f(t(x_i)) = f(x_i) = y``); images that break it are not
    dropped here: pass the images the model classifies as ``y``. The attack success rate counts only those.
    """
    crp = _model(model_or_crp)
    x = _images(images, crp)
    cls = _check_class(cls, _classes(crp, x))
    check_count(steps, "steps must be a positive integer")
    lr = _positive("lr", lr)
    l1 = _positive("l1", l1, allow_zero=True)
    if transforms is not None and not isinstance(transforms, Transforms):
        raise CRPError(f"transforms must be a Transforms(...) or None, got {type(transforms).__name__}")
    if batch_size is not None:
        _batches(x, batch_size)
    limits = _bounds(bounds, x)
    generator = torch.Generator().manual_seed(int(seed))
    delta = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device, requires_grad=True)
    moment, second = torch.zeros_like(delta), torch.zeros_like(delta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    penalty = l1 / delta.numel()
    losses, converged = [], False
    for step in range(1, steps + 1):
        batch = x
        if batch_size is not None and batch_size < len(x):
            batch = x[torch.randperm(len(x), generator=generator)[:batch_size].to(x.device)]
        with torch.enable_grad():
            occluded = _clip(batch - delta, limits)
            inputs = occluded if transforms is None else torch.cat([occluded, transforms(occluded, generator)])
            logits = crp.evaluate(inputs, grad=True)[0]
            # Eq. 5, first term: the class logit of x - delta plus that of t(x - delta), averaged over the images
            attack = logits[:, cls].sum() / len(batch)
            (gradient,) = torch.autograd.grad(attack, [delta])
        with torch.no_grad():
            losses.append(float(attack) + penalty * float(delta.abs().sum()))
            if bool((logits.argmax(dim=-1) != cls).all()):
                converged = True
                break
            # Adam on the logit term, then the l1 term by its proximal step (soft thresholding) with Adam's
            # per-input step size: coordinates the attack does not need stay exactly zero.
            moment.mul_(beta1).add_(gradient, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            scale = lr / ((second / (1 - beta2**step)).sqrt() + eps)
            delta -= scale * moment / (1 - beta1**step)
            delta.copy_(delta.sign() * (delta.abs() - scale * penalty).clamp(min=0))
        if callback is not None and callback(step, steps, losses[-1]) is False:
            break
    occluder = Occluder(
        delta=delta.detach().clone(),
        cls=cls,
        bounds=limits,
        l1=float(l1),
        losses=losses,
        steps=len(losses),
        converged=converged,
        success_rate=float("nan"),
        model=crp.model,
    )
    if bool((_predictions(crp, x, 256) == cls).any()):
        occluder.success_rate = attack_success_rate(occluder, x)
    return occluder


def _predictions(crp, x, batch_size):
    return torch.cat([crp.evaluate(b)[0].argmax(dim=-1) for b in _batches(x, batch_size)])


def attack_success_rate(occluder, images, cls=None, batch_size=64):
    """The share of the images classified as ``cls`` whose occluded version is not (Wu et al. 2020, Table 1).

    Parameters
    ----------
    occluder : Occluder
        From :func:`learn_occluder`.
    images : torch.Tensor
        Inputs ``[N, ...]``; those the model does not classify as ``cls`` are left out (Eq. 4 attacks only them).
    cls : int, optional
        The class (default: the occluder's).
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    float
        In [0, 1].
    """
    if not isinstance(occluder, Occluder):
        raise CRPError(f"expected an Occluder (from learn_occluder), got {type(occluder).__name__}")
    crp = _model(occluder.model)
    x = _images(images, crp)
    cls = occluder.cls if cls is None else _check_class(cls, _classes(crp, x))
    clean = _predictions(crp, x, batch_size) == cls
    if not bool(clean.any()):
        raise CRPError(f"none of the {len(x)} images is classified as class {cls}: there is nothing to attack")
    flipped = _predictions(crp, occluder.apply(x), batch_size) != cls
    return float((flipped & clean).sum()) / float(clean.sum())


def _activations(crp, x, layer, batch_size):
    """The outputs of ``layer`` (canonized model, as CRP sees it) for the batch ``x``: the one recording place."""
    return torch.cat([crp.evaluate(b, record=[layer])[1][layer] for b in _batches(x, batch_size)])


def feature_importance(crp, images, occluder, layer, signed=False, batch_size=64):
    """The feature importance score of every neuron of ``layer`` (Eq. 6; Eq. 7 unless ``signed``).

    ``s_l^j = 1/N sum_i (f_l(x_i)[j] - f_l(x_i - delta^*)[j])``; the FIS is ``max(s, 0)`` (Eq. 7).

    Parameters
    ----------
    crp : CRP
        The model's CRP (activations are those of the canonized model).
    images : torch.Tensor
        The class's images ``[N, ...]``.
    occluder : Occluder
        The class's occluder.
    layer : str
        The layer.
    signed : bool
        Return Eq. 6's signed scores instead of the FIS.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    torch.Tensor
        One score per neuron: the layer's output shape for one sample (e.g. ``[C, H, W]``).
    """
    crp = _crp(crp)
    if not isinstance(occluder, Occluder):
        raise CRPError(f"expected an Occluder (from learn_occluder), got {type(occluder).__name__}")
    x = _images(images, crp)
    clean = _activations(crp, x, layer, batch_size)
    occluded = _activations(crp, occluder.apply(x), layer, batch_size)
    scores = (clean - occluded).mean(dim=0)
    return scores if signed else scores.clamp(min=0)


def channel_importance(crp, images, occluder, layer, batch_size=64):
    """The channel importance score (CIS) of every channel of ``layer`` (Eq. 8).

    ``w_l^c = 1/B sum_{j in P_l^c} s'_l^j``: the FIS (Eq. 7) summed over the channel's neurons, divided by
    ``B`` = the largest sum, so that ``w`` lies in [0, 1] (all zeros when no neuron is important). Dense layers
    count as channels of size 1x1.

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    images : torch.Tensor
        The class's images ``[N, ...]``.
    occluder : Occluder
        The class's occluder.
    layer : str
        The layer.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    torch.Tensor
        ``[C]``, in [0, 1].
    """
    fis = feature_importance(crp, images, occluder, layer, batch_size=batch_size)
    axis = crp.channel_axis(layer) % (fis.ndim + 1) - 1
    totals = fis.movedim(axis, 0).reshape(fis.shape[axis], -1).sum(dim=1)
    top = float(totals.max())
    return totals / top if top > 0 else totals


def meta_detector(crp, images, layer, weights, batch_size=64):
    """The class meta-detector's response ``f'_l = sum_c w_l^c A_l^c`` (Eq. 9) for each input.

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    images : torch.Tensor
        Inputs ``[N, ...]`` (any class).
    layer : str
        The layer.
    weights : torch.Tensor
        The class's CIS ``[C]`` (:func:`channel_importance`).
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    torch.Tensor
        ``[N, *spatial]`` (e.g. ``[N, H, W]`` for a convolution, ``[N]`` for a dense layer).
    """
    crp = _crp(crp)
    x = _images(images, crp)
    activations = _activations(crp, x, layer, batch_size)
    axis = crp.channel_axis(layer) % activations.ndim
    weights = torch.as_tensor(weights, dtype=activations.dtype, device=activations.device)
    if weights.shape != (activations.shape[axis],):
        raise CRPError(
            f"weights must have one value per channel of {layer!r}: shape ({activations.shape[axis]},), "
            f"got {tuple(weights.shape)}"
        )
    return torch.tensordot(activations.movedim(axis, -1), weights, dims=1)


def class_relevance(crp, images, layer, cls, batch_size=32):
    """The class-wide CRP channel relevance: mean relevance of each channel of ``layer`` over ``images`` (Eq. 10).

    Relevance is explained for class ``cls`` on every image. With a reference store,
    ``store.class_relevance(layer)[:, cls]`` holds the same mean over the scanned data set.

    Parameters
    ----------
    crp : CRP
        The model's CRP.
    images : torch.Tensor
        The class's images ``[N, ...]``.
    layer : str
        The layer.
    cls : int
        The explained class.
    batch_size : int
        Inputs per relevance pass.

    Returns
    -------
    torch.Tensor
        ``[C]``.
    """
    crp = _crp(crp)
    x = _images(images, crp)
    total = 0
    for batch in _batches(x, batch_size):
        total = total + crp.attribute(batch, target=cls, record=[layer]).relevance[layer].sum(dim=0)
    return total / len(x)


def _ranks(values):
    """1-based ranks, ties given their average rank."""
    order = torch.argsort(values)
    _unique, inverse, counts = torch.unique(values[order], return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def _spearman(a, b):
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(torch.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum()) / denominator if denominator > 0 else float("nan")


def compare_with_crp(importance, crp_relevance, k=10):
    """Where AfI's channel importance (Eq. 8) and the class-wide CRP channel relevance agree.

    Parameters
    ----------
    importance : torch.Tensor
        AfI channel importance ``[C]`` (:func:`channel_importance`).
    crp_relevance : torch.Tensor
        Class-wide mean CRP relevance ``[C]`` (:func:`class_relevance` or ``store.class_relevance``).
    k : int
        Size of the top-k sets.

    Returns
    -------
    Agreement
        Spearman rank correlation and top-k overlap.
    """
    a = torch.as_tensor(importance).detach().flatten().to("cpu", torch.float64)
    b = torch.as_tensor(crp_relevance).detach().flatten().to("cpu", torch.float64)
    if a.shape != b.shape or not len(a):
        raise CRPError(
            f"importance and crp_relevance need one value per channel each: got {len(a)} and {len(b)} values"
        )
    if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise CRPError("importance and crp_relevance must be finite (a class the store never saw has NaN relevance)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(a):
        raise CRPError(f"k must be an integer from 1 to the channel count {len(a)}, got {k!r}")
    top_a = torch.argsort(a, descending=True, stable=True)[:k].tolist()
    top_b = torch.argsort(b, descending=True, stable=True)[:k].tolist()
    shared = [c for c in top_a if c in set(top_b)]
    return Agreement(_spearman(a, b), len(shared) / k, k, shared, top_a, top_b)
