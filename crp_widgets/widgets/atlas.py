"""The concept atlas and the region it lets a user draw (Achtibat et al. 2023, Sec. 3.3, Fig. 15-16, Appendix A.4).

The atlas colours each superpixel (or pixel) of the explained sample with its most relevant concept among the
layer's top channels and marks the second most relevant one; a legend links colours to channels. Brushing, lassoing
or clicking superpixels defines a region (``state.region``); the region's most relevant concepts (Eq. 11-12) are
listed with their share of the global and of the regional relevance, their conditional heatmaps and, when a
reference store exists, their reference samples. The computation is :mod:`crp_widgets.engine.atlas`.
"""

import collections
import hashlib

import numpy as np
import torch
import traitlets

from ..engine.atlas import assign_concepts, region_concepts, superpixels, top_concepts
from .channels import describe_conditions
from .component import STATIC, Component
from .gallery import class_name, displayed
from .layers import layer_menu
from .traits import PNG, Array, PNGList

__all__ = ["ConceptAtlas"]

NONE = 255  # "no concept" in the assignment sent to the front end
MAX_CONCEPTS = 12  # the front end's palette has this many colours


class ConceptAtlas(Component):
    """The concept atlas of the explained sample, with a drawable region (Sec. 3.3, Fig. 15-16).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend.
    state : ExplorerState, optional
        The shared state: the atlas follows ``sample``/``custom``, ``target``, ``localization``, ``layer`` and the
        conditions on other layers; it sets ``region`` (drawn) and ``channel`` (legend click).
    layer : str, optional
        Sets ``state.layer``; by default the last layer with a spatial output is chosen.
    **kwargs
        Initial values of the traits below, or passed to :class:`Component`.

    Attributes
    ----------
    mode : {"superpixels", "pixels"}
        Superpixel atlas (Fig. 15) or single-pixel atlas (A.4, Fig. A.9).
    n_concepts : int
        How many of the layer's most relevant channels take part (1 to 12).
    n_segments, compactness, sigma : int, float, float
        SLIC parameters: approximate number of superpixels, colour-versus-space balance, pre-smoothing in pixels.
    threshold : float
        Superpixels with a relevance density below this fraction of the maximal density stay uncoloured (A.4).
    region_k : int
        How many of the region's most relevant concepts are shown (Fig. 16 shows 3).
    reference_count : int
        Reference samples shown per region concept (when the session has a store holding the layer).
    region : numpy.ndarray or None
        The drawn region as ``uint8 [H, W]`` (1 inside); mirrors ``state.region`` (boolean) both ways.
    image : numpy.ndarray
        The explained sample as displayed.
    segments : numpy.ndarray
        ``[H, W]`` superpixel labels (``float32``, exact integers; the pixel index in the single-pixel atlas).
    assignment : numpy.ndarray
        ``uint8 [2, S]``: per superpixel, the position in ``concepts`` of the most and second most relevant
        concept, 255 where uncoloured.
    segment_relevance : numpy.ndarray
        ``[S, N]``: each concept's relevance inside each superpixel (Eq. 11, 26).
    concepts : list[dict]
        The legend: ``{"channel", "relevance", "share"}`` per concept, most relevant first.
    layers : list[dict]
        The model's layers ``{"name", "channels", "spatial"}``: their channel counts, for the layer menu.
    layer_menu : list[dict]
        The layer menu, grouped: ``{"group", "layers"}`` entries (the model's blocks by stage,
        :func:`~crp_widgets.widgets.layers.layer_menu`); a layer that no group lists shows in a group of its own.
    caption : str
        What the atlas explains (class, and the conditions on other layers it follows).
    magnitude : float
        The layer's summed ``|R|`` for that class and those conditions: the denominator of the legend's shares.
    region_concepts : list[dict]
        The region's top concepts: ``{"channel", "relevance", "share_of_total", "share_of_region",
        "references": [{"dataset", "index", "value"}]}``.
    region_summary : dict
        ``{"pixels", "region_total", "total", "bypass", "region_magnitude", "magnitude", "conditions"}``: the
        region's and the layer's signed totals and summed ``|R|`` (the denominators of ``share_of_region`` and
        ``share_of_total``), and the conditions followed, in words.
    region_heatmaps : numpy.ndarray
        ``[k, H, W]`` conditional heatmaps of the region's top concepts.
    region_images : tuple[numpy.ndarray]
        Their reference samples' receptive-field crops, concept after concept.
    """

    _esm = STATIC / "atlas.js"
    _css = STATIC / "atlas.css"

    layer = traitlets.Unicode("").tag(sync=True)
    channel = traitlets.Int(None, allow_none=True).tag(sync=True)
    mode = traitlets.Enum(("superpixels", "pixels"), default_value="superpixels").tag(sync=True)
    n_concepts = traitlets.Int(5).tag(sync=True)
    n_segments = traitlets.Int(50).tag(sync=True)
    compactness = traitlets.Float(10.0).tag(sync=True)
    sigma = traitlets.Float(1.0).tag(sync=True)
    threshold = traitlets.Float(0.1).tag(sync=True)
    region_k = traitlets.Int(3).tag(sync=True)
    reference_count = traitlets.Int(4).tag(sync=True)
    region = Array(dtype="uint8", ndim=2)
    image = PNG()
    segments = Array(dtype="float32", ndim=2)
    assignment = Array(dtype="uint8", ndim=2)
    segment_relevance = Array(dtype="float32", ndim=2)
    concepts = traitlets.List().tag(sync=True)
    layers = traitlets.List().tag(sync=True)
    layer_menu = traitlets.List().tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    magnitude = traitlets.Float(0.0).tag(sync=True)
    region_concepts = traitlets.List().tag(sync=True)
    region_summary = traitlets.Dict().tag(sync=True)
    region_heatmaps = Array(dtype="float32", ndim=3)
    region_images = PNGList()

    def __init__(self, session, state=None, *, layer=None, **kwargs):
        super().__init__(session, state, **kwargs)
        if layer is not None:
            self.state.layer = layer
        self._concepts = collections.OrderedDict()  # top concepts and heatmaps, reused across atlas options
        self.layer_menu = layer_menu(self.session.crp)
        self.mirror("layer", "channel")
        if self.state.region is not None:
            self.region = np.asarray(self.state.region, dtype=bool).astype(np.uint8)
        self.state.observe(self._on_input, names=["sample", "custom", "target", "localization", "conditions"])
        self.state.observe(self._region_from_state, names=["region"])
        self.observe(self._region_from_front_end, names=["region"])
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_options, names=["mode", "n_concepts", "n_segments", "compactness", "sigma", "threshold"])
        self.observe(self._on_region_options, names=["region_k", "reference_count"])
        self.refresh()

    def refresh(self):
        """The layers, the atlas and the region analysis for the current state (see :meth:`Component.refresh`)."""
        self._request_layers()
        self.show()

    def clear_view(self, view):
        """A failed atlas or region analysis shows nothing of an older state."""
        with self.hold_sync():
            if view == "atlas":
                self.image, self.segments, self.assignment, self.segment_relevance = None, None, None, None
                self.concepts, self.caption = [], ""
            elif view == "region":
                self._clear_region()

    def show(self):
        """Compute the atlas and the region analysis for the current state (called on every change)."""
        self._request_atlas()
        self._request_region()

    def unlink(self):
        """Stop following the state."""
        self.unmirror()
        self.state.unobserve(self._on_input, names=["sample", "custom", "target", "localization", "conditions"])
        self.state.unobserve(self._region_from_state, names=["region"])
        super().unlink()

    # ----------------------------------------------------------------------------------------------- observers

    def _on_input(self, change):
        if change["name"] in ("sample", "custom"):
            self._request_layers()
        self.show()

    def _on_layer(self, change):
        self.show()

    def _on_options(self, change):
        self._request_atlas()

    def _on_region_options(self, change):
        self._request_region()

    def _region_from_state(self, change):
        region = None if change["new"] is None else np.asarray(change["new"], dtype=bool)
        if not _same(region, self.region):
            self.region = None if region is None else region.astype(np.uint8)
        self._request_region()

    def _region_from_front_end(self, change):
        region = None if change["new"] is None or not change["new"].any() else change["new"].astype(bool)
        current = self.state.region
        if not _same(region, None if current is None else np.asarray(current, dtype=bool)):
            self.state.region = region

    # ------------------------------------------------------------------------------------------------- requests

    def _source(self, view):
        """``(key, load, explain, conditions)`` of the explained input, or ``None`` after showing why not.

        ``explain`` is ``(state.target, state.localization)``: what :meth:`_engine_target` turns into the class.
        """
        if (sample := self.sample_source(view)) is None:
            return None
        key, load = sample
        conditions = tuple(sorted((name, tuple(channels)) for name, channels in self.state.conditions.items()
                                  if name != self.layer))  # fmt: skip
        target = None if self.state.localization else self.state.target
        return key, load, (target, self.state.localization), conditions

    def _engine_target(self, x, explain):
        """The class the engine explains: none (class-free, Sec. 2.3.5), the state's class, or the prediction."""
        target, localization = explain
        return None if localization else self.session.explained_class(x, target)

    def _request_layers(self):
        source = self._source("layers")
        if source is None:
            return
        key, load, _, _ = source

        def compute():
            return [{"name": info.name, "channels": info.channels, "spatial": len(info.shape) == 3}
                    for info in self.session.crp.layers(load()[0])]  # fmt: skip

        self.schedule("layers", ("layers", key), compute, self._apply_layers)

    def _apply_layers(self, layers):
        self.layers = layers
        if not self.layer:
            spatial = [info["name"] for info in layers if info["spatial"]]
            if spatial:
                self.layer = spatial[-1]

    def _request_atlas(self):
        if not self.layer:
            return
        source = self._source("atlas")
        if source is None:
            return
        key, load, explain, conditions = source
        layer, n = self.layer, self.n_concepts
        options = (self.mode, self.n_segments, self.compactness, self.sigma, self.threshold)

        def compute():
            x, _ = load()
            image = displayed(self.session, x)
            concepts = self._top(key, x, layer, n, explain, conditions)
            mode, n_segments, compactness, sigma, threshold = options
            segments = superpixels(image, n_segments, compactness, sigma) if mode == "superpixels" else None
            assigned = assign_concepts(concepts[3], segments, threshold)
            magnitude = self._magnitude(x, layer, explain, conditions)
            return image, concepts, assigned, self._caption(x, layer, explain, conditions), magnitude

        self.schedule("atlas", ("atlas", key, explain, conditions, layer, n, options), compute, self._apply_atlas)

    def _top(self, key, x, layer, n, explain, conditions):
        """The top concepts and their heatmaps, kept for the last few inputs (atlas options reuse them)."""
        memo = (key, explain, conditions, layer, n)
        if memo not in self._concepts:
            if not 1 <= n <= MAX_CONCEPTS:
                raise ValueError(f"the atlas shows 1 to {MAX_CONCEPTS} concepts, got {n}")
            self._concepts[memo] = top_concepts(self.session.crp, x, layer, n, self._engine_target(x, explain),
                                                dict(conditions) or None)  # fmt: skip
            while len(self._concepts) > 8:
                self._concepts.popitem(last=False)
        self._concepts.move_to_end(memo)
        return self._concepts[memo]

    def _magnitude(self, x, layer, explain, conditions):
        """The layer's summed ``|R|`` under the same class and conditions: the denominator of the legend's shares."""
        ranking = self.session.crp.channel_relevance(
            x, layer, self._engine_target(x, explain), dict(conditions) or None
        )
        return float(ranking.relevance.abs().sum())

    def _caption(self, x, layer, explain, conditions):
        explained = self._engine_target(x, explain)
        words = describe_conditions(dict(conditions), self.session.crp.layer_names)
        through = f", only through {words}" if words else ""
        if explained is None:
            return f"Concept atlas of layer {layer}: where its concepts are, for no class{through}"
        name = class_name(self.session, explained)
        predicted = " (the prediction)" if explain[0] is None else ""
        return f"Concept atlas of layer {layer} explaining {name}{predicted}{through}"

    def _apply_atlas(self, result):
        image, (channels, relevance, share, _), assigned, caption, magnitude = result
        first, second = (torch.where(assigned[name] < 0, NONE, assigned[name]) for name in ("first", "second"))
        with self.hold_sync():
            self.image = image
            self.segments = assigned["segments"].float()
            self.assignment = torch.stack([first, second]).to(torch.uint8)
            self.segment_relevance = assigned["relevance"]
            self.concepts = [{"channel": c, "relevance": float(r), "share": float(s)}
                             for c, r, s in zip(channels, relevance, share)]  # fmt: skip
            self.caption, self.magnitude = caption, magnitude

    def _request_region(self):
        region = self.state.region
        if region is None or not self.layer:
            self.drop("region")
            self.settle("region")
            self._clear_region()
            return
        source = self._source("region")
        if source is None:
            return
        key, load, explain, conditions = source
        mask = np.asarray(region, dtype=bool)
        digest = hashlib.blake2b(np.packbits(mask).tobytes() + str(mask.shape).encode(), digest_size=16).hexdigest()
        layer, k, count = self.layer, self.region_k, self.reference_count
        store = self.session.store
        references = (str(store.path), store.samples) if store is not None and layer in store.layers else None

        words = describe_conditions(dict(conditions), self.session.crp.layer_names)

        def compute():
            x, _ = load()
            found = region_concepts(self.session.crp, x, layer, mask, k, self._engine_target(x, explain),
                                    dict(conditions) or None)  # fmt: skip
            views = [self._references(layer, c, count) for c in found.channels] if references else []
            return int(mask.sum()), found, views, words, self._magnitude(x, layer, explain, conditions)

        request = ("region", key, explain, conditions, layer, k, count, digest, references)
        self.schedule("region", request, compute, self._apply_region)

    def _references(self, layer, channel, count):
        if count < 1:
            return []
        self.session.current_store()
        return self.session.views.views(layer, channel, mode="relevance", target="sum", k=count)

    def _apply_region(self, result):
        pixels, found, views, words, magnitude = result
        ranking = found.ranking
        rows = [
            {"channel": channel, "relevance": relevance, "share_of_total": of_total, "share_of_region": of_region,
             "references": [_reference(v) for v in (views[position] if views else [])]}
            for position, (channel, relevance, of_total, of_region) in enumerate(ranking.top(len(found.channels)))
        ]  # fmt: skip
        with self.hold_sync():
            self.region_concepts = rows
            self.region_summary = {
                "pixels": pixels, "region_total": ranking.region_total, "total": ranking.total,
                "bypass": ranking.bypass, "region_magnitude": float(ranking.relevance.abs().sum()),
                "magnitude": magnitude, "conditions": words,
            }  # fmt: skip
            self.region_heatmaps = found.heatmaps
            self.region_images = [displayed(self.session, v.crop) for shown in views for v in shown]

    def _clear_region(self):
        with self.hold_sync():
            self.region_concepts = []
            self.region_summary = {}
            self.region_heatmaps = None
            self.region_images = ()


def _reference(view):
    reference = view.reference
    return {"dataset": reference.dataset, "index": reference.index, "value": reference.value}


def _same(a, b):
    """Whether two regions (boolean arrays or ``None``) are equal."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a.astype(bool), b.astype(bool)))
