"""Concept similarity: a layer's channels embedded by similarity (Achtibat et al. 2023, Sec. 4.4, Fig. 24-26, A.9).

A bqplot scatter shows the t-SNE embedding of the channels of ``state.layer`` from the distance ``1 - rho``
(Eq. 30-31), coloured by ``rho`` to the channel in focus (``state.channel``); hovering a point shows the channel's
RelMax references, clicking it focuses the channel everywhere. Below: the channel in focus and its most similar
channels with their references (Fig. 24 right), and for two classes that use this cluster, the cluster's activation
maps, conditional heatmaps and relevance on a sample of each class: similar activations, different relevance
(Fig. 26, A.25).
"""

import html

import bqplot
import ipywidgets
import numpy as np
import torch
import traitlets
from PIL import Image

from ..engine.inverse import classes_using
from ..engine.similarity import concept_similarity, embed, similar
from ..render.colormap import to_uint8
from ..render.images import encode_png
from ..render.signals import heatmap_picture, input_picture, plot_heatmap
from .charts import about, colour_bar
from .component import Panel
from .gallery import class_name, displayed
from .worker import current_task

__all__ = ["ConceptSimilarityView", "activation_picture", "reference_grid", "tile"]

NO_STORE = (
    "No reference store: concept similarity compares channels over their most relevant reference samples. "
    "Scan a dataset first (store = cw.scan(cw.CRP(model), dataset, layers=[...], path='references')) and give "
    "it to the explorer (store=...) or to the Session."
)
TILE = 56


def tile(image, size=TILE):
    """An image (``[3, H, W]`` float, ``[H, W, 3]`` uint8) or a signal ``[C, L]`` as ``size`` x ``size`` pixels."""
    pixels = input_picture(image)
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST))


def activation_picture(activation, peak, size=TILE):
    """A non-negative activation map ``[h, w]`` in grey levels (0 black, ``peak`` white), ``size`` pixels square."""
    values = torch.as_tensor(activation).float().clamp(min=0) / max(float(peak), 1e-12)
    if values.ndim == 1:  # a 1-D layer: the activation over time as bars
        return tile(plot_heatmap(values.numpy()), size)
    grey = np.repeat(to_uint8(values.numpy())[..., None], 3, axis=-1)
    return tile(grey, size)


def reference_grid(session, layer, channel, k=4, cls=None, heatmap=False, size=TILE):
    """A channel's ``k`` RelMax references (crops, Fig. 8) side by side, as PNG bytes.

    A crop is the neuron's receptive field, or the relevant region where the neuron sees the whole input
    (:attr:`~crp_widgets.engine.references.ReferenceView.follows_relevance`).

    With ``heatmap`` the full samples are shown with the conditional heatmap of the channel's most relevant neuron
    drawn over them (Fig. 23); ``cls`` gives class-conditional references (Fig. 13).
    """
    views = session.views.views(layer, channel, k=k, cls=cls)
    if not views:
        return b""
    tiles = []
    for view in views:
        if heatmap:
            sample = displayed(session, view.sample)
            tiles.append(tile(heatmap_picture(view.heatmap, sample if np.ndim(sample) == 3 else None), size))
        else:
            tiles.append(tile(displayed(session, view.crop), size))
    gap = np.full((tiles[0].shape[0], 2, 3), 128, dtype=np.uint8)  # grey: quiet in light and dark themes
    row = [part for t in tiles for part in (t, gap)][:-1]
    return encode_png(np.concatenate(row, axis=1))


def _width(data):
    """The width of PNG bytes in CSS pixels (from the IHDR header), ``auto`` when empty."""
    return f"{int.from_bytes(data[16:20], 'big')}px" if len(data) >= 24 else "auto"


def _image(data):
    """An ipywidgets.Image of PNG bytes, shown at its own size."""
    return ipywidgets.Image(value=data, format="png", layout=ipywidgets.Layout(width=_width(data), height="auto"))


def _labelled(text, *children):
    return ipywidgets.VBox([ipywidgets.HTML(text), *children], layout=ipywidgets.Layout(margin="0 8px 4px 0"))


class ComputesWhenShown:
    """Mixin for a :class:`Panel` that starts computing when first shown, not when built.

    Shown means displayed in a notebook or its explorer tab selected (``active``), so a hidden tab costs nothing at
    start-up; calling ``refresh()`` starts at once.
    """

    def _start_when_shown(self):
        self._started = False
        self.observe(self._start, names=["active"])

    def _start(self, change=None):
        if not self._started and self.active:
            self._stale = False
            self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        self._start()
        return super()._repr_mimebundle_(**kwargs)


class ConceptSimilarityView(ComputesWhenShown, Panel):
    """Channels of ``state.layer`` embedded by their similarity ``rho`` (Sec. 4.4, Fig. 24-26).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; needs a reference store holding the layer.
    state : ExplorerState, optional
        The shared state; the view follows ``layer`` and ``channel`` and sets ``channel`` on click.
    k : int
        RelMax references per channel over which ``rho`` is computed (the paper's ``X*(k,q)``).
    seed : int
        Random state of t-SNE.
    neighbours : int
        The channel in focus and this many of its most similar channels form the cluster shown below.
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    rho : torch.Tensor or None
        ``[C, C]`` similarity of the layer shown (Eq. 30).
    points : numpy.ndarray or None
        ``[C, 2]`` t-SNE embedding, one point per channel.
    cluster : list[int]
        The channel in focus and its most similar channels.
    pair : tuple[int, int] or None
        The two classes compared (default: the two classes that use the cluster most).
    scatter : bqplot.Scatter
        The embedding's marks.
    """

    k = traitlets.Int(8, min=1)
    seed = traitlets.Int(0)
    neighbours = traitlets.Int(4, min=1)
    pair = traitlets.Tuple(allow_none=True, default_value=None)

    def __init__(self, session, state=None, *, k=8, seed=0, neighbours=4, **kwargs):
        super().__init__(session, state, **kwargs)
        self.add_class("crpw-similarity")
        self.k, self.seed, self.neighbours = k, seed, neighbours
        self.rho, self.points, self.cluster, self._shown = None, None, [], None
        self._hovered = None
        self.header = ipywidgets.HTML("")
        self.hover_image = _image(b"")
        self.hover_image.layout.display = "none"  # no picture yet: nothing, rather than a broken image
        self.hover_label = ipywidgets.HTML("<b>Hover a channel</b> to see its reference samples.")
        x, y = bqplot.LinearScale(), bqplot.LinearScale()
        colour = bqplot.ColorScale(scheme="viridis", min=0.0, max=1.0)
        self.scatter = bqplot.Scatter(
            x=np.zeros(0), y=np.zeros(0), color=np.zeros(0), scales={"x": x, "y": y, "color": colour},
            default_size=48, stroke="black", tooltip=self.hover_image,
            interactions={"click": "select", "hover": "tooltip"},
            selected_style={"stroke": "red", "stroke-width": 3, "opacity": 1.0},
        )  # fmt: skip
        self.scatter.on_element_click(self._on_click)
        self.scatter.observe(self._on_selected, names=["selected"])
        self.scatter.on_hover(self._on_hover)
        axes = [bqplot.ColorAxis(scale=colour, side="right", label="similarity")]
        self.figure = bqplot.Figure(
            marks=[self.scatter], axes=axes, fig_margin={"top": 10, "bottom": 10, "left": 10, "right": 60},
            layout=ipywidgets.Layout(width="440px", height="400px"), title="",
        )  # fmt: skip
        self.strip = ipywidgets.HBox(layout=ipywidgets.Layout(flex_flow="row wrap"))
        self.class_a, self.class_b = ipywidgets.Dropdown(description="classes"), ipywidgets.Dropdown()
        self.class_a.layout.width, self.class_b.layout.width = "260px", "180px"
        for dropdown in (self.class_a, self.class_b):
            dropdown.observe(self._on_pick, names=["value"])
        self.comparison = ipywidgets.VBox()
        self._setting_pair = False
        self.state.observe(self._on_state, names=["layer", "channel"])
        self.observe(lambda _: self.refresh(), names=["k", "seed"])
        self.observe(lambda _: self._show_cluster(), names=["neighbours", "pair"])
        self._start_when_shown()

    # --------------------------------------------------------------------------------------------------- public

    def refresh(self):
        """Compute (or take from the cache) ``rho`` and the embedding of ``state.layer`` and show them."""
        self._started = True
        store = self.session.current_store()
        if store is None:
            self.drop("embedding")
            self.settle("embedding")
            self.set_body(ipywidgets.HTML(f"<p>{html.escape(NO_STORE)}</p>"))
            return
        layer, k, seed = self.state.layer, self.k, self.seed
        if not layer:
            self.drop("embedding")
            self.set_body(ipywidgets.HTML("<p>Choose a layer.</p>"))
            return
        crp, datasets = self.session.crp, self.session.datasets

        def compute():
            task = current_task()
            task.step(0, 2)
            rho = concept_similarity(crp, store, datasets, layer, k=k)
            task.step(1, 2)
            return layer, rho, embed(rho, seed=seed)

        key = ("similarity", str(store.path), store.manifest.get("tables"), store.samples, layer, k, seed)
        self.analyse("embedding", key, compute, self._apply, f"similarity of the channels of {layer}")

    # ---------------------------------------------------------------------------------------------- internals

    def _apply(self, result):
        layer, rho, points = result
        if layer != self.state.layer:
            return
        self.rho, self.points, self._shown = rho, points, layer
        with self.scatter.hold_sync():
            self.scatter.x, self.scatter.y = points[:, 0], points[:, 1]
            self.scatter.names = [str(c) for c in range(len(points))]
            self.scatter.display_names = False
            self._colour()
        self.set_body(
            self.header,
            ipywidgets.HBox([self.figure, ipywidgets.VBox([self.hover_label, self.hover_image])]),
            self.strip,
            ipywidgets.HBox([self.class_a, self.class_b]),
            self.comparison,
        )
        self._show_cluster()

    def _colour(self):
        channel = self.state.channel
        count = len(self.points)
        valid = channel is not None and 0 <= channel < count
        self.scatter.color = self.rho[channel].numpy() if valid else np.zeros(count, dtype=np.float32)
        self.scatter.selected = [channel] if valid else None
        focus = f"colour: similarity to channel {channel}" if valid else "click a channel to colour by similarity to it"
        words = (
            f": placed so that channels whose {self.k} most relevant reference samples look alike to the layer sit "
            f"close together; {focus}"
        )
        self.header.value = f"<b>{count} channels of {html.escape(self._shown)}</b>" + about(
            words, "similarity rho of Achtibat et al. 2023, Sec. 4.4, Eq. 30-31; the map is t-SNE of 1 - rho", False
        )

    def _on_state(self, change):
        if change["name"] == "layer":
            self.refresh()
            return
        if self.rho is not None and self._shown == self.state.layer:
            self._colour()
            if self.pair is not None:
                self.pair = None  # the classes follow the new cluster
            else:
                self._show_cluster()

    def _on_click(self, mark, event):
        index = event.get("data", {}).get("index")
        if index is not None:
            self.state.channel = int(index)

    def _on_selected(self, change):
        selected = change["new"]
        if selected is not None and len(selected) == 1 and int(selected[0]) != self.state.channel:
            self.state.channel = int(selected[0])

    def _on_hover(self, mark, event):
        index = event.get("data", {}).get("index")
        if index is None or self._shown is None or index == self._hovered:
            return
        self._hovered = index = int(index)
        layer, k, store = self._shown, min(self.k, 6), self.session.current_store()

        def apply(data):
            self.hover_image.value, self.hover_image.layout.width = data, _width(data)
            self.hover_image.layout.display = "" if data else "none"
            self.hover_label.value = f"<b>channel {index}</b>: its most relevant reference samples"

        key = ("similarity-refs", str(store.path), store.samples, layer, index, k)
        self.schedule("tooltip", key, lambda: reference_grid(self.session, layer, index, k=k), apply)

    def _on_pick(self, change):
        if self._setting_pair or self.class_a.value is None or self.class_b.value is None:
            return
        self.pair = (int(self.class_a.value), int(self.class_b.value))

    def _show_cluster(self):
        channel, layer = self.state.channel, self._shown
        if self.rho is None or channel is None or not 0 <= channel < len(self.rho):
            self.strip.children, self.comparison.children = (), ()
            return
        cluster = [channel] + [c for c, _ in similar(self.rho, channel, self.neighbours)]
        values = [float(self.rho[channel, c]) for c in cluster]
        store, pair, rho_k = self.session.current_store(), self.pair, self.k
        names = self.session.classes

        def compute():
            strip = [reference_grid(self.session, layer, c, k=4) for c in cluster]
            chosen = pair or tuple(c for c, _ in classes_using(store, layer, cluster, k=2))
            rows = [self._class_row(store, layer, cluster, cls) for cls in chosen]
            return strip, chosen, rows

        def apply(result):
            strip, chosen, rows = result
            self.cluster = cluster
            self.strip.children = [
                _labelled(f"channel <b>{c}</b>, similarity {v:.2f}", _image(png))
                for c, v, png in zip(cluster, values, strip)
            ]
            self._setting_pair = True
            options = [(name, i) for i, name in enumerate(names)]
            self.class_a.options, self.class_b.options = options, options
            if len(chosen) == 2:
                self.class_a.value, self.class_b.value = chosen
            self._setting_pair = False
            legend = ipywidgets.HTML(
                "The similar channels on a sample of each class: activation (grey, one scale per row), heatmap over "
                "the sample, and the channel's share of the layer's summed |R| for that class."
            )
            scale = ipywidgets.HTML(colour_bar(), layout=ipywidgets.Layout(width="320px"))
            self.comparison.children = [legend, *(self._row_widget(row) for row in rows), scale]

        key = ("similarity-cluster", str(store.path), store.samples, layer, tuple(cluster), pair, rho_k)
        self.analyse("cluster", key, compute, apply, f"channels like channel {channel}")

    def _class_row(self, store, layer, cluster, cls):
        """Activations, conditional heatmaps and relevance of the cluster on a sample of class ``cls`` (Fig. 26)."""
        references = store.references(layer, cluster[0], cls=cls, k=1)
        if not references:
            return {"cls": cls, "missing": True}
        reference = references[0]
        item = self.session.datasets[reference.dataset][reference.index]
        x = torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)
        crp = self.session.crp
        result = crp.attribute(x, target=cls, record=[layer])
        # channels first, positions on the input's grid (a transformer's tokens, a channels-last layer)
        activation = crp.layout(layer).to_grid(result.activations[layer][None])[0][cluster].clamp(min=0)
        relevance = result.relevance[layer]
        share = relevance[cluster] / max(float(relevance.abs().sum()), 1e-12)
        heatmaps = crp.conditional_heatmaps(x, layer, cluster, target=cls)
        peak = float(activation.max())
        shown = displayed(self.session, x)
        under = shown if np.ndim(shown) == 3 else None
        return {
            "cls": cls,
            "sample": reference.index,
            "image": encode_png(tile(shown)),
            "cells": [
                (c, encode_png(activation_picture(a, peak)), encode_png(tile(heatmap_picture(h, under))), float(s))
                for c, a, h, s in zip(cluster, activation, heatmaps, share)
            ],
        }

    def _row_widget(self, row):
        name = html.escape(class_name(self.session, row["cls"]))
        if row.get("missing"):
            return ipywidgets.HTML(f"<p>No class-conditional reference of class <b>{name}</b> for this channel.</p>")
        cells = [_labelled(f"<b>{name}</b><br>sample {row['sample']}", _image(row["image"]))]
        for channel, activation, heatmap, share in row["cells"]:
            cells.append(
                _labelled(
                    f"ch {channel}: {100 * share:+.1f} % of |R|",
                    ipywidgets.HBox([_image(activation), _image(heatmap)]),
                )
            )
        return ipywidgets.HBox(cells, layout=ipywidgets.Layout(flex_flow="row wrap"))
