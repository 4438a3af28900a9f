"""Conditional heatmaps: of the active conditions, and one per channel of a layer (Achtibat et al. 2023, Eq. 8-9).

The first heatmap is ``R(x | y, θ)`` for the explained class and all of ``state.conditions``; the grid shows one
conditional heatmap per selected channel of ``state.layer`` (or per top-k channel when none is selected), computed
in one ``conditional_heatmaps`` call that shares the forward pass and the backward pass down to the layer. With
``state.localization`` the heatmaps start from the channels' activations instead of a class (Sec. 2.3.5).
Heatmaps travel as float32 arrays; the browser colours each with its own maximum absolute value (A.3.1).
"""

import traitlets

from .channels import default_layer, describe_conditions, frozen, input_name
from .component import STATIC, Component
from .sample import class_names
from .traits import PNG, Array

__all__ = ["ConditionalHeatmaps", "heatmap_caption", "kept_info", "notation"]

OR, AND = " \N{LOGICAL OR} ", " \N{LOGICAL AND} "
FEW = 0.01  # conditions that keep less than this share of the relevance are flagged


def notation(conditions, layers):
    """Conditions in the paper's logic (Eq. 8 of Achtibat et al. 2023): channels joined by OR, layers by AND."""
    order = sorted(conditions, key=lambda name: layers.index(name) if name in layers else len(layers))
    return AND.join(f"{name}: {OR.join(str(c) for c in conditions[name])}" for name in order)


def heatmap_caption(name, conditions, layers, localization=False):
    """The caption of a (conditional) heatmap in words, and its formula for the "about" tooltip.

    Parameters
    ----------
    name : str or None
        The explained class's name (``None`` for class-free localisation).
    conditions : dict[str, list[int]]
        The conditions applied.
    layers : list[str]
        Layer names in forward order.
    localization : bool
        Whether the heatmap starts from the channels' activations instead of a class.

    Returns
    -------
    caption, about : str
    """
    words, logic = describe_conditions(conditions, layers), notation(conditions, layers)
    if localization:
        caption = f"Where {words} is, for no class" if words else "All outputs together, for no class"
        about = f"R(x | {logic}), class-free localisation (Achtibat et al. 2023, Sec. 2.3.5)" if logic else "R(x)"
        return caption, about
    caption = f"Relevance for {name}" + (f", only through {words}" if words else "")
    about = f"R(x | y = {name}" + (f"{AND}{logic})" if logic else ")") + " (Achtibat et al. 2023, Eq. 8)"
    return caption, about


def kept_info(info, conditioned, whole):
    """``info`` with the share of the relevance the conditions keep: ``kept`` = conditioned / whole summed ``|R|``.

    ``few`` flags a share below 1 %.
    """
    kept = conditioned / whole if whole > 0 else 0.0
    return {**info, "kept": kept, "few": kept < FEW}


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
        What ``heatmap`` shows, in words, from the same computation.
    heatmap_info : dict
        ``about`` (the formula, for a tooltip), ``input`` (e.g. "sample #3"), ``conditioned`` and ``kept``: the
        share of the unconditioned heatmap's summed ``|R|`` that the conditions keep (``None`` without conditions),
        with ``few`` set when it is below 1 %.
    grid : numpy.ndarray
        ``[k, H, W]``: ``conditional_heatmaps(x, layer, channels, target, conditions on other layers)``.
    grid_info : dict
        ``layer``, ``channels`` (in rank order), their ``relevance`` and ``shares`` of the layer's summed ``|R|``
        (``magnitude``, for the explained class), ``selected`` (whether the channels are the selected ones rather
        than the top-k), ``conditions`` (those on other layers, in words), ``input``, ``class`` and ``note``
        (conditions left out of class-free localisation).
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
    heatmap_info = traitlets.Dict().tag(sync=True)
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
        self.refresh()

    def refresh(self):
        """Draw the heatmap and the grid for the current state (see :meth:`Component.refresh`)."""
        self._draw_heatmap()
        self._draw_grid()

    def clear_view(self, view):
        """A failed heatmap or grid shows nothing of an older state."""
        with self.hold_sync():
            if view == "heatmap":
                self.heatmap, self.caption, self.heatmap_info = None, "", {}
            elif view == "grid":
                self.grid, self.grid_info = None, {}

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
        crp, where = self.session.crp, input_name(self.state)

        def compute():
            x, _ = load()
            output = crp.predict(x)
            explained = self.session.explained_class(x, target)
            heatmap = crp.attribute(x, None if localization else explained, conditions).heatmap
            name = class_names(self.session, int(output.shape[-1]))[explained]
            caption, about = heatmap_caption(name, conditions, crp.layer_names, localization)
            info = {"about": about, "input": where, "conditioned": bool(conditions), "kept": None, "few": False}
            return self.session.display(x), heatmap, caption, info, explained

        def apply(result):
            image, heatmap, caption, info, explained = result
            with self.hold_sync():
                if source != self._image_source:
                    self.image, self._image_source = image, source
                self.heatmap, self.caption, self.heatmap_info = heatmap, caption, info
            if conditions and not localization:
                self._measure_kept(source, load, explained, float(heatmap.abs().sum()), info)
            else:
                self.drop("kept")

        key = (id(self.session), "heatmap", source, target, frozen(conditions), localization)
        self.schedule("heatmap", key, compute, apply)

    def _measure_kept(self, source, load, explained, conditioned, info):
        """How much of the relevance the conditions keep: the heatmap's summed ``|R|`` over the unconditioned one's.

        A detail computed after the heatmaps themselves (one more backward pass), shown under the heatmap it
        belongs to.
        """
        crp = self.session.crp

        def compute():
            return float(crp.attribute(load()[0], explained).heatmap.abs().sum())

        def apply(whole):
            if self.heatmap_info is info:
                self.heatmap_info = kept_info(info, conditioned, whole)

        key = (id(self.session), "summed |R|", source, explained)
        self.schedule("kept", key, compute, apply, later=True)

    def _draw_grid(self):
        if (sample := self.sample_source("grid")) is None:
            return
        source, load = sample
        layer, target, localization, k = self.state.layer, self.state.target, self.state.localization, self.top_k
        others = {name: list(channels) for name, channels in self.state.conditions.items() if name != layer}
        selected = list(self.state.conditions.get(layer, []))
        crp, where = self.session.crp, input_name(self.state)

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
                "magnitude": float(ranking.relevance.abs().sum()),
                "selected": bool(selected),
                "conditions": describe_conditions(applied, crp.layer_names),
                "input": where,
                "class": None if localization else self.session.class_name(explained),
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
            f"Without a class the heatmaps start at {layer}, so the conditions on the layers above it "
            f"({', '.join(above)}) do not apply."
        )
        return {name: channels for name, channels in conditions.items() if name not in above}, note
