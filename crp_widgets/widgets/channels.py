"""Channel selector: a layer's channels ranked by relevance, the conditions they make (Achtibat et al. 2023, Eq. 8, 10).

For ``state.layer`` the channels are ranked by their relevance (Eq. 10) for the current sample, the explained class
and the conditions on the *other* layers. Selecting channels edits ``state.conditions``: channels of one layer are
OR-ed, layers are AND-ed (Eq. 8). With a reference store, a channel's references preview on hover.
"""

import torch
import traitlets

from .component import STATIC, Component
from .layers import block_layers, layer_menu
from .sample import thumbnail
from .traits import Array, PNGList

__all__ = ["ChannelSelector", "default_layer", "describe_conditions", "frozen", "input_name"]

PREVIEW_K = 6
PREVIEW_SIZE = 48


def default_layer(crp):
    """The layer shown first: the model's last block (e.g. a transformer layer), else its last convolution."""
    blocks = block_layers(crp)
    if blocks:
        return blocks[-1]
    modules = dict(crp.model.named_modules())
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    convolutions = [name for name in crp.layer_names if isinstance(modules[name], kinds)]
    return convolutions[-1] if convolutions else crp.layer_names[0]


def input_name(state):
    """The explained input in words: ``"sample #3"`` or ``"your image"``."""
    return "your image" if state.custom is not None else f"sample #{state.sample}"


def describe_conditions(conditions, layers):
    """Conditions in words, in forward order: ``"features.conv4 channel 6 or 22, and features.conv3 channel 5"``.

    Parameters
    ----------
    conditions : dict[str, list[int]]
        Channels per layer (OR within a layer, AND across layers, Eq. 8 of Achtibat et al. 2023).
    layers : list[str]
        Layer names in forward order.
    """
    order = sorted(conditions, key=lambda name: layers.index(name) if name in layers else len(layers))
    parts = []
    for name in order:
        channels = list(conditions[name])
        if channels:
            word = "channel" if len(channels) == 1 else "channels"
            parts.append(f"{name} {word} {' or '.join(str(c) for c in channels)}")
    return ", and ".join(parts)


def frozen(conditions):
    """A hashable form of conditions ``{layer: channels}``, for cache keys."""
    return tuple(sorted((layer, tuple(channels)) for layer, channels in conditions.items()))


class ChannelSelector(Component):
    """The channels of ``state.layer`` ranked by relevance; click to condition on them.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend (its ``views`` give the reference previews).
    state : ExplorerState, optional
        The shared state; this view sets ``layer``, ``conditions`` and ``channel``.
    top_k : int
        Channels shown unless ``show_all``.
    **kwargs
        Passed to :class:`Component`.

    Attributes
    ----------
    layers : list[str]
        Every layer of the model in forward order (``session.crp.layer_names``): the order of the condition chips.
    layer_menu : list[dict]
        The layer menu: ``{"group", "layers"}`` entries (:func:`~crp_widgets.widgets.layers.layer_menu`), the
        model's blocks by stage. A layer set from Python that no group lists shows in a group of its own.
    layer : str
        ``state.layer``, for the front end.
    ranking : numpy.ndarray
        ``[C, 3]`` float32 rows ``(channel, relevance, share)`` in the order of ``channel_relevance(...).order``.
    ranking_layer : str
        The layer ``ranking`` belongs to.
    total : float
        The layer's total relevance (signed sum over its channels).
    magnitude : float
        The sum of the channels' absolute relevance: the denominator of the shares.
    ranking_for : dict
        What the ranking was computed for, from the same computation: ``input`` (e.g. "sample #3"), ``class`` (the
        explained class's name) and ``conditions`` (the conditions on other layers, in words; empty without).
    conditions : dict[str, list[int]]
        ``state.conditions``, for the chips.
    channel : int or None
        ``state.channel``, the channel in focus.
    top_k : int
        Channels shown unless ``show_all``.
    show_all : bool
        Show every channel (the list scrolls).
    has_references : bool
        Whether the session has references for ``ranking_layer`` (hover previews).
    preview : tuple[numpy.ndarray]
        Receptive-field crops of the references of ``preview_for``'s channel, synced as PNG bytes.
    preview_for : dict
        ``{"layer": str, "channel": int}`` of the preview.
    labels : dict
        Concept labels of ``ranking_layer``'s channels (``session.label``, Network Dissection): ``{"layer",
        "concepts": [best concept or None per channel], "iou": [per channel]}``, or empty.
    """

    _esm = STATIC / "channels.js"
    _css = STATIC / "channels.css"

    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layer_menu = traitlets.List().tag(sync=True)
    layer = traitlets.Unicode("").tag(sync=True)
    ranking = Array(ndim=2)
    ranking_layer = traitlets.Unicode("").tag(sync=True)
    total = traitlets.Float(0.0).tag(sync=True)
    magnitude = traitlets.Float(0.0).tag(sync=True)
    ranking_for = traitlets.Dict().tag(sync=True)
    conditions = traitlets.Dict().tag(sync=True)
    channel = traitlets.Int(None, allow_none=True).tag(sync=True)
    top_k = traitlets.Int(10, min=1).tag(sync=True)
    show_all = traitlets.Bool(False).tag(sync=True)
    has_references = traitlets.Bool(False).tag(sync=True)
    preview = PNGList()
    preview_for = traitlets.Dict().tag(sync=True)
    labels = traitlets.Dict().tag(sync=True)

    def __init__(self, session, state=None, *, top_k=10, **kwargs):
        super().__init__(session, state, **kwargs)
        self.layers = list(self.session.crp.layer_names)
        self.layer_menu = layer_menu(self.session.crp)
        self.top_k = top_k
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self._mirror_state()
        self.state.observe(self._on_state, names=["sample", "custom", "target", "layer", "conditions", "channel"])
        self.on_msg(self._on_message)
        self.session.on_labels(self._show_labels)
        self._rank()

    def refresh(self):
        """Rank the channels for the current state (see :meth:`Component.refresh`)."""
        self._rank()

    def clear_view(self, view):
        """A ranking that failed shows no bars of another layer or input."""
        if view == "ranking":
            with self.hold_sync():
                self.ranking, self.ranking_for = None, {}

    def toggle(self, channel):
        """Add ``channel`` of ``state.layer`` to the conditions, or remove it (OR within the layer, Eq. 8)."""
        layer, channel = self.state.layer, int(channel)
        with self.state.hold_trait_notifications():
            self.state.select(layer, set(self.state.conditions.get(layer, [])) ^ {channel})
            self.state.channel = channel

    def remove(self, layer, channel=None):
        """Drop ``channel`` of ``layer`` from the conditions (every channel of ``layer`` when ``channel`` is None)."""
        keep = [] if channel is None else [c for c in self.state.conditions.get(layer, []) if c != int(channel)]
        self.state.select(layer, keep)

    def clear(self):
        """Drop every condition."""
        self.state.conditions = {}

    def show_references(self, channel):
        """Fetch the preview of ``channel``'s references (of ``state.layer``), if the session has them."""
        layer, channel = self.state.layer, int(channel)
        if not self._references(layer):
            return

        def compute():
            self.session.current_store()
            views = self.session.views.views(layer, channel, k=PREVIEW_K)
            return [thumbnail(self.session.display(view.crop), PREVIEW_SIZE) for view in views]

        def apply(images):
            with self.hold_sync():
                self.preview, self.preview_for = images, {"layer": layer, "channel": channel}

        key = (id(self.session), "preview", self.session.store.samples, layer, channel)
        self.schedule("preview", key, compute, apply)

    def _references(self, layer):
        return self.session.views is not None and layer in self.session.store.layers

    def _on_message(self, _, content, buffers):
        actions = {
            "toggle": lambda: self.toggle(content["channel"]),
            "remove": lambda: self.remove(content["layer"], content.get("channel")),
            "clear": self.clear,
            "layer": lambda: setattr(self.state, "layer", content["layer"]),
            "preview": lambda: self.show_references(content["channel"]),
        }
        if content.get("type") in actions:
            self.act(actions[content["type"]], self._mirror_state)

    def _on_state(self, change):
        self._mirror_state()
        if change["name"] != "channel":
            self._rank()

    def _mirror_state(self):
        with self.hold_sync():
            self.layer, self.channel = self.state.layer, self.state.channel
            self.conditions = {layer: list(channels) for layer, channels in self.state.conditions.items()}

    def _rank(self):
        if (sample := self.sample_source("ranking")) is None:
            return
        source, load = sample
        layer, target = self.state.layer, self.state.target
        others = {name: channels for name, channels in self.state.conditions.items() if name != layer}
        where = input_name(self.state)

        def compute():
            x, _ = load()
            explained = self.session.explained_class(x, target)
            about = {"input": where, "class": self.session.class_name(explained),
                     "conditions": describe_conditions(others, self.session.crp.layer_names)}  # fmt: skip
            return self.session.crp.channel_relevance(x, layer, explained, others), about

        def apply(computed):
            result, about = computed
            order = result.order
            rows = torch.stack([order.to(result.relevance.dtype), result.relevance[order], result.share[order]], 1)
            with self.hold_sync():
                self.ranking = rows
                self.ranking_layer, self.total = layer, result.total
                self.magnitude, self.ranking_for = float(result.relevance.abs().sum()), about
                self.has_references = self._references(layer)
                self.labels = self.session.channel_labels(layer)

        self.schedule("ranking", (id(self.session), "ranking", source, target, layer, frozen(others)), compute, apply)

    def _show_labels(self, layer):
        if layer == self.ranking_layer:
            self.labels = self.session.channel_labels(layer)
