"""Concept Relevance Propagation (CRP paper, Sec. 2.2) on a user's model.

One forward pass per (input, model state) is recorded and cached; attributions, rankings and conditional heatmaps
are backward passes on it. ``conditional_heatmaps`` runs the backward from the output down to the layer once and
the k backward passes from the layer to the input as one vectorised pass.
"""

import collections
import contextlib
import threading

import torch

from .composites import default_composite
from .errors import CRPError
from .forward import model_lock, model_state, record_forward
from .inspection import (
    InputSpec,
    LayerInfo,
    channel_axis,
    channel_list,
    check_finite,
    explainable_layers,
    resolve_layer,
    validate_input,
)
from .interventions import edited, edits_key, evaluate
from .receptive import FlatComposite, bounding_box
from .results import Attribution, ChannelRelevance, ReceptiveField, RegionRelevance, Subconcepts


def _fingerprint(x):
    """A cheap key of a tensor's content (the forward cache key): equal tensors have equal fingerprints.

    Its last part is a weighted sum with fixed random weights in [0.5, 1.5] (one reduction): unequal tensors rarely
    share it (a mirrored image does not), and the cache compares the tensors themselves on a hit. NaN and Inf in
    ``x`` make it non-finite, so that it also serves :func:`check_finite`.
    """
    flat = x.detach().reshape(-1)
    return tuple(x.shape), x.dtype, x.device, float(torch.dot(flat, _weights(flat)))


def _weights(flat):
    """The fixed random weights of :func:`_fingerprint` for a flat tensor like ``flat`` (kept for a few shapes)."""
    key = (flat.numel(), flat.dtype, flat.device)
    weights = _WEIGHTS.get(key)
    if weights is None:
        if len(_WEIGHTS) >= 8:
            _WEIGHTS.clear()
        generator = torch.Generator().manual_seed(flat.numel())
        weights = torch.rand(flat.numel(), generator=generator, dtype=torch.float64) + 0.5
        weights = _WEIGHTS[key] = weights.to(dtype=flat.dtype, device=flat.device)
    return weights


# (numel, dtype, device) -> the weights of :func:`_fingerprint`
_WEIGHTS = {}


def _spatial_sum(tensor, axis):
    """Sum a ``[B, ...]`` tensor over everything but the batch and the channel ``axis`` -> ``[B, C]``."""
    axis = axis % tensor.ndim
    dims = [d for d in range(1, tensor.ndim) if d != axis]
    return tensor.sum(dim=dims) if dims else tensor


def _proportion(values):
    """Each value's share of the summed absolute values.

    Supporting relevance stays positive and contradicting relevance negative, whatever the sign of the total (e.g.
    when explaining a class the model rejects).
    """
    scale = float(values.abs().sum())
    return values / scale if scale > 1e-30 else torch.zeros_like(values)


def _share(values, total):
    """``values / total``, zero where the total vanishes."""
    return values / total if abs(total) > 1e-12 else torch.zeros_like(values)


def target_mask(output, target):
    """One-hot selection ``[B, n]`` of the explained output(s) (A.3: relevance starts at the output value).

    ``target``: a class index, a list of classes explained together, or one class per sample (a tensor or array).
    The mask is read-only: masks of one class index are shared (every heatmap of a class starts with one).
    """
    batch, outputs = output.shape[0], output.shape[1] if output.ndim > 1 else 1
    if output.ndim < 2:
        raise CRPError(f"the model output has shape {tuple(output.shape)}; expected [B, classes]")
    key = (target, tuple(output.shape), output.dtype, output.device) if type(target) is int else None
    mask = _TARGET_MASKS.get(key) if key is not None else None
    if mask is None:
        mask = _target_mask(output, target, batch, outputs)
        if key is not None:
            if len(_TARGET_MASKS) >= 64:
                _TARGET_MASKS.clear()
            _TARGET_MASKS[key] = mask
    return mask


# (class index, output shape, dtype, device) -> the mask of :func:`target_mask`
_TARGET_MASKS = {}


def _target_mask(output, target, batch, outputs):
    """Build the mask of :func:`target_mask`, checking every class index."""

    def check(index):
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < outputs:
            raise CRPError(
                f"class index {index!r} is out of range: the model has {outputs} outputs (valid: 0 to {outputs - 1})"
            )
        return index

    mask = torch.zeros(batch, outputs, dtype=output.dtype, device=output.device)
    if isinstance(target, torch.Tensor) or (hasattr(target, "ndim") and hasattr(target, "tolist")):
        values = torch.as_tensor(target).flatten().tolist()
        if len(values) != batch:
            raise CRPError(f"a tensor target gives one class per sample: expected {batch} classes, got {len(values)}")
        for row, index in enumerate(values):
            mask[row, check(int(index))] = 1
    elif isinstance(target, (list, tuple)):
        if not target:
            raise CRPError("target is an empty list; give a class index, a list of classes, or None")
        for index in target:
            mask[:, check(index)] = 1
    else:
        mask[:, check(target)] = 1
    return mask.reshape(mask.shape + (1,) * (output.ndim - 2))


class CRP:
    """Concept Relevance Propagation on a model, with zennit rules.

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain. It is left exactly as found after every call.
    composite : zennit.core.Composite, optional
        Rules and canonizers; by default EpsilonPlusFlat with canonizers chosen by architecture (A.3).
    layers : Iterable[str], optional
        Extra module names to treat as concept layers (e.g. ResNet blocks), besides Conv and Linear layers.
    cache_size : int
        How many recorded forward passes to keep (each holds the graph of one input).
    vectorize : bool, optional
        Run the k backward passes of a layer's channels as one ``torch.func.vmap`` pass. By default only on GPUs:
        on CPUs a loop over the retained graph measured faster.

    Notes
    -----
    Conditions are ``{layer: channels}``: channels of one layer are OR-ed, layers AND-ed (Eq. 8). A condition
    masks relevance where it flows through that layer; relevance on parallel branches (residual shortcuts) is kept.
    ``target`` is a class index, a list of classes explained together, a 1-D integer tensor with one class per
    sample, or ``None``: no class, the relevance starts from the activation of the topmost conditioned layer
    (Sec. 2.3.5), or from the whole output when there are no conditions (Fig. 2a).
    """

    def __init__(self, model, composite=None, layers=(), cache_size=2, vectorize=None):
        if not isinstance(model, torch.nn.Module):
            raise CRPError(f"CRP explains a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.composite = composite if composite is not None else default_composite(model)
        self._modules = dict(model.named_modules())
        self.layer_names = explainable_layers(model)
        for name in layers:
            resolve_layer(name, self._modules, self.layer_names)
            if name not in self.layer_names:
                self.layer_names.append(name)
        self._tapped = frozenset(self.layer_names)  # replaced when a layer is added: a key part hashed once
        self._spec = InputSpec.of(model)
        self._cache = collections.OrderedDict()
        self._cache_size = max(1, int(cache_size))
        self.vectorize = vectorize
        self._flat = FlatComposite()
        self._fields = {}  # the flat-rule forward pass of receptive fields (kept by clear_cache: input independent)
        self._lock = threading.RLock()
        self._edits = None  # the edits of an open ``edited`` block, and their key
        self._edits_key = ()

    # ----------------------------------------------------------------------------------------------- forward cache

    def _state_key(self):
        """The model's modules, parameters and buffers: which objects, which tensors at which version."""
        return model_state(self.model)

    def _forward(self, x):
        """The recorded forward pass of ``x`` (from the cache when nothing changed), and the unbatched flag."""
        x, unbatched = validate_input(x, self.model, self._spec, finite=False)
        fingerprint = _fingerprint(x)
        check_finite(x, fingerprint[3])
        # A pass on another thread holds canonized stand-ins in the model, and its state looks different then:
        # the key is taken under the model's lock. Only while another thread holds it, a cache hit is tried first.
        lock = model_lock(self.model)
        free = lock.acquire(blocking=False)
        try:
            key = self._key(fingerprint)
            forward = self._cached(key, x)
            if forward is None and not free:
                lock.acquire()
                free = True
                key = self._key(fingerprint)
                forward = self._cached(key, x)
            if forward is None:
                forward = self._record(key, x)
        finally:
            if free:
                lock.release()
        return forward, unbatched

    def _key(self, fingerprint):
        """The forward cache key: the input's fingerprint, the model's state and what shapes the pass."""
        return (
            fingerprint,
            self._state_key(),
            id(self.composite),
            self._tapped,
            self.vectorize,
            self._edits_key,
        )

    def _cached(self, key, x):
        """The cached forward pass of ``x`` (its input compared, not only its fingerprint), or ``None``."""
        cached = self._cache.get(key)
        if cached is None or not torch.equal(cached[0], x):
            return None
        self._cache.move_to_end(key)
        return cached[1]

    def _record(self, key, x):
        """Record the forward pass of ``x`` and cache it under ``key``."""
        self._cache.pop(key, None)
        # make room first: the memory of the pass let go is reused at once, while it is still in the caches
        while len(self._cache) >= self._cache_size:
            self._cache.popitem(last=False)
        forward = record_forward(self.model, x, self.composite, sorted(self._tapped), epoch=key[1])
        if self.vectorize is not None:
            forward.vectorized = bool(self.vectorize)
        # a copy of the input: the recorded one shares the caller's memory, which may change (e.g. numpy arrays)
        self._cache[key] = (x.detach().clone(), forward)
        return forward

    def edited(self, edits):
        """Compute everything inside the ``with`` block on the model with ``{layer: Edit}`` applied (Sec. 4.1-4.3).

        Edits (:class:`~crp_widgets.engine.interventions.Scale`, :class:`~crp_widgets.engine.interventions.Blend`)
        change the layer's activations (of the canonized model, as CRP sees them) for the layers above; relevance
        passes an edit unchanged. Predictions, attributions and rankings in the block reflect the edits; results
        are cached per edit. Other threads' passes on the model wait until the block ends.

        Examples
        --------
        >>> with crp.edited({"features.conv4": Scale([6, 22])}):  # switch channels 6 and 22 off
        ...     crp.predict(x)
        """
        return self._edited(edits)

    @contextlib.contextmanager
    def _edited(self, edits):
        edits = dict(edits or {})
        for name in edits:
            self._layer(name)
        with self._lock, edited(self.model, edits, self.layer_names):
            previous = self._edits, self._edits_key
            self._edits, self._edits_key = edits, (*self._edits_key, edits_key(edits))
            try:
                yield self
            finally:
                self._edits, self._edits_key = previous

    def evaluate(self, x, edits=None, record=()):
        """The output of a plain forward pass (no relevance, no gradients) with ``edits``, and activations.

        Cheaper than :meth:`predict` under :meth:`edited` when many edited passes are needed (filter flipping,
        insertion sweeps): the canonized model (as CRP sees its layers) runs under ``torch.no_grad``.

        Parameters
        ----------
        x : torch.Tensor
            One sample or a batch.
        edits : dict[str, Edit], optional
            ``{layer: Edit}`` (see :mod:`crp_widgets.engine.interventions`).
        record : Iterable[str]
            Layers whose outputs to return.

        Returns
        -------
        output : torch.Tensor
            The logits (unbatched for one sample).
        activations : dict[str, torch.Tensor]
            The recorded layers' outputs (after their edits).
        """
        record = [self._layer(name) for name in record]
        for name in edits or {}:
            self._layer(name)
        batch, unbatched = validate_input(x, self.model, self._spec)
        with self._lock:
            output, found = evaluate(self.model, self.composite, batch, edits, record)
        if unbatched:
            return output[0], {name: value[0] for name, value in found.items()}
        return output, found

    def clear_cache(self):
        """Drop the recorded forward passes (and the memory their graphs hold)."""
        with self._lock:
            self._cache.clear()

    # ---------------------------------------------------------------------------------------------- validation

    def validate_layer(self, name):
        """Return ``name`` if it is a layer of the model (any module name), else raise :class:`UnknownLayerError`.

        The error lists the valid layers. A module named for the first time becomes a concept layer of this CRP.
        """
        return self._layer(name)

    def _layer(self, name, role="layer"):
        """Validate a layer name; start tapping a module named for the first time."""
        resolve_layer(name, self._modules, self.layer_names)
        if name not in self._tapped:
            self._tapped = self._tapped | {name}
        return name

    def _channels(self, forward, layer, channels, ordered=False):
        tap = forward.tap(layer)
        count = tap.activation.shape[channel_axis(self._modules[layer])]
        return channel_list(channels, layer, count, ordered)

    def _conditions(self, conditions):
        if conditions is None:
            return {}
        if not isinstance(conditions, dict):
            raise CRPError(
                "conditions must be a dict {layer name: channel or list of channels}, "
                f"got {type(conditions).__name__}"
            )
        for name in conditions:
            self._layer(name)
        return conditions

    def _validated_conditions(self, forward, conditions):
        return {name: self._channels(forward, name, channels) for name, channels in conditions.items()}

    def _mask(self, forward, layer, channels):
        """Eq. 8/9: a 0/1 mask over ``layer``'s channel axis selecting ``channels``, broadcastable to its output."""
        activation = forward.tap(layer).activation
        axis = channel_axis(self._modules[layer]) % activation.ndim
        shape = [1] * activation.ndim
        shape[axis] = activation.shape[axis]
        mask = torch.zeros(shape[axis], dtype=activation.dtype, device=activation.device)
        mask[channels] = 1
        return mask.reshape(shape)

    def _masks(self, forward, conditions):
        return {name: self._mask(forward, name, channels) for name, channels in conditions.items()}

    def _channel_masks(self, forward, layer, channels):
        """``[k, 1, C, 1, ...]``: one mask per channel, for a batched backward."""
        return torch.stack([self._mask(forward, layer, [channel]) for channel in channels])

    def _target_mask(self, forward, target):
        """One-hot selection of the explained output(s) of a recorded pass (:func:`target_mask`)."""
        return target_mask(forward.output, target)

    def _start(self, forward, target, conditions, masks):
        """Where the backward starts, and with what relevance.

        From the output value (A.3) or, without a class, from the topmost conditioned layer's activation (Sec. 2.3.5).
        """
        if target is None and conditions:
            top = forward.layer_order(conditions)[-1]
            tap = forward.tap(top)
            return tap.site, tap.activation * masks[top], top
        output = forward.output.detach()
        if target is None:
            return forward.output, output, None
        return forward.output, output * self._target_mask(forward, target), None

    # ------------------------------------------------------------------------------------------------- public API

    def layers(self, x):
        """The explainable layers with their output shapes and channel counts, in forward order.

        Parameters
        ----------
        x : torch.Tensor
            An example input (one sample or a batch).

        Returns
        -------
        list[LayerInfo]
        """
        with self._lock:
            forward, _ = self._forward(x)
            infos = []
            for name in self.layer_names:
                tap = forward.taps[name]
                if tap.calls != 1:
                    continue
                axis = channel_axis(self._modules[name])
                shape = tuple(tap.activation.shape[1:])
                infos.append(
                    LayerInfo(name, type(self._modules[name]).__name__, tap.activation.shape[axis], shape, tap.order)
                )
            return sorted(infos, key=lambda info: info.order)

    def predict(self, x):
        """The model output (logits) for ``x``, from the cached forward pass."""
        with self._lock:
            forward, unbatched = self._forward(x)
            output = forward.output.detach()
            return output[0] if unbatched else output

    def attribute(self, x, target=None, conditions=None, record=()):
        """CRP attribution of ``x`` (Eq. 8-10).

        Parameters
        ----------
        x : torch.Tensor
            One sample (e.g. ``[C, H, W]``) or a batch.
        target : int, list[int], torch.Tensor or None
            The explained class(es); see the class notes.
        conditions : dict[str, int or list[int]], optional
            Channels per layer (Eq. 8).
        record : Iterable[str]
            Layers whose relevance and activations to return.

        Returns
        -------
        Attribution
        """
        with self._lock:
            conditions = self._conditions(conditions)
            record = [self._layer(name) for name in record]
            forward, unbatched = self._forward(x)
            conditions = self._validated_conditions(forward, conditions)
            masks = self._masks(forward, conditions)
            start, grad, _ = self._start(forward, target, conditions, masks)
            capture = [forward.input] + [forward.tap(name) for name in record]
            grads = forward.backward(start, grad, capture, masks)
            input_relevance = grads[0].detach()
            heatmap = input_relevance.sum(dim=1) if input_relevance.ndim > 2 else input_relevance
            maps = {name: g.detach() for name, g in zip(record, grads[1:])}
            relevance = {name: _spatial_sum(maps[name], channel_axis(self._modules[name])) for name in record}
            activations = {name: forward.tap(name).activation for name in record}
            result = Attribution(
                heatmap=heatmap,
                input_relevance=input_relevance,
                relevance=relevance,
                relevance_maps=maps,
                activations=activations,
                prediction=forward.output.detach(),
                target=target,
                conditions=conditions,
            )
            return _unbatch(result) if unbatched else result

    def _single(self, x, what):
        forward, _ = self._forward(x)
        if forward.input.shape[0] != 1:
            raise CRPError(f"{what} explains one sample; got a batch of {forward.input.shape[0]}")
        return forward

    def _layer_relevance(self, forward, layer, target, conditions):
        """Relevance arriving at ``layer`` (before its own mask), with the other conditions applied.

        Returns ``(relevance, bypass)``: ``bypass`` is the input relevance that does not pass the layer (``None`` for
        a class-free start at the layer, or when no path bypasses it). Without a class, the relevance at the layer
        is its activation (Sec. 2.3.5).
        """
        key = ("layer", layer, _target_key(target), tuple(sorted((k, tuple(v)) for k, v in conditions.items())))
        memo = forward.memo
        if key in memo:
            return memo[key]
        tap = forward.tap(layer)
        masks = self._masks(forward, conditions)
        if target is None:
            above = {name: c for name, c in conditions.items() if forward.tap(name).order > tap.order}
            if above:
                raise CRPError(
                    f"without a target class the relevance starts at layer {layer!r} (Sec. 2.3.5), so conditions on "
                    f"layers above it ({', '.join(sorted(above))}) cannot apply; give a target or drop them"
                )
            result = (tap.activation, None)
        else:
            start, grad, _ = self._start(forward, target, {}, masks)
            if forward.bypasses(layer):
                masks[layer] = torch.zeros_like(self._mask(forward, layer, []))
                relevance, bypass = forward.backward(start, grad, [tap.output, forward.input], masks)
                result = (relevance.detach(), bypass.detach())
            else:
                (relevance,) = forward.backward(start, grad, [tap.output], masks)
                result = (relevance.detach(), None)
        memo[key] = result
        return result

    def channel_relevance(self, x, layer, target=None, conditions=None):
        """Rank the channels of ``layer`` by relevance for one sample (Eq. 10, Eq. 15).

        Without a target, channels are ranked by their summed activation (the relevance a class-free backward
        starts with, Sec. 2.3.5). Conditions on ``layer`` itself restrict which channels keep relevance.

        Returns
        -------
        ChannelRelevance
        """
        with self._lock:
            layer = self._layer(layer)
            conditions = self._conditions(conditions)
            forward = self._single(x, "channel_relevance")
            conditions = self._validated_conditions(forward, conditions)
            own = conditions.pop(layer, None)
            relevance, _ = self._layer_relevance(forward, layer, target, conditions)
            if own is not None:
                relevance = relevance * self._mask(forward, layer, own)
            values = _spatial_sum(relevance, channel_axis(self._modules[layer]))[0]
            total = float(values.sum())
            return ChannelRelevance(layer, values, _proportion(values), total, torch.argsort(values, descending=True))

    def conditional_heatmaps(self, x, layer, channels, target=None, conditions=None):
        """One conditional heatmap per channel of ``layer`` (Eq. 9), for one sample, in the order of ``channels``.

        The forward pass and the backward pass from the output down to ``layer`` are shared; the k backward passes
        from ``layer`` to the input run as one vectorised pass. Each heatmap equals
        ``attribute(x, target, {**conditions, layer: [channel]}).heatmap``. Without a target, the backward starts
        at the channel's own activation (class-free concept localisation, Sec. 2.3.5).

        Returns
        -------
        torch.Tensor
            ``[k, H, W]`` for images (``[k, L]`` for 1-D signals).
        """
        with self._lock:
            layer = self._layer(layer)
            conditions = self._conditions(conditions)
            forward = self._single(x, "conditional_heatmaps")
            conditions = self._validated_conditions(forward, conditions)
            if layer in conditions:
                raise CRPError(f"conditions already select channels of {layer!r}; pass those as `channels` instead")
            channels = self._channels(forward, layer, channels, ordered=True)
            relevance, bypass = self._layer_relevance(forward, layer, target, conditions)
            grads = self._channel_masks(forward, layer, channels) * relevance
            below = self._masks(forward, conditions)
            (input_relevance,) = forward.backward(forward.tap(layer).site, grads, [forward.input], below, batched=True)
            input_relevance = input_relevance[:, 0].detach()
            if bypass is not None:
                input_relevance = input_relevance + bypass[0]
            return input_relevance.sum(dim=1) if input_relevance.ndim > 2 else input_relevance

    def region_relevance(self, x, layer, mask, target=None, conditions=None):
        """Relevance of every channel of ``layer`` inside an input region (Eq. 11-12, Fig. 16), for one sample.

        Equals summing each channel's conditional heatmap over the region, for all channels at once: the backward
        from ``layer`` to the input is linear in the layer's relevance, so one differentiated backward pass gives
        the region's sensitivity to every neuron of the layer.

        Parameters
        ----------
        mask : torch.Tensor or numpy.ndarray
            Boolean input region, shaped like the input's spatial dimensions (``[H, W]`` or ``[L]``).

        Returns
        -------
        RegionRelevance
        """
        with self._lock:
            layer = self._layer(layer)
            conditions = self._conditions(conditions)
            forward = self._single(x, "region_relevance")
            conditions = self._validated_conditions(forward, conditions)
            if layer in conditions:
                raise CRPError(f"conditions already select channels of {layer!r}; region_relevance ranks all of them")
            region = self._region(forward, mask)
            relevance, bypass = self._layer_relevance(forward, layer, target, conditions)
            masks = self._masks(forward, conditions)
            with torch.enable_grad():
                seed = relevance.detach().clone().requires_grad_()
                (input_relevance,) = forward.backward(
                    forward.tap(layer).site, seed, [forward.input], masks, create_graph=True
                )
                (sensitivity,) = torch.autograd.grad((input_relevance * region).sum(), seed, allow_unused=True)
            if sensitivity is None:
                sensitivity = torch.zeros_like(relevance)
            axis = channel_axis(self._modules[layer])
            values = _spatial_sum(sensitivity.detach() * relevance, axis)[0]
            channels = _spatial_sum(relevance, axis)[0]
            total = float(channels.sum())
            region_total = float(values.sum())
            bypass_in_region = float((bypass * region).sum()) if bypass is not None else 0.0
            return RegionRelevance(
                layer=layer,
                relevance=values,
                share_of_region=_proportion(values),
                share_of_total=values / max(float(channels.abs().sum()), 1e-30),
                region_total=region_total,
                total=total,
                bypass=bypass_in_region,
                order=torch.argsort(values, descending=True),
            )

    def _region(self, forward, mask):
        """Validate a boolean input region and return it broadcastable to the input ``[1, 1, ...spatial]``."""
        mask = torch.as_tensor(mask)
        spatial = tuple(forward.input.shape[2:]) if forward.input.ndim > 2 else tuple(forward.input.shape[1:])
        if mask.ndim == len(spatial) + 1 and mask.shape[0] == 1:
            mask = mask[0]
        if tuple(mask.shape) != spatial:
            raise CRPError(
                f"the region mask has shape {tuple(mask.shape)}, but the input's spatial shape is {spatial}: "
                "give a boolean mask of that shape"
            )
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise CRPError("the region mask must be boolean (or 0/1)")
            mask = mask.bool()
        if not bool(mask.any()):
            raise CRPError("the region mask is empty; select at least one input position")
        mask = mask.to(device=forward.input.device, dtype=forward.input.dtype)
        return mask.reshape((1, 1, *spatial)) if forward.input.ndim > 2 else mask.reshape((1, *spatial))

    def subconcepts(self, x, layer, channel, lower_layer, target=None, k=5, conditions=None):
        """The ``k`` channels of ``lower_layer`` that carry most of ``channel``'s relevance (Eq. 13-16).

        Only relevance flowing through ``(layer, channel)`` is counted, so the shares are exact through residual
        connections; they sum to the fraction of the parent's relevance that reaches ``lower_layer``.

        Returns
        -------
        Subconcepts
        """
        with self._lock:
            layer, lower_layer = self._layer(layer), self._layer(lower_layer)
            conditions = self._conditions(conditions)
            forward = self._single(x, "subconcepts")
            conditions = self._validated_conditions(forward, conditions)
            (channel,) = self._channels(forward, layer, [channel])
            if forward.tap(lower_layer).order >= forward.tap(layer).order:
                ran = forward.layer_order([n for n in self.layer_names if forward.taps[n].calls == 1])
                raise CRPError(
                    f"lower_layer {lower_layer!r} must come before {layer!r} in the forward pass; layers from input "
                    f"to output: {', '.join(ran)}"
                )
            for name in (layer, lower_layer):
                if name in conditions:
                    raise CRPError(f"conditions must not select channels of {name!r} here; it is a parameter")
            relevance, _ = self._layer_relevance(forward, layer, target, conditions)
            parent = relevance * self._mask(forward, layer, [channel])
            parent_relevance = float(parent.sum())
            below = self._masks(forward, conditions)
            (lower,) = forward.backward(forward.tap(layer).site, parent, [forward.tap(lower_layer)], below)
            values = _spatial_sum(lower.detach(), channel_axis(self._modules[lower_layer]))[0]
            order = torch.argsort(values, descending=True)[: max(0, int(k))]
            top = values[order]
            return Subconcepts(
                layer=layer,
                channel=channel,
                lower_layer=lower_layer,
                parent_relevance=parent_relevance,
                channels=[int(c) for c in order],
                relevance=top,
                share=_share(top, parent_relevance),
                all_relevance=values,
            )

    def attribution_graph(
        self, x, layer, channel, target=None, width=(3, 2), layers=None, conditions=None, heatmaps=False
    ):
        """The disentangled attribution graph of ``(layer, channel)`` (Sec. 3.4, Fig. 17).

        See :func:`crp_widgets.engine.hierarchy.attribution_graph`.
        """
        from .hierarchy import attribution_graph

        return attribution_graph(self, x, layer, channel, target, width, layers, conditions, heatmaps)

    def drill_down(self, x, path, target=None, k=5, next_layer=None, heatmaps=True, conditions=None):
        """Top-k channels of the next layer down at each step of a path of channels (seed 000).

        See :func:`crp_widgets.engine.hierarchy.drill_down`.
        """
        from .hierarchy import drill_down

        return drill_down(self, x, path, target, k, next_layer, heatmaps, conditions)

    def receptive_fields(self, layer, neurons, x):
        """Receptive fields of neurons of ``layer`` with the flat rule (Sec. 2.3.4, Eq. 25).

        Parameters
        ----------
        layer : str
            The layer.
        neurons : Sequence[tuple[int, ...]]
            Indices into one sample's output of the layer, e.g. ``(channel, row, column)``.
        x : torch.Tensor or tuple[int, ...]
            An input, or the shape of one (only the shape matters).

        Returns
        -------
        list[ReceptiveField]
        """
        with self._lock:
            layer = self._layer(layer)
            shape = tuple(x.shape) if hasattr(x, "shape") else tuple(x)
            reference = next(iter(self.model.parameters()), None)
            probe = torch.zeros(
                shape, dtype=getattr(reference, "dtype", torch.float32), device=getattr(reference, "device", "cpu")
            )
            probe, _ = validate_input(probe, self.model, self._spec)
            key = (tuple(probe.shape), self._tapped, self._state_key())
            forward = self._fields.get(key)
            if forward is None:
                forward = record_forward(self.model, probe, self._flat, sorted(self._tapped))
                if self.vectorize is not None:
                    forward.vectorized = bool(self.vectorize)
                self._fields = {key: forward}  # input independent: one shape and model state at a time
            tap = forward.tap(layer)
            sample = tuple(tap.activation.shape[1:])
            neurons = [tuple(int(i) for i in (n if isinstance(n, (tuple, list)) else (n,))) for n in neurons]
            for neuron in neurons:
                if len(neuron) != len(sample) or not all(0 <= i < s for i, s in zip(neuron, sample)):
                    raise CRPError(
                        f"neuron {neuron} is not an index into the output of layer {layer!r}, whose shape per sample "
                        f"is {sample}"
                    )
            missing = list(dict.fromkeys(n for n in neurons if (layer, n) not in forward.memo))
            if missing:
                grads = torch.zeros((len(missing), *tap.activation.shape), dtype=probe.dtype, device=probe.device)
                for row, neuron in enumerate(missing):
                    grads[(row, 0, *neuron)] = 1
                (weights,) = forward.backward(tap.site, grads, [forward.input], batched=True)
                weights = weights[:, 0].detach()
                weights = weights.sum(dim=1) if weights.ndim > 2 else weights
                for neuron, weight in zip(missing, weights):
                    forward.memo[layer, neuron] = ReceptiveField(weight > 0, bounding_box(weight > 0), weight)
            return [forward.memo[layer, neuron] for neuron in neurons]

    def receptive_field(self, layer, neuron, x):
        """The receptive field of one neuron (see :meth:`receptive_fields`)."""
        return self.receptive_fields(layer, [neuron], x)[0]


def _target_key(target):
    if isinstance(target, torch.Tensor):
        return ("tensor", tuple(target.flatten().tolist()))
    if isinstance(target, (list, tuple)):
        return ("list", tuple(target))
    return target


def _unbatch(result):
    """Drop the batch dimension of every tensor of an :class:`Attribution` of one unbatched sample."""
    result.heatmap = result.heatmap[0]
    result.input_relevance = result.input_relevance[0]
    result.relevance = {k: v[0] for k, v in result.relevance.items()}
    result.relevance_maps = {k: v[0] for k, v in result.relevance_maps.items()}
    result.activations = {k: v[0] for k, v in result.activations.items()}
    result.prediction = result.prediction[0]
    return result
