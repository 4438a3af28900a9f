"""User-defined concepts: Spatial Activation Concept Vectors (SACV, Wang & Lee 2022, Sec. 2) on top of TCAV's CAV.

A concept is given by example inputs (optionally with a mask of where the concept is in each) and counter-examples.
Every spatial position of a layer's output is one activation vector ``f_l(x)_{i,j}`` in ``R^C``; a linear classifier
separates the positions of the concept from the others, and the unit normal of its hyperplane is the concept vector
``v_k`` (Sec. 2, Fig. 1 B-C). On an input ``x`` it gives two maps (Fig. 1 E):

- ``S_k = [f_l(x)_{i,j}^T v_k]``: where the concept is;
- ``S_{k->c} = [grad f_l^c(x)_{i,j}^T v_k]``: the directional derivative of the class-``c`` logit along ``v_k`` at
  each position, i.e. where the concept contributes to the prediction of class ``c``.

Over a set of images, :func:`concept_contribution` summarises the concept's effect on a class as TCAV does (the
fraction of images whose class logit increases along the concept direction, summed over positions) plus the mean
``S_{k->c}`` inside and outside the positions where the classifier finds the concept.

Activations and gradients are those of the canonized model, as every other part of the engine sees its layers.
"""

import dataclasses

import numpy as np
import torch
from torch.nn import functional

from .errors import CRPError

__all__ = [
    "ConceptContribution",
    "ConceptMaps",
    "ConceptVector",
    "concept_contribution",
    "concept_maps",
    "learn_concept",
]

CLASSIFIERS = ("logistic", "svm")


@dataclasses.dataclass
class ConceptVector:
    """A learned concept direction in a layer's activation space (SACV ``v_k``, Wang & Lee 2022, Sec. 2).

    Attributes
    ----------
    layer : str
        The layer whose spatial activations were classified.
    vector : torch.Tensor
        ``[C]``: the unit normal of the classifier's hyperplane, pointing towards the concept.
    bias : float
        The hyperplane's offset in units of ``vector``: a position shows the concept where ``v . a + bias > 0``.
    accuracy : float
        Balanced accuracy of the classifier on held-out positions (the mean of the per-set recalls; chance is 0.5).
    positives, negatives : int
        Concept and counter positions used (training and held-out together).
    classifier : str
        ``"logistic"`` (logistic regression) or ``"svm"`` (linear SVM).
    """

    layer: str
    vector: torch.Tensor
    bias: float
    accuracy: float
    positives: int
    negatives: int
    classifier: str = "logistic"

    def detects(self, activations):
        """Whether each position shows the concept (``v . a + bias > 0``), for activations ``[..., C]``."""
        return activations @ self.vector.to(activations) + self.bias > 0


@dataclasses.dataclass
class ConceptMaps:
    """The SACV explanation maps of one input or a batch (Wang & Lee 2022, Fig. 1 E).

    Attributes
    ----------
    concept : torch.Tensor
        ``S_k`` upsampled to the input's spatial size, ``[H, W]`` (``[B, H, W]`` for a batch).
    contribution : torch.Tensor
        ``S_{k->c}`` upsampled likewise.
    concept_layer, contribution_layer : torch.Tensor
        The same maps at the layer's resolution ``[h, w]`` (``[B, h, w]``), as the paper defines them.
    target : int or torch.Tensor
        The class ``c`` (one per sample for a batch).
    """

    concept: torch.Tensor
    contribution: torch.Tensor
    concept_layer: torch.Tensor
    contribution_layer: torch.Tensor
    target: object


@dataclasses.dataclass
class ConceptContribution:
    """How much a concept contributes to one class over a set of images (TCAV-style, Wang & Lee 2022, Sec. 2).

    Attributes
    ----------
    cls : int
        The class.
    score : float
        TCAV score: the fraction of images whose class logit increases along the concept direction, i.e. whose
        ``S_{k->c}`` summed over positions is positive.
    derivatives : torch.Tensor
        ``[N]``: ``S_{k->c}`` summed over positions, per image (the directional derivative of the logit when every
        position moves along ``v_k``).
    inside, outside : float
        Mean ``S_{k->c}`` at positions where the classifier finds the concept (``v . a + bias > 0``) and elsewhere
        (NaN when there are none).
    inside_share : float
        Fraction of all positions where the classifier finds the concept.
    images : int
        Number of images.
    """

    cls: int
    score: float
    derivatives: torch.Tensor
    inside: float
    outside: float
    inside_share: float
    images: int


# ------------------------------------------------------------------------------------------------------- helpers


def _batch(crp, x, what):
    """``x`` (a tensor, array, or a list of single inputs) as a validated batch."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise CRPError(f"{what} is empty: give at least one input")
        try:
            x = torch.stack([torch.as_tensor(item) for item in x])
        except (RuntimeError, TypeError) as error:
            shapes = sorted({tuple(torch.as_tensor(item).shape) for item in x})
            raise CRPError(f"{what} must all have the same shape, got shapes {shapes}") from error
    try:
        batch, _ = crp.validate_input(x)
    except CRPError as error:
        raise CRPError(f"{what}: {error}") from None
    return batch


def _positions(activation, layout):
    """A layer's output -> ``[B, C, P]``: channels second, its grid positions flattened last; and the grid."""
    activation = layout.to_grid(activation)
    return activation.reshape(activation.shape[0], activation.shape[1], -1), tuple(activation.shape[2:])


def _activations(crp, layer, batch, batch_size):
    """Activations ``[B, C, P]`` of ``layer`` (canonized model, no gradients) and the layer's grid."""
    crp.validate_layer(layer)
    parts = []
    for start in range(0, len(batch), batch_size):
        _, found = crp.evaluate(batch[start : start + batch_size], record=[layer])
        parts.append(found[layer])
    return _positions(torch.cat(parts), crp.layout(layer))


def _coverage(masks, count, input_shape, spatial, device):
    """Fraction of each layer position's input cell covered by the mask: ``[N, P]``."""
    if isinstance(masks, (list, tuple)):
        if len(masks) != count:
            raise CRPError(f"masks has {len(masks)} entries for {count} concept examples; give one mask per example")
        masks = [torch.ones(input_shape, dtype=torch.bool) if m is None else torch.as_tensor(np.asarray(m))
                 for m in masks]  # fmt: skip
        shapes = sorted({tuple(m.shape) for m in masks})
        if len(shapes) != 1:
            raise CRPError(f"the masks must all have the input's spatial shape {tuple(input_shape)}, got {shapes}")
        masks = torch.stack(masks)
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if tuple(masks.shape) != (count, *input_shape):
        raise CRPError(
            f"masks has shape {tuple(masks.shape)}; expected [{count}, {', '.join(map(str, input_shape))}] "
            "(one boolean mask of the input's spatial size per concept example)"
        )
    masks = masks.to(device=device, dtype=torch.float32).unsqueeze(1)
    if not spatial:
        return masks.flatten(1).mean(1, keepdim=True)
    pool = {1: functional.adaptive_avg_pool1d, 2: functional.adaptive_avg_pool2d, 3: functional.adaptive_avg_pool3d}[
        len(spatial)
    ]
    return pool(masks, spatial).flatten(1)


def _upsample(maps, size):
    """``[B, *spatial]`` layer maps -> ``[B, *size]`` (linear interpolation; constant for positionless layers)."""
    if maps.ndim == 1:
        return maps.reshape(-1, *[1] * len(size)).expand(-1, *size).clone()
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[maps.ndim - 1]
    return functional.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def _random_samples(dataset, n, seed, exclude=()):
    """``n`` random inputs of ``dataset`` (seeded), leaving out indices in ``exclude``."""
    generator = np.random.default_rng(seed)
    exclude = set(exclude)
    pool = [i for i in range(len(dataset)) if i not in exclude]
    if not pool:
        raise CRPError("the dataset has no samples left to draw random counter-examples from")
    picked = generator.choice(len(pool), size=min(n, len(pool)), replace=False)
    items = [dataset[pool[int(i)]] for i in picked]
    return torch.stack([torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item) for item in items])


# ---------------------------------------------------------------------------------------------------- learning


def learn_concept(
    crp,
    layer,
    examples,
    counter_examples=None,
    masks=None,
    *,
    dataset=None,
    n_random=20,
    exclude=(),
    coverage=0.5,
    classifier="logistic",
    test_size=0.25,
    seed=0,
    batch_size=64,
):
    """Learn a concept vector from examples (SACV, Wang & Lee 2022, Sec. 2, Fig. 1 A-C; TCAV's CAV per position).

    Parameters
    ----------
    crp : CRP
        The model's CRP controller.
    layer : str
        The layer whose spatial activations are classified.
    examples : torch.Tensor or list[torch.Tensor]
        Concept examples ``[N, C, H, W]`` (or a list of ``[C, H, W]``).
    counter_examples : torch.Tensor or list[torch.Tensor], optional
        Inputs without the concept; all their positions are negatives.
    masks : array-like, optional
        Where the concept is in each example: ``[N, H, W]`` booleans, or a list with ``None`` for a whole image.
        Positions whose input cell is covered at least ``coverage`` are positives, uncovered positions negatives.
        Without masks every position of every example is a positive (the paper's assumption).
    dataset : torch.utils.data.Dataset, optional
        Draw ``n_random`` random counter-examples from it (TCAV's random concepts) when ``counter_examples`` is
        not given; indices in ``exclude`` are left out.
    n_random : int
        Number of random counter-examples.
    exclude : Iterable[int]
        Dataset indices never drawn as random counter-examples (e.g. the concept examples).
    coverage : float
        Fraction of a position's input cell the mask must cover to make it a positive.
    classifier : {"logistic", "svm"}
        Logistic regression or a linear SVM (scikit-learn), with balanced class weights.
    test_size : float
        Fraction of positions held out to measure the accuracy.
    seed : int
        Seed of the random counter-examples and the split.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    ConceptVector
        ``v_k`` with its held-out balanced accuracy.

    Raises
    ------
    CRPError
        Empty or ill-shaped examples or masks, an unknown layer or classifier, or no negatives.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    if classifier not in CLASSIFIERS:
        raise CRPError(f"unknown classifier {classifier!r}; accepted: {', '.join(map(repr, CLASSIFIERS))}")
    if not 0 < coverage <= 1:
        raise CRPError(f"coverage must be in (0, 1], got {coverage}")
    if not 0 < test_size < 1:
        raise CRPError(f"test_size must be in (0, 1), got {test_size}")
    crp.validate_layer(layer)
    if examples is None or (isinstance(examples, torch.Tensor) and examples.numel() == 0):
        raise CRPError("the concept has no examples: give at least one input showing it")
    examples = _batch(crp, examples, "the concept examples")
    activations, spatial = _activations(crp, layer, examples, batch_size)
    points = activations.transpose(1, 2).reshape(-1, activations.shape[1])  # [N * P, C]
    if masks is None:
        positive = torch.ones(len(points), dtype=torch.bool)
        negative = torch.zeros(len(points), dtype=torch.bool)
    else:
        covered = _coverage(masks, len(examples), tuple(examples.shape[2:]), spatial, activations.device).flatten()
        positive, negative = covered >= coverage, covered == 0
    positives, negatives = [points[positive]], [points[negative]]
    if counter_examples is None and dataset is not None:
        counter_examples = _random_samples(dataset, n_random, seed, exclude)
    if counter_examples is not None:
        if isinstance(counter_examples, (list, tuple)) and not counter_examples:
            raise CRPError("counter_examples is empty: give at least one input, or None for the default")
        counter = _batch(crp, counter_examples, "the counter-examples")
        others, _ = _activations(crp, layer, counter, batch_size)
        negatives.append(others.transpose(1, 2).reshape(-1, others.shape[1]))
    positives, negatives = torch.cat(positives), torch.cat(negatives)
    if len(positives) < 2:
        raise CRPError(
            f"the concept has {len(positives)} positions at layer {layer!r}: give more examples, larger masks or a "
            f"lower coverage (now {coverage})"
        )
    if len(negatives) < 2:
        raise CRPError(
            "there are no counter positions: give counter_examples, a dataset to draw random ones from, or masks "
            "that leave part of the examples uncovered"
        )
    data = torch.cat([positives, negatives]).double().cpu().numpy()
    labels = np.concatenate([np.ones(len(positives), dtype=int), np.zeros(len(negatives), dtype=int)])
    train_x, test_x, train_y, test_y = train_test_split(
        data, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    # Standardise for the solver, then map the hyperplane back to the activation space.
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-8
    if classifier == "logistic":
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
    else:
        model = LinearSVC(class_weight="balanced", max_iter=5000)
    model.fit((train_x - mean) / scale, train_y)
    accuracy = float(balanced_accuracy_score(test_y, model.predict((test_x - mean) / scale)))
    weight = model.coef_[0] / scale
    intercept = float(model.intercept_[0] - (model.coef_[0] * mean / scale).sum())
    norm = float(np.linalg.norm(weight))
    if norm == 0:
        raise CRPError(f"the classifier found no direction separating the concept at layer {layer!r}")
    reference = activations
    return ConceptVector(
        layer=layer,
        vector=torch.as_tensor(weight / norm, dtype=reference.dtype, device=reference.device),
        bias=intercept / norm,
        accuracy=accuracy,
        positives=len(positives),
        negatives=len(negatives),
        classifier=classifier,
    )


# ----------------------------------------------------------------------------------------------- interpretation


def _check_vector(crp, cv, activations):
    if not isinstance(cv, ConceptVector):
        raise CRPError(f"expected a ConceptVector (from learn_concept), got {type(cv).__name__}")
    channels = activations.shape[1]
    if cv.vector.shape != (channels,):
        raise CRPError(
            f"the concept vector has {cv.vector.numel()} entries, but layer {cv.layer!r} has {channels} channels"
        )


def _gradients(crp, batch, layer, target):
    """Activations ``[B, C, P]`` of ``layer`` and the gradients of the class logits w.r.t. them (canonized model).

    ``target`` is ``[B]``: one class per sample. Samples are independent (the model is in eval mode), so one backward
    pass of the summed logits gives every sample's gradient.
    """
    crp.validate_layer(layer)
    output, found = crp.evaluate(batch, record=[layer], grad=True)
    if output.ndim != 2:
        raise CRPError(f"the model output has shape {tuple(output.shape)}; expected [B, classes]")
    classes = output.shape[1]
    if bool(((target < 0) | (target >= classes)).any()):
        raise CRPError(f"class {target.tolist()} is out of range: the model has {classes} outputs")
    logits = output.gather(1, target.to(output.device)[:, None]).sum()
    (gradient,) = torch.autograd.grad(logits, found[layer])
    layout = crp.layout(layer)
    activation, spatial = _positions(found[layer].detach(), layout)
    gradient, _ = _positions(gradient, layout)
    return activation, gradient, spatial, output.detach()


def _targets(target, batch):
    if isinstance(target, torch.Tensor) and target.ndim == 1:
        if len(target) != batch:
            raise CRPError(f"a tensor target gives one class per sample: expected {batch} classes, got {len(target)}")
        return target.long()
    if isinstance(target, bool) or not isinstance(target, (int, np.integer, torch.Tensor)):
        raise CRPError(f"the class must be an int (or a 1-D tensor of ints), got {target!r}")
    return torch.full((batch,), int(target), dtype=torch.long)


def concept_maps(crp, x, cv, target=None, batch_size=64):
    """The SACV maps ``S_k`` and ``S_{k->c}`` of an input (Wang & Lee 2022, Sec. 2, Fig. 1 E).

    Parameters
    ----------
    crp : CRP
        The model's CRP controller.
    x : torch.Tensor
        One input ``[C, H, W]`` or a batch.
    cv : ConceptVector
        The concept (its layer is used).
    target : int or torch.Tensor, optional
        The class ``c``: an index, one per sample (1-D tensor), or ``None`` for the prediction.
    batch_size : int
        Inputs per pass.

    Returns
    -------
    ConceptMaps
        ``S_k[i, j] = f_l(x)_{i,j} . v_k`` and ``S_{k->c}[i, j] = (d f^c / d f_l(x)_{i,j}) . v_k``, at the layer's
        resolution and upsampled (bilinear) to the input's.
    """
    batch, unbatched = crp.validate_input(x)
    if target is None:
        target = crp.evaluate(batch)[0].argmax(1)
    target = _targets(target, len(batch))
    concepts, contributions = [], []
    spatial = ()
    for start in range(0, len(batch), batch_size):
        part = slice(start, start + batch_size)
        activation, gradient, spatial, _ = _gradients(crp, batch[part], cv.layer, target[part])
        _check_vector(crp, cv, activation)
        v = cv.vector.to(activation)
        concepts.append(torch.einsum("bcp,c->bp", activation, v))
        contributions.append(torch.einsum("bcp,c->bp", gradient, v))
    concept = torch.cat(concepts).reshape(len(batch), *spatial)
    contribution = torch.cat(contributions).reshape(len(batch), *spatial)
    size = tuple(batch.shape[2:])
    maps = ConceptMaps(
        concept=_upsample(concept, size),
        contribution=_upsample(contribution, size),
        concept_layer=concept,
        contribution_layer=contribution,
        target=target,
    )
    if unbatched:
        return ConceptMaps(maps.concept[0], maps.contribution[0], concept[0], contribution[0], int(target[0]))
    return maps


def concept_contribution(crp, xs, cv, cls, batch_size=64):
    """A concept's contribution to class ``cls`` over a set of images (TCAV score and ``S_{k->c}`` summaries).

    Parameters
    ----------
    crp : CRP
        The model's CRP controller.
    xs : torch.Tensor or list[torch.Tensor]
        The images (e.g. the images of the class).
    cv : ConceptVector
        The concept.
    cls : int
        The class ``c``.
    batch_size : int
        Inputs per pass.

    Returns
    -------
    ConceptContribution
        The fraction of images whose ``cls`` logit grows along ``v_k`` (TCAV), the per-image directional
        derivatives, and the mean ``S_{k->c}`` where the concept is detected and elsewhere (Wang & Lee 2022, Sec. 2).
    """
    batch = _batch(crp, xs, "the images")
    cls = int(_targets(cls, 1)[0])
    derivatives, inside, outside, detected = [], [], [], []
    for start in range(0, len(batch), batch_size):
        part = batch[start : start + batch_size]
        activation, gradient, _, _ = _gradients(crp, part, cv.layer, torch.full((len(part),), cls))
        _check_vector(crp, cv, activation)
        v = cv.vector.to(activation)
        contribution = torch.einsum("bcp,c->bp", gradient, v)
        found = cv.detects(activation.transpose(1, 2))
        derivatives.append(contribution.sum(1))
        inside.append(contribution[found])
        outside.append(contribution[~found])
        detected.append(found.flatten())
    derivatives = torch.cat(derivatives)
    inside, outside, detected = torch.cat(inside), torch.cat(outside), torch.cat(detected)
    nan = float("nan")
    return ConceptContribution(
        cls=cls,
        score=float((derivatives > 0).float().mean()),
        derivatives=derivatives,
        inside=float(inside.mean()) if len(inside) else nan,
        outside=float(outside.mean()) if len(outside) else nan,
        inside_share=float(detected.float().mean()),
        images=len(batch),
    )
