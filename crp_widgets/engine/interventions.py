"""Interventions on a layer's activations during the forward pass (CRP paper Sec. 4.1-4.3, Eq. 27-29).

An :class:`Edit` maps a layer's output to an edited output: :class:`Scale` switches channels off or scales them
(filter flipping, Sec. 4.1; "what-if", Fig. 22 right), :class:`Blend` blends a donor's activations into the sample
inside a spatial mask (concept insertion, Eq. 27-28, and replacement by a spatially averaged concept, Eq. 29).

:meth:`CRP.edited` and :meth:`CRP.evaluate` apply edits to the layers' outputs in the explainable graph: the rest of
the network sees the edited activations, while relevance passes an edit unchanged (the edited layer's rule
distributes the relevance its neurons receive, Eq. 1-3). The model itself is never changed.
"""

import hashlib

import torch

from .errors import CRPError


def _tensor_key(tensor):
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return (tuple(tensor.shape), str(tensor.dtype), hashlib.blake2b(data, digest_size=16).hexdigest())


def _per_sample(values, activation, axis, what):
    """Broadcast ``values`` ``[C]`` or ``[B, C]`` against ``activation`` with channels on ``axis``."""
    values = values.to(device=activation.device, dtype=activation.dtype)
    channels = activation.shape[axis]
    if (
        values.shape[-1] != channels
        or values.ndim > 2
        or (values.ndim == 2 and values.shape[0] not in (1, len(activation)))
    ):
        raise CRPError(
            f"{what} has shape {list(values.shape)}; expected [{channels}] (one value per channel) or "
            f"[{len(activation)}, {channels}] (one row per sample) for a layer output of shape {list(activation.shape)}"
        )
    shape = [values.shape[0] if values.ndim == 2 else 1] + [1] * (activation.ndim - 1)
    shape[axis % activation.ndim] = channels
    return values.reshape(shape)


class Edit:
    """An edit of a layer's output: ``edit(activation, layout)`` returns the edited activation (same shape)."""

    def __call__(self, activation, layout):
        """Return the edited ``activation``; ``layout`` (an ``inspection.Layout``) tells its channels and grid."""
        raise NotImplementedError

    def key(self):
        """A hashable description of the edit, for caches."""
        raise NotImplementedError


class Scale(Edit):
    """Multiply channels by factors: 0 switches a channel off (Sec. 4.1, Fig. 22 right), 2 doubles it.

    Parameters
    ----------
    factors : dict[int, float] or Sequence[int] or torch.Tensor
        ``{channel: factor}`` (other channels unchanged), a list of channels to switch off, or a tensor of factors
        ``[C]`` or ``[B, C]`` (one row per sample of a batch: many interventions in one forward pass).
    """

    def __init__(self, factors):
        if isinstance(factors, torch.Tensor):
            self.factors = factors.detach().float()
        elif isinstance(factors, dict):
            self.factors = {int(c): float(f) for c, f in factors.items()}
        else:
            self.factors = {int(c): 0.0 for c in factors}

    def __call__(self, activation, layout):
        """Return ``activation`` with its channels multiplied by their factors."""
        axis = layout.axis
        channels = activation.shape[axis]
        if isinstance(self.factors, dict):
            bad = [c for c in self.factors if not 0 <= c < channels]
            if bad:
                raise CRPError(f"channel(s) {bad} out of range: the layer has {channels} channels (0-{channels - 1})")
            factors = torch.ones(channels)
            factors[list(self.factors)] = torch.tensor(list(self.factors.values()))
        else:
            factors = self.factors
        return activation * _per_sample(factors, activation, axis, "Scale factors")

    def key(self):
        """The factors, as a hashable value."""
        if isinstance(self.factors, dict):
            return ("scale", tuple(sorted(self.factors.items())))
        return ("scale", _tensor_key(self.factors))


class Blend(Edit):
    """Blend a donor's activations into the sample inside a mask: ``Z + alpha M o (Z_donor - Z)`` (Eq. 27-29).

    ``alpha = 1`` with a binary mask is the insertion of Eq. 27; a donor averaged over space (:meth:`averaged`) is
    the replacement by a "clean" concept of Eq. 29.

    Parameters
    ----------
    donor : torch.Tensor
        The donor's activations at the layer on its grid (``Layout.to_grid``, channels first): ``[C, *S]`` (one
        donor) or ``[B, C, *S]``, or ``[C]`` for a spatially constant donor. For a convolution that is its output.
    mask : torch.Tensor, optional
        Where to blend, on the layer's grid ``S`` (``[*S]`` or ``[B, *S]``; boolean or in [0, 1]). See
        :func:`layer_mask` to bring an input mask to the layer. Default: everywhere (a token layer's class token
        is left as it is).
    alpha : float or torch.Tensor
        The degree of blending in [0, 1], or a tensor ``[B]`` (one per sample, e.g. a whole alpha sweep in one
        batch).
    channels : Sequence[int], optional
        Blend only these channels (default: all).
    """

    def __init__(self, donor, mask=None, alpha=1.0, channels=None):
        self.donor = donor.detach()
        self.mask = None if mask is None else mask.detach().float()
        self.alpha = alpha.detach().float() if isinstance(alpha, torch.Tensor) else float(alpha)
        if isinstance(self.alpha, float) and not 0.0 <= self.alpha <= 1.0:
            raise CRPError(f"alpha must lie in [0, 1], got {self.alpha}")
        self.channels = None if channels is None else sorted({int(c) for c in channels})

    @classmethod
    def averaged(cls, donor, mask=None, alpha=1.0, channels=None, donor_mask=None):
        """Eq. 29: the donor's activations averaged over space (inside ``donor_mask`` if given) blended in."""
        donor = donor.detach()
        spatial = tuple(range(1, donor.ndim))
        if donor_mask is None:
            mean = donor.mean(dim=spatial) if spatial else donor
        else:
            weights = donor_mask.to(donor.dtype).expand_as(donor[0])
            if not weights.sum():
                raise CRPError("the donor mask is empty: it must select at least one position of the layer")
            mean = (donor * weights).sum(dim=spatial) / weights.sum()
        return cls(mean, mask=mask, alpha=alpha, channels=channels)

    def __call__(self, activation, layout):
        """Return ``activation`` blended with the donor (Eq. 28), on the layer's grid."""
        grid = layout.to_grid(activation)
        spatial = grid.shape[2:]
        donor = self._donor(grid)
        weight = self._weight(grid, spatial)
        alpha = self.alpha
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.to(device=grid.device, dtype=grid.dtype).reshape(-1, *[1] * (grid.ndim - 1))
        change = alpha * weight * (donor - grid)
        if self.channels is not None:
            keep = torch.zeros(grid.shape[1], device=grid.device, dtype=grid.dtype)
            keep[self.channels] = 1
            change = change * keep.reshape(1, -1, *[1] * len(spatial))
        return layout.from_grid(grid + change, activation)

    def _donor(self, grid):
        spatial = grid.shape[2:]
        donor = self.donor.to(device=grid.device, dtype=grid.dtype)
        if donor.ndim == 1:
            donor = donor.reshape(1, -1, *[1] * len(spatial))
        elif donor.ndim == grid.ndim - 1:
            donor = donor.unsqueeze(0)
        if donor.shape[1] != grid.shape[1] or tuple(donor.shape[2:]) not in (tuple(spatial), (1,) * len(spatial)):
            raise CRPError(
                f"the donor activations have shape {list(self.donor.shape)}; the layer's output on its grid is "
                f"{list(grid.shape[1:])} per sample (give the donor's activations at the same layer)"
            )
        return donor

    def _weight(self, grid, spatial):
        if self.mask is None:
            return torch.ones((), device=grid.device, dtype=grid.dtype)
        mask = self.mask.to(device=grid.device, dtype=grid.dtype)
        if mask.ndim not in (len(spatial), len(spatial) + 1) or tuple(mask.shape[mask.ndim - len(spatial) :]) != tuple(
            spatial
        ):
            raise CRPError(
                f"the blend mask has shape {list(mask.shape)}; expected the layer's grid {list(spatial)} "
                "(use crp_widgets.engine.interventions.layer_mask to bring an input mask to the layer)"
            )
        batch = mask.shape[0] if mask.ndim > len(spatial) else 1
        return mask.reshape(batch, 1, *spatial)

    def key(self):
        """Donor, mask, alpha and channels, as a hashable value."""
        alpha = _tensor_key(self.alpha) if isinstance(self.alpha, torch.Tensor) else self.alpha
        mask = None if self.mask is None else _tensor_key(self.mask)
        return ("blend", _tensor_key(self.donor), mask, alpha, None if self.channels is None else tuple(self.channels))


def layer_mask(mask, shape):
    """Bring a boolean input mask ``[H, W]`` (or ``[L]``) to a layer's spatial grid ``shape`` (area average > 0).

    A layer position is inside when any input pixel of its cell is (adaptive max pooling of the mask).
    """
    mask = torch.as_tensor(mask).float()
    shape = tuple(int(s) for s in shape)
    if mask.ndim != len(shape):
        raise CRPError(f"the mask has {mask.ndim} dimensions; the layer's grid {list(shape)} has {len(shape)}")
    pool = torch.nn.functional.adaptive_max_pool2d if len(shape) == 2 else torch.nn.functional.adaptive_max_pool1d
    return pool(mask[None, None], shape)[0, 0] > 0


def edits_key(edits):
    """A hashable description of ``{layer: Edit}``, for caches."""
    return tuple(sorted((name, edit.key()) for name, edit in (edits or {}).items()))
