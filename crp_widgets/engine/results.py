"""Result types of the engine: plain dataclasses of tensors (on the CPU, detached)."""

import dataclasses


@dataclasses.dataclass
class Attribution:
    """The result of :meth:`CRP.attribute`.

    Shapes are per sample; a batched input adds a leading batch dimension to every tensor.

    Attributes
    ----------
    heatmap : torch.Tensor
        Input relevance summed over the input channels: ``[H, W]`` for images, ``[L]`` for 1-D signals.
    input_relevance : torch.Tensor
        Input relevance per input channel, shaped like the input.
    relevance : dict[str, torch.Tensor]
        Per recorded layer, the relevance of each channel ``[C]`` (Eq. 10), after the layer's own condition.
    relevance_maps : dict[str, torch.Tensor]
        Per recorded layer, the relevance of every neuron (e.g. ``[C, H', W']``).
    activations : dict[str, torch.Tensor]
        Per recorded layer, its output (activations of the canonized model).
    prediction : torch.Tensor
        The model output (logits).
    target : object
        The explained class(es), as given.
    conditions : dict[str, list[int]]
        The conditions, validated (Eq. 8).
    """

    heatmap: object
    input_relevance: object
    relevance: dict
    relevance_maps: dict
    activations: dict
    prediction: object
    target: object
    conditions: dict


@dataclasses.dataclass
class ChannelRelevance:
    """Relevance of every channel of a layer (Eq. 10), ranked.

    Attributes
    ----------
    layer : str
        The layer.
    relevance : torch.Tensor
        ``[C]``, signed: positive supports the explained output, negative contradicts it.
    share : torch.Tensor
        ``[C]``, relevance divided by the layer's summed absolute relevance: the share of the layer's relevance,
        positive for supporting channels and negative for contradicting ones whatever the sign of the total.
    total : float
        The layer's total relevance (sum over channels, Eq. 10; close to the explained output's value).
    order : torch.Tensor
        Channel indices sorted by descending relevance (Eq. 15).
    """

    layer: str
    relevance: object
    share: object
    total: float
    order: object

    def top(self, k):
        """The ``k`` most relevant channels as ``[(channel, relevance, share), ...]``."""
        return [(int(c), float(self.relevance[c]), float(self.share[c])) for c in self.order[:k]]


@dataclasses.dataclass
class RegionRelevance:
    """Relevance of every channel of a layer inside an input region (Eq. 11-12, Fig. 16).

    Attributes
    ----------
    layer : str
        The layer.
    relevance : torch.Tensor
        ``[C]``: the relevance each channel's conditional heatmap puts inside the region.
    share_of_region : torch.Tensor
        ``[C]``, relevance divided by the region's summed absolute relevance over all channels (the "regional"
        share, Fig. 16 in parentheses).
    share_of_total : torch.Tensor
        ``[C]``, relevance divided by the layer's summed absolute relevance over the whole input (the "global"
        share, Fig. 16).
    region_total : float
        Relevance inside the region flowing through the layer.
    total : float
        The layer's total relevance.
    bypass : float
        Relevance inside the region that reaches the input without passing the layer (residual shortcuts); it
        belongs to none of the layer's channels.
    order : torch.Tensor
        Channel indices sorted by descending regional relevance.
    """

    layer: str
    relevance: object
    share_of_region: object
    share_of_total: object
    region_total: float
    total: float
    bypass: float
    order: object

    def top(self, k):
        """The ``k`` most relevant channels as ``[(channel, relevance, share_of_total, share_of_region), ...]``."""
        return [
            (int(c), float(self.relevance[c]), float(self.share_of_total[c]), float(self.share_of_region[c]))
            for c in self.order[:k]
        ]


@dataclasses.dataclass
class Subconcepts:
    """How a channel's relevance distributes over the channels of a lower layer (Eq. 13-16).

    Attributes
    ----------
    layer, channel : str, int
        The parent concept.
    lower_layer : str
        The layer of the sub-concepts.
    parent_relevance : float
        Relevance of the parent channel.
    channels : list[int]
        The ``k`` most relevant lower channels (Eq. 16).
    relevance : torch.Tensor
        ``[k]``, their relevance conditioned on the parent.
    share : torch.Tensor
        ``[k]``, relevance divided by the parent's relevance.
    all_relevance : torch.Tensor
        ``[C_lower]``, every lower channel's relevance conditioned on the parent (Eq. 14).
    """

    layer: str
    channel: int
    lower_layer: str
    parent_relevance: float
    channels: list
    relevance: object
    share: object
    all_relevance: object


@dataclasses.dataclass
class GraphNode:
    """A concept in an attribution graph: a channel of a layer.

    ``relevance`` is the channel's relevance conditioned on the root (CRP paper Fig. 17, numbers in parentheses),
    ``share`` that relevance relative to the root's. ``heatmap`` is filled when requested.
    """

    layer: str
    channel: int
    level: int
    relevance: float
    share: float
    heatmap: object = None


@dataclasses.dataclass
class GraphEdge:
    """Relevance flowing from an upper concept to a lower one along the path that leads to the upper one.

    ``share`` is the percentage of the upper concept's (path-conditioned) relevance that flows into the lower one.
    """

    source: tuple
    target: tuple
    relevance: float
    share: float


@dataclasses.dataclass
class AttributionGraph:
    """The disentangled multi-pass attribution graph of one channel (Sec. 3.4, Fig. 17)."""

    root: tuple
    layers: list
    nodes: list
    edges: list

    def node(self, layer, channel):
        """The node of ``(layer, channel)``."""
        return next(node for node in self.nodes if (node.layer, node.channel) == (layer, channel))

    def to_dict(self):
        """A JSON-able description (heatmaps left out)."""
        return {
            "root": list(self.root),
            "layers": list(self.layers),
            "nodes": [{k: v for k, v in dataclasses.asdict(node).items() if k != "heatmap"} for node in self.nodes],
            "edges": [
                {"source": list(e.source), "target": list(e.target), "relevance": e.relevance, "share": e.share}
                for e in self.edges
            ],
        }


@dataclasses.dataclass
class DrillStep:
    """One step of a drill-down along a path of channels: the path so far and the next layer's top-k.

    The drill-down follows Ghosh's concept-detection report on VGG16 (Sec. 4).

    ``share`` is each channel's relevance relative to the relevance of the last channel of ``path``.
    """

    path: list
    layer: str
    channels: list
    relevance: object
    share: object
    heatmaps: object = None


@dataclasses.dataclass
class ReceptiveField:
    """The receptive field of a neuron, from the flat rule (Sec. 2.3.4, Eq. 25).

    Attributes
    ----------
    mask : torch.Tensor
        Boolean input mask (spatial shape of the input).
    box : tuple[int, ...]
        Bounding box ``(top, bottom, left, right)`` (exclusive ends) for 2-D inputs, ``(start, end)`` for 1-D.
    weight : torch.Tensor
        The flat relevance itself: how many paths connect each input position to the neuron.
    """

    mask: object
    box: tuple
    weight: object
