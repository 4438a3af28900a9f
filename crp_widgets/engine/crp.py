"""Concept Relevance Propagation (Achtibat et al. 2023, Nature Machine Intelligence, Sec. 2.2) on a user's model.

:class:`CRP` owns one :class:`~crp_widgets.engine.context.Context` per composite: the model's explainable graph,
its canonized and modified parameters and the recorded forward passes. One forward pass per (input, model state) is
recorded and cached; attributions, rankings and conditional heatmaps are backward passes on it.
``conditional_heatmaps`` runs the backward from the output down to the layer once and the k backward passes from
the layer to the input together. The analyses use the documented methods of the section "For the analyses".
"""

import contextlib
import math
import threading

import torch
from zennit.composites import LayerMapComposite
from zennit.rules import Flat, Pass
from zennit.types import Activation, BatchNorm
from zennit.types import Linear as LinearTypes

from .composites import default_composite
from .context import Context
from .errors import CRPError
from .inspection import (
    InputSpec,
    LayerInfo,
    channel_list,
    check_finite,
    explainable_layers,
    layer_groups,
    resolve_layer,
)
from .inspection import validate_input as _validate_input
from .interventions import Edit, edits_key
from .receptive import bounding_box
from .results import Attribution, ChannelRelevance, ReceptiveField, RegionRelevance, Subconcepts

# the relevance at the input may not shrink below this share of the explained output's (vanished) ...
_VANISHED = 1e-6
# ... nor grow above this multiple of it (blown up): never a silent wrong picture
_BLOWN_UP = 1e4


def spatial_sum(tensor, axis):
    """Sum a ``[B, ...]`` tensor over everything but the batch and the channel ``axis`` -> ``[B, C]``."""
    axis = axis % tensor.ndim
    dims = [d for d in range(1, tensor.ndim) if d != axis]
    return tensor.sum(dim=dims) if dims else tensor


def _proportion(values):
    """Each value's share of the summed absolute values (supporting relevance positive, contradicting negative)."""
    scale = float(values.abs().sum())
    return values / scale if scale > 1e-30 else torch.zeros_like(values)


def _share(values, total):
    """``values / total``, zero where the total vanishes."""
    return values / total if abs(total) > 1e-12 else torch.zeros_like(values)


def target_mask(output, target):
    """One-hot selection ``[B, n]`` of the explained output(s) (A.3: relevance starts at the output value).

    ``target``: a class index, a list of classes explained together, or one class per sample (a tensor or array).
    """
    if output.ndim < 2:
        raise CRPError(f"the model output has shape {tuple(output.shape)}; expected [B, classes]")
    batch, outputs = output.shape[0], output.shape[1]

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


def flat_composite():
    """The flat rule on linear layers, relevance passed through activations (receptive fields, Sec. 2.3.4)."""
    return LayerMapComposite([(LinearTypes, Flat()), (Activation, Pass()), (BatchNorm, Pass())])


class _Local(threading.local):
    """Per thread: whether forward passes are cached, and the edits of the ``edited`` blocks it is in."""

    uncached = False  # the defaults on every thread

    def __init__(self):
        self.edits = {}


class _Uncached:
    """The block of :meth:`CRP.uncached`."""

    def __init__(self, local):
        self.local, self.previous = local, False

    def __enter__(self):
        self.previous, self.local.uncached = self.local.uncached, True

    def __exit__(self, *exc):
        self.local.uncached = self.previous


class CRP:
    """Concept Relevance Propagation on a model, with zennit rules.

    Parameters
    ----------
    model : torch.nn.Module
        The model to explain. It is never changed: the engine traces it once and computes with its parameters.
    composite : zennit.core.Composite, optional
        The rules of the layers; by default EpsilonPlusFlat (A.3). Operations outside layers (residual sums,
        gates, normalisation, attention) get the rules of :mod:`crp_widgets.engine.ops`.
    layers : Iterable[str], optional
        Extra module names to treat as concept layers (e.g. ResNet blocks), besides Conv and Linear layers.
    cache_size : int
        How many recorded forward passes to keep (each holds the graph of one input).
    vectorize : bool, optional
        Run the k backward passes of a layer's channels as one ``torch.func.vmap`` pass. By default only on GPUs.
    epsilon : float
        The stabiliser of the rules outside the composite's layers (sums, gates, normalisation, attention).
    attention : {"cp", "attnlrp"}
        Attention by CP-LRP (the weights held constant, relevance through the values; Ali et al. 2022), or by
        AttnLRP's softmax and product rules (Achtibat et al. 2024, Prop. 3.1 and 3.3).

    Notes
    -----
    Conditions are ``{layer: channels}``: channels of one layer are OR-ed, layers AND-ed (Eq. 8). A condition
    masks relevance where it flows through that layer; relevance on parallel branches (residual shortcuts) is kept.
    ``target`` is a class index, a list of classes explained together, a 1-D integer tensor with one class per
    sample, or ``None``: no class, the relevance starts from the activation of the topmost conditioned layer
    (Sec. 2.3.5), or from the whole output when there are no conditions (Fig. 2a).
    """

    def __init__(self, model, composite=None, layers=(), cache_size=2, vectorize=None, epsilon=1e-6, attention="cp"):
        if not isinstance(model, torch.nn.Module):
            raise CRPError(f"CRP explains a torch.nn.Module, got {type(model).__name__}")
        if attention not in ("cp", "attnlrp"):
            raise CRPError(f"attention must be 'cp' (CP-LRP) or 'attnlrp' (AttnLRP), got {attention!r}")
        self.model = model
        self.composite = composite if composite is not None else default_composite(model)
        self._local = _Local()  # per thread: whether forward passes are cached
        self.context = Context(model, self.composite, epsilon=epsilon, cache_size=cache_size, attention=attention)
        self.fields = Context(model, flat_composite(), mode="flat", cache_size=1)
        self.layer_names = explainable_layers(model)
        self.tapped = frozenset(self.layer_names)
        for name in layers:
            self.validate_layer(name)
        self.input_spec = InputSpec.of(model)
        self.vectorize = vectorize

    # --------------------------------------------------------------------------------------------- for the analyses

    def validate_layer(self, name):
        """Return ``name`` if it is a layer of the model (any module name), else raise :class:`UnknownLayerError`.

        The error lists the valid layers. A module named for the first time becomes a concept layer of this CRP.
        """
        resolve_layer(name, dict(self.model.named_modules()), self.layer_names)
        if name not in self.tapped:
            self.tapped = self.tapped | {name}
            if name not in self.layer_names:
                self.layer_names.append(name)
        return name

    def validate_input(self, x):
        """Check an input; return it batched and whether it was one unbatched sample."""
        return _validate_input(x, self.model, self.input_spec)

    def forward_pass(self, x):
        """The recorded forward pass of ``x`` (cached) and whether ``x`` was one unbatched sample."""
        x, unbatched = _validate_input(x, self.model, self.input_spec, finite=False)
        check_finite(x)
        self.context.refresh()
        cache = not self._local.uncached
        forward = self.context.forward(x, self.tapped, self.edits, edits_key(self.edits), cache=cache)
        if self.vectorize is not None:
            forward.vectorized = bool(self.vectorize)
        return forward, unbatched

    def single_pass(self, x, what):
        """The recorded forward pass of one sample; ``what`` names the caller for the error on a batch."""
        forward, _ = self.forward_pass(x)
        if forward.input.shape[0] != 1:
            raise CRPError(f"{what} explains one sample; got a batch of {forward.input.shape[0]}")
        return forward

    def record(self, x, layers, observe=None):
        """An uncached forward pass of a validated batch with ``layers`` tapped (``observe`` streams activations)."""
        self.context.refresh()
        return self.context.record(x, layers, self.edits, observe)

    def uncached(self):
        """Inside this block, forward passes of this thread are not kept (an analysis leaves the cache to clicks).

        Examples
        --------
        >>> with crp.uncached():
        ...     profiles = class_profiles(crp, dataset, layers)
        """
        return _Uncached(self._local)

    def channel_axis(self, layer):
        """The axis of ``layer``'s output that holds its channels (as seen in the last forward pass)."""
        return self.context.channel_axis(layer)

    def layout(self, layer):
        """Where ``layer``'s channels and positions lie (:class:`~crp_widgets.engine.inspection.Layout`).

        As seen in the last forward pass; raises if none has tapped the layer yet.
        """
        layout = self.context.layouts.get(layer)
        if layout is None:
            raise CRPError(f"layer {layer!r} has not run yet: run a forward pass (e.g. crp.predict(x)) first")
        return layout

    def channels(self, forward, layer, channels, ordered=False):
        """Validate channel indices of ``layer``; return them sorted (``ordered``: as given)."""
        tap = forward.tap(layer)
        return channel_list(channels, layer, tap.activation.shape[tap.axis], ordered)

    def conditions(self, conditions, forward=None):
        """Validate conditions ``{layer: channels}``; with a forward pass, their channels too."""
        if conditions is None:
            return {}
        if not isinstance(conditions, dict):
            raise CRPError(
                "conditions must be a dict {layer name: channel or list of channels}, "
                f"got {type(conditions).__name__}"
            )
        for name in conditions:
            self.validate_layer(name)
        if forward is None:
            return dict(conditions)
        return {name: self.channels(forward, name, channels) for name, channels in conditions.items()}

    def channel_mask(self, forward, layer, channels):
        """Eq. 8/9: a 0/1 mask over ``layer``'s channel axis selecting ``channels``, broadcastable to its output."""
        tap = forward.tap(layer)
        activation = tap.activation
        shape = [1] * activation.ndim
        shape[tap.axis] = activation.shape[tap.axis]
        mask = torch.zeros(shape[tap.axis], dtype=activation.dtype, device=activation.device)
        mask[channels] = 1
        return mask.reshape(shape)

    def masks(self, forward, conditions):
        """The mask of every condition (Eq. 8)."""
        return {name: self.channel_mask(forward, name, channels) for name, channels in conditions.items()}

    def channel_masks(self, forward, layer, channels):
        """``[k, 1, C, 1, ...]``: one mask per channel, for a batched backward."""
        return torch.stack([self.channel_mask(forward, layer, [channel]) for channel in channels])

    def start(self, forward, target, conditions, masks):
        """Where the backward starts and with what relevance: ``(tensor, relevance, layer or None)``.

        From the output value (A.3) or, without a class, from the topmost conditioned layer's activation (Sec. 2.3.5).
        """
        if target is None and conditions:
            top = forward.layer_order(conditions)[-1]
            tap = forward.tap(top)
            return tap.site, tap.activation * masks[top], top
        output = forward.output.detach()
        if target is None:
            return forward.output, output, None
        return forward.output, output * target_mask(forward.output, target), None

    def layer_relevance(self, forward, layer, target, conditions):
        """Relevance arriving at ``layer`` (before its own mask), with the other conditions applied.

        Returns ``(relevance, bypass)``: ``bypass`` is the input relevance that does not pass the layer (``None`` for
        a class-free start at the layer, or when no path bypasses it). Without a class, the relevance at the layer
        is its activation (Sec. 2.3.5).
        """
        key = ("layer", layer, _target_key(target), tuple(sorted((k, tuple(v)) for k, v in conditions.items())))
        if key in forward.memo:
            return forward.memo[key]
        tap = forward.tap(layer)
        masks = self.masks(forward, conditions)
        if target is None:
            above = {name for name in conditions if forward.tap(name).order > tap.order}
            if above:
                raise CRPError(
                    f"without a target class the relevance starts at layer {layer!r} (Sec. 2.3.5), so conditions on "
                    f"layers above it ({', '.join(sorted(above))}) cannot apply; give a target or drop them"
                )
            result = (tap.activation, None)
        else:
            start, grad, _ = self.start(forward, target, {}, masks)
            if forward.bypasses(layer):
                masks[layer] = torch.zeros_like(self.channel_mask(forward, layer, []))
                relevance, bypass = forward.backward(start, grad, [tap.output, forward.input], masks)
                result = (relevance.detach(), bypass.detach())
            else:
                (relevance,) = forward.backward(start, grad, [tap.output], masks)
                result = (relevance.detach(), None)
        forward.memo[key] = result
        return result

    def check(self, forward, relevance, start_total, conditions):
        """Never a silent wrong picture: raise if ``relevance`` at the input is not finite or lost its size.

        An explanation without conditions must keep the order of magnitude of the relevance it started with
        (``start_total``), unless the input is all zeros and receives none; the error names the layer where the
        relevance vanished or blew up.
        """
        finite = bool(torch.isfinite(relevance).all())
        size = float(relevance.abs().sum()) if finite else math.inf
        reference = abs(start_total)
        if finite and (conditions or reference < 1e-12 or _VANISHED * reference <= size <= _BLOWN_UP * reference):
            return
        if size == 0 and not bool(forward.input.detach().any()):
            return  # an all-zero input: rules that multiply by the input (z+, epsilon) give it none, exactly
        raise CRPError(self._diagnosis(forward, finite, size / max(reference, 1e-30)))

    def _diagnosis(self, forward, finite, ratio):
        """Name the layer where relevance stopped being finite or kept its size, from the output down."""
        taps = [
            tap for tap in forward.taps.values() if tap.calls == 1 and tap.problem is None and tap.output.requires_grad
        ]
        taps.sort(key=lambda tap: tap.order, reverse=True)
        output = forward.output.detach()
        grads = forward.backward(forward.output, output, [tap.output for tap in taps])
        total = max(float(output.abs().sum()), 1e-30)
        above = "the output"
        for tap, grad in zip(taps, grads):
            size = float(grad.abs().sum())
            if not math.isfinite(size) or not _VANISHED * total <= size <= _BLOWN_UP * total:
                what = "is not finite" if not math.isfinite(size) else f"is {size / total:.3g} times the output's"
                return (
                    f"the relevance {what} at layer {tap.name!r} (coming from {above}): the rules do not explain this "
                    "model faithfully there, so no heatmap is shown"
                )
            above = repr(tap.name)
        what = "is not finite" if not finite else f"is {ratio:.3g} times the explained output's"
        return (
            f"the relevance at the input {what} (below layer {above}); the rules do not explain this model faithfully"
        )

    # ------------------------------------------------------------------------------------------------- public API

    def layer_groups(self):
        """The layers a user explores, grouped (block outputs by stage, else conv/linear layers by parent).

        Only layers that run once per forward pass; any other module can still be named as a layer.

        Returns
        -------
        list[tuple[str, list[str]]]
            See :func:`crp_widgets.engine.inspection.layer_groups`.
        """
        self.context.refresh()
        calls = self.context.graph().layers
        return layer_groups(self.model, lambda name: calls.get(name) == 1)

    def layers(self, x):
        """The explainable layers with their output shapes and channel counts, in forward order.

        Returns
        -------
        list[LayerInfo]
        """
        forward, _ = self.forward_pass(x)
        infos = []
        for name in self.layer_names:
            tap = forward.taps[name]
            if tap.calls != 1 or tap.problem is not None:
                continue
            shape = tuple(tap.activation.shape[1:])
            kind = type(self.model.get_submodule(name)).__name__
            infos.append(LayerInfo(name, kind, tap.activation.shape[tap.axis], shape, tap.order))
        return sorted(infos, key=lambda info: info.order)

    def predict(self, x):
        """The model output (logits) for ``x``, from the cached forward pass."""
        forward, unbatched = self.forward_pass(x)
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
        record = [self.validate_layer(name) for name in record]
        conditions = self.conditions(conditions)
        forward, unbatched = self.forward_pass(x)
        with forward.lock:
            conditions = self.conditions(conditions, forward)
            masks = self.masks(forward, conditions)
            start, grad, _ = self.start(forward, target, conditions, masks)
            grads = forward.backward(start, grad, [forward.input] + [forward.tap(name) for name in record], masks)
            input_relevance = grads[0].detach()
            self.check(forward, input_relevance, float(grad.sum()), conditions)
            maps = {name: g.detach() for name, g in zip(record, grads[1:])}
            result = Attribution(
                heatmap=input_relevance.sum(dim=1) if input_relevance.ndim > 2 else input_relevance,
                input_relevance=input_relevance,
                relevance={name: spatial_sum(maps[name], forward.tap(name).axis) for name in record},
                relevance_maps=maps,
                activations={name: forward.tap(name).activation for name in record},
                prediction=forward.output.detach(),
                target=target,
                conditions=conditions,
            )
        return _unbatch(result) if unbatched else result

    def channel_relevance(self, x, layer, target=None, conditions=None):
        """Rank the channels of ``layer`` by relevance for one sample (Eq. 10, Eq. 15).

        Without a target, channels are ranked by their summed activation (the relevance a class-free backward
        starts with, Sec. 2.3.5). Conditions on ``layer`` itself restrict which channels keep relevance.

        Returns
        -------
        ChannelRelevance
        """
        layer = self.validate_layer(layer)
        conditions = self.conditions(conditions)
        forward = self.single_pass(x, "channel_relevance")
        with forward.lock:
            conditions = self.conditions(conditions, forward)
            own = conditions.pop(layer, None)
            relevance, _ = self.layer_relevance(forward, layer, target, conditions)
            if own is not None:
                relevance = relevance * self.channel_mask(forward, layer, own)
            values = spatial_sum(relevance, forward.tap(layer).axis)[0]
            total = float(values.sum())
            return ChannelRelevance(layer, values, _proportion(values), total, torch.argsort(values, descending=True))

    def conditional_heatmaps(self, x, layer, channels, target=None, conditions=None):
        """One conditional heatmap per channel of ``layer`` (Eq. 9), for one sample, in the order of ``channels``.

        The forward pass and the backward pass from the output down to ``layer`` are shared; the k backward passes
        from ``layer`` to the input run together. Each heatmap equals
        ``attribute(x, target, {**conditions, layer: [channel]}).heatmap``. Without a target, the backward starts
        at the channel's own activation (class-free concept localisation, Sec. 2.3.5).

        Returns
        -------
        torch.Tensor
            ``[k, H, W]`` for images (``[k, L]`` for 1-D signals).
        """
        layer = self.validate_layer(layer)
        conditions = self.conditions(conditions)
        forward = self.single_pass(x, "conditional_heatmaps")
        with forward.lock:
            conditions = self.conditions(conditions, forward)
            if layer in conditions:
                raise CRPError(f"conditions already select channels of {layer!r}; pass those as `channels` instead")
            channels = self.channels(forward, layer, channels, ordered=True)
            relevance, bypass = self.layer_relevance(forward, layer, target, conditions)
            grads = self.channel_masks(forward, layer, channels) * relevance
            below = self.masks(forward, conditions)
            (input_relevance,) = forward.backward(forward.tap(layer).site, grads, [forward.input], below, batched=True)
            input_relevance = input_relevance[:, 0].detach()
            if bypass is not None:
                input_relevance = input_relevance + bypass[0]
            if not bool(torch.isfinite(input_relevance).all()):
                self.check(forward, input_relevance, 1.0, {})
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
        layer = self.validate_layer(layer)
        conditions = self.conditions(conditions)
        forward = self.single_pass(x, "region_relevance")
        with forward.lock:
            conditions = self.conditions(conditions, forward)
            if layer in conditions:
                raise CRPError(f"conditions already select channels of {layer!r}; region_relevance ranks all of them")
            region = _region(forward, mask)
            relevance, bypass = self.layer_relevance(forward, layer, target, conditions)
            masks = self.masks(forward, conditions)
            with torch.enable_grad():
                seed = relevance.detach().clone().requires_grad_()
                (input_relevance,) = forward.backward(
                    forward.tap(layer).site, seed, [forward.input], masks, create_graph=True
                )
                (sensitivity,) = torch.autograd.grad((input_relevance * region).sum(), seed, allow_unused=True)
            if sensitivity is None:
                sensitivity = torch.zeros_like(relevance)
            axis = forward.tap(layer).axis
            values = spatial_sum(sensitivity.detach() * relevance, axis)[0]
            channels = spatial_sum(relevance, axis)[0]
            return RegionRelevance(
                layer=layer,
                relevance=values,
                share_of_region=_proportion(values),
                share_of_total=values / max(float(channels.abs().sum()), 1e-30),
                region_total=float(values.sum()),
                total=float(channels.sum()),
                bypass=float((bypass * region).sum()) if bypass is not None else 0.0,
                order=torch.argsort(values, descending=True),
            )

    def subconcepts(self, x, layer, channel, lower_layer, target=None, k=5, conditions=None):
        """The ``k`` channels of ``lower_layer`` that carry most of ``channel``'s relevance (Eq. 13-16).

        Only relevance flowing through ``(layer, channel)`` is counted, so the shares are exact through residual
        connections; they sum to the fraction of the parent's relevance that reaches ``lower_layer``.

        Returns
        -------
        Subconcepts
        """
        layer, lower_layer = self.validate_layer(layer), self.validate_layer(lower_layer)
        conditions = self.conditions(conditions)
        forward = self.single_pass(x, "subconcepts")
        with forward.lock:
            conditions = self.conditions(conditions, forward)
            (channel,) = self.channels(forward, layer, [channel])
            if forward.tap(lower_layer).order >= forward.tap(layer).order:
                ran = forward.layer_order([n for n in self.layer_names if forward.taps[n].calls == 1])
                raise CRPError(
                    f"lower_layer {lower_layer!r} must come before {layer!r} in the forward pass; layers from input "
                    f"to output: {', '.join(ran)}"
                )
            for name in (layer, lower_layer):
                if name in conditions:
                    raise CRPError(f"conditions must not select channels of {name!r} here; it is a parameter")
            relevance, _ = self.layer_relevance(forward, layer, target, conditions)
            parent = relevance * self.channel_mask(forward, layer, [channel])
            parent_relevance = float(parent.sum())
            below = self.masks(forward, conditions)
            (lower,) = forward.backward(forward.tap(layer).site, parent, [forward.tap(lower_layer)], below)
            values = spatial_sum(lower.detach(), forward.tap(lower_layer).axis)[0]
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
        """Top-k channels of the next layer down at each step of a path of channels.

        See :func:`crp_widgets.engine.hierarchy.drill_down`.
        """
        from .hierarchy import drill_down

        return drill_down(self, x, path, target, k, next_layer, heatmaps, conditions)

    def edited(self, edits):
        """Compute everything inside the ``with`` block on the model with ``{layer: Edit}`` applied (Sec. 4.1-4.3).

        Edits (:class:`~crp_widgets.engine.interventions.Scale`, :class:`~crp_widgets.engine.interventions.Blend`)
        change the layer's activations (of the canonized model, as CRP sees them) for the layers above; relevance
        passes an edit unchanged. Predictions, attributions and rankings in the block reflect the edits; results
        are cached per edit. The edits hold for this thread only: other threads compute without them meanwhile.

        Examples
        --------
        >>> with crp.edited({"features.conv4": Scale([6, 22])}):  # switch channels 6 and 22 off
        ...     crp.predict(x)
        """
        return self._edited(edits)

    @property
    def edits(self):
        """The edits of the ``edited`` blocks this thread is in (other threads compute without them)."""
        return self._local.edits

    @contextlib.contextmanager
    def _edited(self, edits):
        edits = _validated_edits(self, edits)
        previous = self._local.edits
        self._local.edits = {**previous, **edits}
        try:
            yield self
        finally:
            self._local.edits = previous

    def evaluate(self, x, edits=None, record=(), grad=False):
        """The output of the canonized model on ``x`` with ``edits``, and the outputs of the ``record`` layers.

        No relevance rules: the model's own function in eval mode, as CRP sees its layers. Without ``grad`` no
        gradients are computed (cheaper than :meth:`predict` for many edited passes: filter flipping, sweeps); with
        ``grad`` the outputs are differentiable with respect to the input and the recorded layers' outputs (plain
        gradients, e.g. for Integrated Gradients or concept vectors).

        Returns
        -------
        output : torch.Tensor
            The logits (unbatched for one sample).
        activations : dict[str, torch.Tensor]
            The recorded layers' outputs (after their edits).
        """
        record = [self.validate_layer(name) for name in record]
        edits = {**self.edits, **_validated_edits(self, edits)}
        batch, unbatched = self.validate_input(x)
        self.context.refresh()
        output, found = self.context.evaluate(batch, record, edits, grad)
        if unbatched:
            return output[0], {name: value[0] for name, value in found.items()}
        return output, found

    def clear_cache(self):
        """Drop the recorded forward passes (and the memory their graphs hold)."""
        self.context.clear()
        self.fields.clear()

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
        layer = self.validate_layer(layer)
        shape = tuple(x.shape) if hasattr(x, "shape") else tuple(x)
        reference = next(iter(self.model.parameters()), None)
        probe = torch.ones(
            shape, dtype=getattr(reference, "dtype", torch.float32), device=getattr(reference, "device", "cpu")
        )
        probe, _ = self.validate_input(probe)
        self.fields.refresh()
        forward = self.fields.forward(probe, self.tapped)
        with forward.lock:
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


def _validated_edits(crp, edits):
    edits = dict(edits or {})
    for name, edit in edits.items():
        crp.validate_layer(name)
        if not isinstance(edit, Edit):
            raise CRPError(f"the edit of layer {name!r} is a {type(edit).__name__}; give a Scale or a Blend")
    return edits


def _region(forward, mask):
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
