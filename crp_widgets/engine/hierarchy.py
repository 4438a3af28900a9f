"""Hierarchical concept composition: attribution graphs and path drill-downs.

Attribution graphs follow the CRP paper (Achtibat et al. 2023, Sec. 3.4, Fig. 17); path drill-downs follow Ghosh's
concept-detection report on VGG16 (Sec. 4).

Both follow relevance along chains of channels: a concept's relevance map at its layer is propagated down to the next
layer only through that concept, so every edge carries exactly the relevance flowing from the upper concept into the
lower one (also through residual connections). All the chains of one level run as one vectorised backward pass.
"""

import itertools

import torch

from .errors import CRPError
from .results import AttributionGraph, DrillStep, GraphEdge, GraphNode


def _per_channel(crp, layer, relevance):
    """``[n, C]`` channel relevance of a batch of relevance maps ``[n, ...]`` of ``layer`` (Eq. 14)."""
    axis = crp.channel_axis(layer) % relevance.ndim
    dims = [d for d in range(1, relevance.ndim) if d != axis]
    return relevance.sum(dim=dims) if dims else relevance


def layers_below(crp, forward, layer, count):
    """The ``count`` explainable layers that come right before ``layer`` in the forward pass (nearest first)."""
    order = forward.tap(layer).order
    earlier = [name for name in crp.layer_names if forward.taps[name].calls == 1 and forward.taps[name].order < order]
    return sorted(earlier, key=lambda name: forward.taps[name].order, reverse=True)[:count]


def _input_heatmaps(forward, layer, maps, masks):
    """Heatmaps (input relevance summed over input channels) for a batch of relevance maps at ``layer``."""
    (relevance,) = forward.backward(forward.tap(layer).site, maps, [forward.input], masks, batched=True)
    relevance = relevance[:, 0].detach()
    return relevance.sum(dim=1) if relevance.ndim > 2 else relevance


def attribution_graph(crp, x, layer, channel, target=None, width=(3, 2), layers=None, conditions=None, heatmaps=False):
    """The disentangled attribution graph of ``(layer, channel)`` (Sec. 3.4).

    At each lower layer, every concept of the previous level is followed separately (one backward pass each, run
    together): θ = {l: {c0}}, then θ = {l: {c0}, l-1: {ci}} for each of the top ``width[0]`` channels ci, and so on.
    A concept reached from several parents is one node; its relevance map is the union (OR) of its paths.

    Parameters
    ----------
    width : Sequence[int]
        How many lower concepts to follow per concept at each level; its length is the graph's depth.
    layers : Sequence[str], optional
        The lower layers, top to bottom; by default the explainable layers right below ``layer``.
    heatmaps : bool
        Also compute each node's conditional heatmap (relevance along its paths, down to the input).

    Returns
    -------
    AttributionGraph
    """
    layer = crp.validate_layer(layer)
    conditions = crp.conditions(conditions)
    if layers is not None:
        layers = [crp.validate_layer(name) for name in layers]
    forward = crp.single_pass(x, "attribution_graph")
    conditions = crp.conditions(conditions, forward)
    width = [int(w) for w in width]
    if not width or any(w < 1 for w in width):
        raise CRPError(f"width must list at least one positive number of concepts per level, got {width}")
    if layers is None:
        layers = layers_below(crp, forward, layer, len(width))
    if len(layers) < len(width):
        raise CRPError(
            f"the graph needs {len(width)} layers below {layer!r} (one per entry of width={tuple(width)}), "
            f"but only {len(layers)} are available: {layers}"
        )
    levels = [layer, *layers[: len(width)]]
    orders = [forward.tap(name).order for name in levels]
    if any(a <= b for a, b in itertools.pairwise(orders)):
        raise CRPError(f"the graph's layers must go from the output towards the input, got {levels}")
    for name in levels:
        if name in conditions:
            raise CRPError(f"conditions must not select channels of {name!r}, a layer of the graph")
    (channel,) = crp.channels(forward, layer, [channel])
    masks = crp.masks(forward, conditions)
    relevance, _ = crp.layer_relevance(forward, layer, target, conditions)
    root_map = relevance * crp.channel_mask(forward, layer, [channel])
    root_relevance = float(root_map.sum())
    # Relevance of every lower channel conditioned on the root alone: the node values (Fig. 17, parentheses).
    overall = forward.backward(forward.tap(layer).site, root_map, [forward.tap(n) for n in levels[1:]], masks)
    overall = [_per_channel(crp, name, r.detach())[0] for name, r in zip(levels[1:], overall)]

    def share(value):
        return value / root_relevance if abs(root_relevance) > 1e-12 else 0.0

    nodes = {(layer, channel): GraphNode(layer, channel, 0, root_relevance, 1.0)}
    edges = []
    frontier = {(layer, channel): root_map}
    for depth, (upper, lower) in enumerate(itertools.pairwise(levels), start=1):
        keys = list(frontier)
        maps = torch.stack([frontier[key] for key in keys])
        if heatmaps:
            for key, heatmap in zip(keys, _input_heatmaps(forward, upper, maps, masks)):
                nodes[key].heatmap = heatmap
        (low,) = forward.backward(forward.tap(upper).site, maps, [forward.tap(lower)], masks, batched=True)
        low = low.detach()
        flows = _per_channel(crp, lower, low[:, 0])
        following = {}
        for index, parent in enumerate(keys):
            parent_relevance = float(frontier[parent].sum())
            for child in torch.argsort(flows[index], descending=True)[: width[depth - 1]].tolist():
                flow = float(flows[index, child])
                fraction = flow / parent_relevance if abs(parent_relevance) > 1e-12 else 0.0
                edges.append(GraphEdge(parent, (lower, child), flow, fraction))
                value = float(overall[depth - 1][child])
                nodes.setdefault((lower, child), GraphNode(lower, child, depth, value, share(value)))
                child_map = low[index] * crp.channel_mask(forward, lower, [child])
                following[lower, child] = following.get((lower, child), 0) + child_map
        frontier = following
    if heatmaps and frontier:
        keys = list(frontier)
        maps = torch.stack([frontier[key] for key in keys])
        for key, heatmap in zip(keys, _input_heatmaps(forward, levels[-1], maps, masks)):
            nodes[key].heatmap = heatmap
    return AttributionGraph((layer, channel), levels, list(nodes.values()), edges)


def drill_down(crp, x, path, target=None, k=5, next_layer=None, heatmaps=True, conditions=None):
    """Follow a path of chosen channels down the network.

    As in Ghosh's concept-detection report (Sec. 4), which follows features.40 -> 37 -> 34 on a VGG16.

    At each step the path so far is the condition (layers AND-ed, Eq. 8; relevance followed only through the path),
    and the ``k`` most relevant channels of the next layer down are listed with their conditional heatmaps.

    Parameters
    ----------
    path : Sequence[tuple[str, int]]
        ``[(layer, channel), ...]`` from the output side towards the input.
    next_layer : str, optional
        The layer below the last path element; by default the explainable layer right below it.
    heatmaps : bool or "last"
        Compute the listed channels' conditional heatmaps at every step, or (``"last"``) only at the last one, the
        step a drill-down shows (one batched backward pass to the input instead of one per step).

    Returns
    -------
    list[DrillStep]
        One step per path element.
    """
    path = [(crp.validate_layer(name), channel) for name, channel in path]
    if not path:
        raise CRPError("the path is empty; give at least one (layer, channel) pair")
    conditions = crp.conditions(conditions)
    if next_layer is not None:
        next_layer = crp.validate_layer(next_layer)
    forward = crp.single_pass(x, "drill_down")
    conditions = crp.conditions(conditions, forward)
    path = [(name, crp.channels(forward, name, [channel])[0]) for name, channel in path]
    orders = [forward.tap(name).order for name, _ in path]
    if any(a <= b for a, b in itertools.pairwise(orders)):
        raise CRPError(f"the path must go from the output towards the input, got layers {[n for n, _ in path]}")
    masks = crp.masks(forward, conditions)
    relevance, _ = crp.layer_relevance(forward, path[0][0], target, conditions)
    current = relevance * crp.channel_mask(forward, path[0][0], [path[0][1]])
    steps = []
    for index, (name, _) in enumerate(path):
        if index + 1 < len(path):
            lower = path[index + 1][0]
        elif next_layer is not None:
            lower = next_layer
        else:
            below = layers_below(crp, forward, name, 1)
            if not below:
                break
            lower = below[0]
        if forward.tap(lower).order >= forward.tap(name).order:
            raise CRPError(f"layer {lower!r} does not come before {name!r} in the forward pass")
        (low,) = forward.backward(forward.tap(name).site, current, [forward.tap(lower)], masks)
        low = low.detach()
        values = _per_channel(crp, lower, low)[0]
        top = torch.argsort(values, descending=True)[: int(k)].tolist()
        total = float(current.sum())
        maps = None
        if heatmaps and top and (heatmaps != "last" or index == len(path) - 1):
            maps = _input_heatmaps(forward, lower, crp.channel_masks(forward, lower, top) * low, masks)
        steps.append(
            DrillStep(
                path=path[: index + 1],
                layer=lower,
                channels=top,
                relevance=values[top],
                share=values[top] / total if abs(total) > 1e-12 else torch.zeros(len(top)),
                heatmaps=maps,
            )
        )
        if index + 1 < len(path):
            current = low * crp.channel_mask(forward, lower, [path[index + 1][1]])
    return steps
