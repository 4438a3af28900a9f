"""What-if: switch channels off or scale them, blend a donor's concept in (Achtibat et al. 2023, Sec. 4.1-4.2).

Two parts on the shared state's sample and layer. *Switch off / scale*: the selected channels of ``state.layer``
(or a typed list) multiplied by a factor (0 switches them off, 2 doubles them); class scores before and after as
bars, and the heatmaps before and after (:func:`crp_widgets.engine.whatif.switch_off`). *Insert / replace*: a donor
sample's activations blended into the sample inside a region (the region drawn on the concept atlas, or a concept
mask of the dataset) with ``alpha`` from 0 to 1 (Eq. 27-28), or a spatially averaged donor (Eq. 29); the sweep plots
show the class outputs and the relevance of the most changing channels against ``alpha`` (Fig. 21,
:func:`crp_widgets.engine.whatif.insertion_curve`).
"""

import hashlib
import html

import bqplot
import ipywidgets
import numpy as np
import torch

from ..engine import CRPError
from ..engine.whatif import insertion_curve, switch_off
from .channels import default_layer
from .charts import COLOURS, about, figure, legend, with_legend
from .component import Panel
from .heatmap import HeatmapView
from .sample import class_names
from .worker import current_task

__all__ = ["WhatIfView", "parse_channels"]

DRAWN = "drawn region"
EVERYWHERE = "everywhere"
SCORE_COLOURS = ["#9e9e9e", "#1976d2"]
MAX_BARS = 20  # class scores shown at most (those with the largest output before or after)


def _top_classes(values, count):
    """The classes (columns of ``values``) to show: all of up to ``count``, else those with the largest outputs."""
    if values.shape[1] <= count:
        return list(range(values.shape[1]))
    return sorted(np.argsort(-values.max(axis=0))[:count].tolist())


def parse_channels(text):
    """Channel indices from text such as ``"6, 22 31"``; an empty text gives ``[]``.

    Raises
    ------
    CRPError
        For anything but non-negative integers separated by commas or spaces.
    """
    parts = [p for p in text.replace(",", " ").split() if p]
    if not all(p.isdigit() for p in parts):
        raise CRPError(f"channels: give channel numbers separated by commas, e.g. '6, 22'; got {text!r}")
    return sorted({int(p) for p in parts})


def _mask_key(mask):
    data = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    return (data.shape, hashlib.blake2b(data.tobytes(), digest_size=12).hexdigest())


def _axes(scales, y_label):
    """Axes of a sweep plot: alpha from 0 to 1 at the bottom, ``y_label`` on the left."""
    return [
        bqplot.Axis(scale=scales["x"], side="bottom", label="alpha", tick_values=np.linspace(0.0, 1.0, 6)),
        bqplot.Axis(scale=scales["y"], side="left", label=y_label),
    ]


class WhatIfView(Panel):
    """Switch channels off or scale them, and blend a donor's concept into the sample (Sec. 4.1-4.2, Fig. 21).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend.
    state : ExplorerState, optional
        The shared state: ``sample``/``custom`` (the edited input), ``target``, ``layer`` (the edited layer),
        ``conditions`` (the selected channels of the layer) and ``region`` (the insertion region).
    alphas : int
        Points of the alpha sweep (from 0 to 1).
    track : int
        Most changing channels shown against alpha.
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    channels : ipywidgets.Text
        Channels to edit; empty: the selected channels of ``state.layer``.
    factor : ipywidgets.FloatSlider
        Their factor: 0 switches them off, 2 doubles them.
    scores : bqplot.Bars
        Class scores before (first row) and after (second row) the edit.
    donor : ipywidgets.BoundedIntText
        The donor's index in the dataset.
    mode : ipywidgets.ToggleButtons
        ``"insert"`` (Eq. 27-28) or ``"replace"`` by the spatially averaged donor (Eq. 29).
    region : ipywidgets.Dropdown
        The blended region: the drawn region, a concept mask (of the donor when inserting, of the sample when
        replacing) or everywhere.
    alpha : ipywidgets.FloatSlider
        The alpha shown; marked on the sweep plots.
    curve : InsertionCurve or None
        The last sweep.
    result : SwitchOff or None
        The last switch-off comparison.
    """

    def __init__(self, session, state=None, *, alphas=11, track=5, **kwargs):
        super().__init__(session, state, **kwargs)
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self.alphas = np.linspace(0.0, 1.0, int(alphas))
        self.track = int(track)
        self.curve, self.result = None, None
        self._quiet = False
        self._build_switch()
        self._build_sweep()
        wrap = ipywidgets.Layout(flex_flow="row wrap", align_items="center")
        switch_box = ipywidgets.VBox(
            [
                ipywidgets.HTML(about("Switch channels off or scale them",
                                      "Interventions on a layer's activations: Achtibat et al. 2023, Sec. 4.1")),
                ipywidgets.HBox([self.channels, self.top_button, self.factor], layout=wrap),
                self.summary,
                ipywidgets.HBox([with_legend(self.score_figure, self.scores_key), self.heatmap_before,
                                 self.heatmap_after], layout=wrap),
            ]
        )  # fmt: skip
        sweep_box = ipywidgets.VBox(
            [
                ipywidgets.HTML(about("Blend a donor's concept in",
                                      "Insertion and replacement: Achtibat et al. 2023, Sec. 4.2, Eq. 27-29")),
                ipywidgets.HBox([self.donor, self.mode, self.region], layout=wrap),
                ipywidgets.HBox([self.alpha, self.at_alpha], layout=wrap),
                ipywidgets.HBox([with_legend(self.output_figure, self.outputs_key),
                                 with_legend(self.relevance_figure, self.relevance_key)], layout=wrap),
            ]
        )  # fmt: skip
        switch_box.add_class("crpw-whatif-switch")
        sweep_box.add_class("crpw-whatif-sweep")
        self.add_class("crpw-whatif")
        self.set_body(switch_box, sweep_box)
        self.state.observe(self._on_state, names=["sample", "custom", "target", "layer", "conditions", "region"])
        self.channels.observe(lambda _: self._switch(), names=["value"])
        self.factor.observe(lambda _: self._switch(), names=["value"])
        self.top_button.on_click(lambda _: self._top_channels())
        self.donor.observe(self._on_source, names=["value"])
        self.mode.observe(self._on_source, names=["value"])
        self.region.observe(lambda _: None if self._quiet else self._sweep(), names=["value"])
        self.alpha.observe(lambda _: self._show_alpha(), names=["value"])
        self.refresh()

    def refresh(self):
        """Switch-off comparison and sweep for the current state (see :meth:`Panel.refresh`)."""
        self._update_regions()
        self._switch()
        self._sweep()

    # ---------------------------------------------------------------------------------------------------- layout

    def _build_switch(self):
        self.channels = ipywidgets.Text(
            "", placeholder="selected channels", description="channels", continuous_update=False,
            layout=ipywidgets.Layout(width="260px"),
        )  # fmt: skip
        self.channels.add_class("crpw-whatif-channels")
        self.top_button = ipywidgets.Button(description="top 3", tooltip="the 3 most relevant channels of the layer")
        self.top_button.add_class("crpw-whatif-top")
        self.factor = ipywidgets.FloatSlider(0.0, min=0.0, max=2.0, step=0.1, description="factor")
        self.factor.add_class("crpw-whatif-factor")
        self.summary = ipywidgets.HTML("")
        self.summary.add_class("crpw-whatif-summary")
        x, y = bqplot.OrdinalScale(), bqplot.LinearScale()
        # Horizontal bars: the class names read on the vertical axis, whatever their length.
        self.scores = bqplot.Bars(
            x=[], y=[[], []], scales={"x": x, "y": y}, type="grouped", colors=SCORE_COLOURS,
            labels=["before", "after"], orientation="horizontal",
        )  # fmt: skip
        axes = [bqplot.Axis(scale=x, side="left"),
                bqplot.Axis(scale=y, side="bottom", label="output")]  # fmt: skip
        margin = {"top": 36, "bottom": 45, "left": 130, "right": 12}
        self.score_figure = figure([self.scores], axes, "class scores", "crpw-whatif-scores", 380, 320, margin)
        self.scores_key = ipywidgets.HTML(legend(["before", "after"], SCORE_COLOURS))
        small = {"layout": ipywidgets.Layout(width="230px")}
        self.heatmap_before = HeatmapView(caption="heatmap before", **small)
        self.heatmap_after = HeatmapView(caption="heatmap after", **small)

    def _build_sweep(self):
        self.donor = ipywidgets.BoundedIntText(
            0, min=0, max=max(0, len(self.session.dataset) - 1) if self.session.dataset is not None else 0,
            description="donor", layout=ipywidgets.Layout(width="160px"),
        )  # fmt: skip
        self.donor.add_class("crpw-whatif-donor")
        self.mode = ipywidgets.ToggleButtons(
            options=[("insert the donor", "insert"), ("replace by its average", "replace")], value="insert",
            style={"button_width": "auto"},
            tooltips=["blend the donor's activations into the sample", "blend in the donor averaged over space"],
        )  # fmt: skip
        self.region = ipywidgets.Dropdown(options=[EVERYWHERE], description="region")
        self.region.add_class("crpw-whatif-region")
        self.alpha = ipywidgets.FloatSlider(0.0, min=0.0, max=1.0, step=1 / (len(self.alphas) - 1), description="alpha")
        self.alpha.add_class("crpw-whatif-alpha")
        self.at_alpha = ipywidgets.HTML("")
        self.at_alpha.add_class("crpw-whatif-at-alpha")
        scales = {"x": bqplot.LinearScale(min=0.0, max=1.0), "y": bqplot.LinearScale()}
        self.outputs_line = bqplot.Lines(x=[], y=[], scales=scales, colors=COLOURS)
        self.outputs_marker = bqplot.Lines(
            x=[0.0, 0.0], y=[0.0, 0.0], scales=scales, colors=["#9e9e9e"], line_style="dashed"
        )
        self.output_figure = figure(
            [self.outputs_line, self.outputs_marker], _axes(scales, "output"), "class outputs",
            "crpw-whatif-outputs", 380, 300,
        )  # fmt: skip
        self.outputs_key = ipywidgets.HTML("")
        rscales = {"x": bqplot.LinearScale(min=0.0, max=1.0), "y": bqplot.LinearScale()}
        self.relevance_line = bqplot.Lines(x=[], y=[], scales=rscales, colors=COLOURS)
        self.relevance_figure = figure(
            [self.relevance_line], _axes(rscales, "relevance"), "channels that change most", "crpw-whatif-relevance",
            380, 300,
        )  # fmt: skip
        self.relevance_key = ipywidgets.HTML("")

    # ------------------------------------------------------------------------------------------------ reactions

    def _on_state(self, change):
        if change["name"] in ("sample", "custom", "region"):
            self._update_regions(DRAWN if change["name"] == "region" else None)
        if change["name"] == "layer" and self.channels.value:
            self.channels.value = ""  # typed channels belong to the previous layer; this recomputes
        elif change["name"] != "region":
            self._switch()
        self._sweep()

    def _on_source(self, change):
        self._update_regions()
        self._sweep()

    def _masks(self, index):
        masks = getattr(self.session.dataset, "masks", None)
        if masks is None or index is None:
            return {}
        try:
            return {name: np.asarray(mask, dtype=bool) for name, mask in masks(int(index)).items()}
        except Exception:  # a dataset without masks for this sample
            return {}

    def _region_owner(self):
        """Whose concept masks the region list offers: the donor's (insert) or the sample's (replace)."""
        if self.mode.value == "insert":
            return self.donor.value
        return None if self.state.custom is not None else self.state.sample

    def _update_regions(self, prefer=None):
        """Offer the drawn region, the concept masks of the donor (insert) or the sample (replace), everywhere."""
        options = ([DRAWN] if self.state.region is not None else []) + sorted(self._masks(self._region_owner()))
        options.append(EVERYWHERE)
        current = prefer if prefer in options else self.region.value
        self._quiet = True  # setting the options selects the first one: one sweep for the final choice
        try:
            self.region.options = options
            self.region.value = current if current in options else options[0]
        finally:
            self._quiet = False

    def _region_mask(self):
        if self.region.value == DRAWN and self.state.region is not None:
            return np.asarray(self.state.region, dtype=bool)
        if self.region.value in (EVERYWHERE, DRAWN, None):
            return None
        mask = self._masks(self._region_owner()).get(self.region.value)
        if mask is None:
            raise CRPError(f"no mask {self.region.value!r} for this sample; choose another region")
        return mask

    # ------------------------------------------------------------------------------------------------ switch off

    def _selected(self):
        typed = parse_channels(self.channels.value)
        return typed or list(self.state.conditions.get(self.state.layer, []))

    def _top_channels(self):
        source, load = self.session.source(self.state)
        layer, target, crp = self.state.layer, self.state.target, self.session.crp

        def compute():
            x, _ = load()
            ranking = crp.channel_relevance(x, layer, self.session.explained_class(x, target))
            return [int(c) for c in ranking.order[:3]]

        def apply(channels):
            self.channels.value = ", ".join(map(str, channels))

        self.schedule("top", (id(self.session), "top", source, layer, target), compute, apply)

    def _switch(self):
        try:
            channels = self._selected()
            source, load = self.session.source(self.state)
        except Exception as error:
            self.settle("switch", error)
            return
        layer, target, factor = self.state.layer, self.state.target, float(self.factor.value)
        if not channels:
            self.drop("switch")
            self.settle("switch")
            self.result = None
            self.summary.value = f"select channels of {html.escape(layer)} (channel selector, or type them)"
            self.scores_key.value = ""
            with self.scores.hold_sync():
                self.scores.x, self.scores.y = [], [[], []]
            self.heatmap_before.update(image=None, heatmap=None)
            self.heatmap_after.update(image=None, heatmap=None)
            return
        crp = self.session.crp

        def compute():
            x, _ = load()
            result = switch_off(crp, x, layer, channels, factor, target)
            return result, self.session.display(x)

        def apply(computed):
            result, image = computed
            self.result = result
            before, after = result.before.prediction, result.after.prediction
            names = class_names(self.session, len(before))
            values = np.stack([before.numpy(), after.numpy()])
            shown = _top_classes(values, MAX_BARS)
            values = values[:, shown]
            low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
            margin = 0.05 * (high - low or 1.0)
            with self.scores.hold_sync():
                self.scores.x = [names[c] for c in shown]
                self.scores.y = values
            self.scores_key.value = legend(["before", "after"], SCORE_COLOURS)
            self.scores.scales["y"].min, self.scores.scales["y"].max = low - margin, high + margin
            old, new = int(before.argmax()), int(after.argmax())
            what = "off" if factor == 0 else f"\N{MULTIPLICATION SIGN} {factor:g}"
            self.summary.value = (
                f"{html.escape(layer)} channels {', '.join(map(str, channels))} {what}: prediction "
                f"<b>{html.escape(names[old])}</b> ({float(before[old]):.2f}) \N{RIGHTWARDS ARROW} "
                f"<b>{html.escape(names[new])}</b> ({float(after[new]):.2f}); heatmaps explain "
                f"{html.escape(names[result.target])}"
            )
            self.heatmap_before.update(image=image, heatmap=result.before.heatmap)
            self.heatmap_after.update(image=image, heatmap=result.after.heatmap)

        key = (id(self.session), "switch", source, layer, target, tuple(channels), factor)
        self.schedule("switch", key, compute, apply)

    # --------------------------------------------------------------------------------------------------- sweep

    def _sweep(self):
        try:
            source, load = self.session.source(self.state)
            mask = self._region_mask()
            donor_index = int(self.donor.value)
        except Exception as error:
            self.settle("sweep", error)
            return
        layer, target, averaged = self.state.layer, self.state.target, self.mode.value == "replace"
        crp, alphas, track = self.session.crp, self.alphas, self.track

        def compute():
            x, _ = load()
            donor, _ = self.session.item(donor_index)
            current_task().step(0, 1)
            return insertion_curve(
                crp, x, donor, layer, None if mask is None else torch.as_tensor(mask), alphas=alphas,
                averaged=averaged, track=track, target_classes=target,
            )  # fmt: skip

        def apply(curve):
            self.curve = curve
            names = class_names(self.session, curve.outputs.shape[-1])
            a = curve.alphas.numpy()
            with self.outputs_line.hold_sync():
                self.outputs_line.x = a
                self.outputs_line.y = curve.output_mean.numpy().T
                self.outputs_line.labels = names
            self.outputs_key.value = legend(names, COLOURS * (len(names) // len(COLOURS) + 1))
            channels, mean, _ = curve.channel_curves()
            with self.relevance_line.hold_sync():
                self.relevance_line.x = a
                self.relevance_line.y = mean.numpy().T
                self.relevance_line.labels = [f"{layer}:{int(c)}" for c in channels]
            self.relevance_key.value = legend([f"channel {int(c)}" for c in channels], COLOURS)
            self.relevance_figure.axes[1].label = f"relevance for {names[curve.target]}"
            self._show_alpha()

        region = None if mask is None else _mask_key(mask)
        key = (id(self.session), "sweep", source, donor_index, layer, averaged, region, target, tuple(alphas), track)
        self.analyse("sweep", key, compute, apply, f"what-if sweep, for {self.describe_request()}")

    def _show_alpha(self):
        curve = self.curve
        if curve is None:
            return
        index = int(np.abs(curve.alphas.numpy() - self.alpha.value).argmin())
        outputs = curve.output_mean[index]
        names = class_names(self.session, len(outputs))
        top = int(outputs.argmax())
        low, high = float(curve.output_mean.min()), float(curve.output_mean.max())
        with self.outputs_marker.hold_sync():
            alpha = float(curve.alphas[index])
            self.outputs_marker.x, self.outputs_marker.y = [alpha, alpha], [low, high]
        self.at_alpha.value = (
            f"at alpha {float(curve.alphas[index]):.2f}: prediction <b>{html.escape(names[top])}</b> "
            f"({float(outputs[top]):.2f}); {html.escape(names[curve.target])}: {float(outputs[curve.target]):.2f}"
        )
