"""Conditional heatmaps: the heatmap of the active conditions and one per channel of a layer (CRP paper Eq. 8-9).

The first heatmap is ``R(x | y, θ)`` for the explained class and all of ``state.conditions``; the grid shows one
conditional heatmap per selected channel of ``state.layer`` (or per top-k channel when none is selected), computed
in one ``conditional_heatmaps`` call that shares the forward pass and the backward pass down to the layer. With
``state.localization`` the heatmaps start from the channels' activations instead of a class (Sec. 2.3.5).
Heatmaps travel as float32 arrays; the browser colours each with its own maximum absolute value (A.3.1).
"""

import traitlets

from .channels import default_layer, frozen
from .component import STATIC, Component
from .sample import class_names
from .traits import PNG, Array

__all__ = ["ConditionalHeatmaps", "describe_conditions"]

OR, AND = " \N{LOGICAL OR} ", " \N{LOGICAL AND} "


def describe_conditions(conditions, layers):
    """Conditions as text in the paper's logic (Eq. 8): a layer's channels joined by OR, layers joined by AND.

    Parameters
    ----------
    conditions : dict[str, list[int]]
        Channels per layer.
    layers : list[str]
        Layer names in forward order (conditions are listed in that order).
    """
    order = sorted(conditions, key=lambda name: layers.index(name) if name in layers else len(layers))
    return AND.join(f"{name}: {OR.join(str(c) for c in conditions[name])}" for name in order)


class ConditionalHeatmaps(Component):
    """Heatmaps of the active conditions and of the channels of ``state.layer``, over the image.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend.
    state : ExplorerState, optional
        The shared state; this view reads it and sets ``localization``.
    top_k : int
        Channels in the grid when no channel of ``state.layer`` is selected.
    opacity : float
        Weight of the heatmap colour over the image.
    **kwargs
        Passed to :class:`Component`.

    Attributes
    ----------
    image : numpy.ndarray
        The explained input as an image (``session.display``), synced as PNG bytes.
    heatmap : numpy.ndarray
        ``[H, W]``: ``attribute(x, target, state.conditions).heatmap`` (class-free with ``localization``).
    caption : str
        What ``heatmap`` is conditioned on.
    grid : numpy.ndarray
        ``[k, H, W]``: ``conditional_heatmaps(x, layer, channels, target, conditions on other layers)``.
    grid_info : dict
        ``layer``, ``channels`` (in rank order), their ``relevance`` and ``shares`` of the layer's relevance (for the
        explained class), ``selected`` (whether the channels are the selected ones rather than the top-k) and
        ``note`` (conditions left out of class-free localisation).
    top_k : int
        Channels in the grid when none is selected.
    opacity : float
        Weight of the heatmap colour over the image.
    localization : bool
        ``state.localization``: heatmaps start from the channels' activations (Sec. 2.3.5).
    """

    _esm = STATIC / "heatmaps.js"
    _css = STATIC / "heatmaps.css"

    image = PNG()
    heatmap = Array(ndim=2)
    caption = traitlets.Unicode("").tag(sync=True)
    grid = Array(ndim=3)
    grid_info = traitlets.Dict().tag(sync=True)
    top_k = traitlets.Int(6, min=1).tag(sync=True)
    opacity = traitlets.Float(0.5, min=0.0, max=1.0).tag(sync=True)
    localization = traitlets.Bool(False).tag(sync=True)

    def __init__(self, session, state=None, *, top_k=6, opacity=0.5, **kwargs):
        super().__init__(session, state, **kwargs)
        self.top_k, self.opacity = top_k, opacity
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self.localization = self.state.localization
        self._image_source = None
        self.state.observe(self._on_state, names=["sample", "custom", "target", "layer", "conditions", "localization"])
        self.observe(lambda _: self._draw_grid(), names=["top_k"])
        self.on_msg(self._on_message)
        self._draw_heatmap()
        self._draw_grid()

    def _on_message(self, _, content, buffers):
        if content.get("type") == "localization":
            self.state.localization = bool(content["localization"])

    def _on_state(self, change):
        self.localization = self.state.localization
        if change["name"] != "layer":
            self._draw_heatmap()
        self._draw_grid()

    def _draw_heatmap(self):
        if (sample := self.sample_source("heatmap")) is None:
            return
        source, load = sample
        target, localization = self.state.target, self.state.localization
        conditions = {name: list(channels) for name, channels in self.state.conditions.items()}
        crp = self.session.crp

        def compute():
            x, _ = load()
            output = crp.predict(x)
            explained = self.session.explained_class(x, target)
            heatmap = crp.attribute(x, None if localization else explained, conditions).heatmap
            text = describe_conditions(conditions, crp.layer_names)
            if localization:
                caption = f"R(x | {text}), class-free (Sec. 2.3.5)" if text else "R(x), all outputs, no class (Fig. 2a)"
            else:
                name = class_names(self.session, int(output.shape[-1]))[explained]
                caption = f"R(x | y = {name}" + (f"{AND}{text})" if text else ")")
            return self.session.display(x), heatmap, caption

        def apply(result):
            image, heatmap, caption = result
            with self.hold_sync():
                if source != self._image_source:
                    self.image, self._image_source = image, source
                self.heatmap, self.caption = heatmap, caption

        key = (id(self.session), "heatmap", source, target, frozen(conditions), localization)
        self.schedule("heatmap", key, compute, apply)

    def _draw_grid(self):
        if (sample := self.sample_source("grid")) is None:
            return
        source, load = sample
        layer, target, localization, k = self.state.layer, self.state.target, self.state.localization, self.top_k
        others = {name: list(channels) for name, channels in self.state.conditions.items() if name != layer}
        selected = list(self.state.conditions.get(layer, []))
        crp = self.session.crp

        def compute():
            x, _ = load()
            explained = self.session.explained_class(x, target)
            ranking = crp.channel_relevance(x, layer, explained, others)
            rank = {int(c): i for i, c in enumerate(ranking.order)}
            # Selected channels in rank order (the engine reports any that the layer does not have), else the top-k.
            channels = sorted(selected, key=lambda c: rank.get(c, len(rank))) or ranking.order[:k].tolist()
            applied, note = others, ""
            if localization:
                applied, note = self._applicable(x, layer, others)
            heatmaps = crp.conditional_heatmaps(x, layer, channels, None if localization else explained, applied)
            info = {
                "layer": layer,
                "channels": channels,
                "relevance": [float(ranking.relevance[c]) for c in channels],
                "shares": [float(ranking.share[c]) for c in channels],
                "selected": bool(selected),
                "note": note,
            }
            return self.session.display(x), heatmaps, info

        def apply(result):
            image, heatmaps, info = result
            with self.hold_sync():
                if source != self._image_source:
                    self.image, self._image_source = image, source
                self.grid, self.grid_info = heatmaps, info

        key = (id(self.session), "grid", source, target, layer, frozen(others), tuple(selected), localization, k)
        self.schedule("grid", key, compute, apply)

    def _applicable(self, x, layer, conditions):
        """The conditions that apply to a class-free start at ``layer``, and a note naming those that cannot."""
        order = {info.name: info.order for info in self.session.crp.layers(x)}
        above = [name for name in conditions if order[name] > order[layer]]
        if not above:
            return conditions, ""
        note = (
            f"class-free localisation starts at {layer}: conditions on the layers above it "
            f"({', '.join(above)}) do not apply (Sec. 2.3.5)"
        )
        return {name: channels for name, channels in conditions.items() if name not in above}, note
