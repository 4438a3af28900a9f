"""Inverse search across classes: which other classes use a concept (Achtibat et al. 2023, Sec. 4.3, Fig. 22-23, A.8).

For the channel in focus (``state.channel``), or for the most relevant channels inside the region drawn on the
concept atlas (``state.region``, taken with "use atlas region"), a bqplot bar chart ranks the classes that use them
most over the scanned dataset (the store's class statistics); below, the class-conditional references of the top
classes with the channel's conditional heatmaps show where in those samples it is used (Fig. 23); and a line plot
shows the class confidences of the explained sample while its most relevant channels (in the region, or in the
whole input) are switched off one after the other (Fig. 22 right).
"""

import hashlib
import html

import bqplot
import ipywidgets
import numpy as np
import traitlets

from ..engine.inverse import classes_using, suspicious_region, switch_off_curve
from .charts import COLOURS, colour_bar, figure, legend, with_legend
from .component import Panel
from .gallery import class_name
from .similarity import ComputesWhenShown, _image, _labelled, reference_grid
from .worker import current_task

__all__ = ["InverseSearchView"]

NO_STORE = (
    "No reference store: the inverse search ranks classes by the mean relevance a scan recorded per class "
    "over the scanned dataset. Scan a dataset first "
    "(store = cw.scan(cw.CRP(model), dataset, layers=[...], path='references')) "
    "and give it to the explorer (store=...) or to the Session."
)
NO_REGION = "No region yet: draw one on the concept atlas (drag or click superpixels), then press the button again."


def _region_key(region):
    region = np.ascontiguousarray(region, dtype=bool)
    return (region.shape, hashlib.blake2b(region.tobytes(), digest_size=16).hexdigest())


class InverseSearchView(ComputesWhenShown, Panel):
    """The classes that use a channel, or a suspicious region's channels, and how decisive they are (Sec. 4.3).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; needs a reference store holding ``state.layer``.
    state : ExplorerState, optional
        The shared state: ``sample``/``custom``, ``target``, ``layer``, ``channel`` and ``region`` (read); clicking
        a region channel sets ``channel``.
    classes : int
        Classes in the bar chart.
    references : int
        Top classes whose class-conditional references are shown.
    k : int
        Region channels whose class use is aggregated (Fig. 22 centre shows 6).
    steps : int
        Channels switched off one after the other in the curve (Fig. 22 right: 20).
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    source : {"channel", "region"}
        Whether the view follows ``state.channel`` or the region taken from the atlas.
    region : numpy.ndarray or None
        The region taken with :meth:`use_region` (boolean ``[H, W]``).
    ranking : list[tuple[int, float]]
        The classes shown and their summed mean relevance.
    channels : list[int]
        The channels whose use is ranked (one in channel mode).
    curve : SwitchOffCurve or None
        The switch-off curve shown.
    """

    source = traitlets.Enum(("channel", "region"), default_value="channel")
    classes = traitlets.Int(5, min=1)
    references = traitlets.Int(3, min=0)
    k = traitlets.Int(6, min=1)
    steps = traitlets.Int(20, min=1)

    def __init__(self, session, state=None, *, classes=5, references=3, k=6, steps=20, **kwargs):
        super().__init__(session, state, **kwargs)
        self.add_class("crpw-inverse")
        self.classes, self.references, self.k, self.steps = classes, references, k, steps
        self.region, self.ranking, self.channels, self.curve = None, [], [], None
        self.use_region_button = ipywidgets.Button(description="use atlas region", icon="crosshairs")
        self.use_channel_button = ipywidgets.Button(description="use channel in focus")
        for button in (self.use_region_button, self.use_channel_button):
            button.layout.width = "auto"
        self.use_region_button.on_click(lambda _: self.use_region())
        self.use_channel_button.on_click(lambda _: self.use_channel())
        self.header = ipywidgets.HTML("")
        self.region_channels = ipywidgets.HBox(layout=ipywidgets.Layout(flex_flow="row wrap"))
        x, y = bqplot.OrdinalScale(), bqplot.LinearScale()
        self.bars = bqplot.Bars(x=[], y=[], scales={"x": x, "y": y}, colors=["#d62728"], padding=0.2)
        self.bars.orientation = "horizontal"  # class names on the vertical axis: they never overlap
        self.bar_chart = figure(
            [self.bars], [bqplot.Axis(scale=x, side="left"),
                          bqplot.Axis(scale=y, side="bottom", tick_format=".2~g", num_ticks=5,
                                      label="mean relevance")],
            "mean relevance per class", "crpw-inverse-classes", 420, 300,
            {"top": 36, "bottom": 45, "left": 130, "right": 16},
        )  # fmt: skip
        cx, cy = bqplot.LinearScale(), bqplot.LinearScale(min=0.0, max=1.0)
        self.steps_axis = bqplot.Axis(scale=cx, label="channels switched off", tick_format="d")
        self.lines = bqplot.Lines(x=[], y=[], scales={"x": cx, "y": cy}, marker="circle", marker_size=16)
        self.curve_chart = figure(
            [self.lines], [self.steps_axis, bqplot.Axis(scale=cy, side="left", label="confidence")],
            "switching them off", "crpw-inverse-curve", 400, 300,
        )  # fmt: skip
        self.curve_key = ipywidgets.HTML("")
        self.reference_rows = ipywidgets.VBox()
        self.state.observe(self._on_state, names=["sample", "custom", "target", "layer", "channel"])
        self.observe(lambda _: self.refresh(), names=["source", "classes", "references", "k", "steps"])
        self._start_when_shown()

    # --------------------------------------------------------------------------------------------------- public

    def use_region(self):
        """Take ``state.region`` (drawn on the concept atlas) and rank the classes using its top channels."""
        region = self.state.region
        if region is None or not np.asarray(region).any():
            self.settle("region", ValueError(NO_REGION))
            return
        self.settle("region")
        self.region = np.asarray(region, dtype=bool).copy()
        if self.source == "region":
            self.refresh()
        self.source = "region"

    def use_channel(self):
        """Follow ``state.channel`` again."""
        self.settle("region")
        self.source = "channel"

    def refresh(self):
        """Compute (or take from the cache) and show the ranking, references and switch-off curve."""
        self._started = True
        store = self.session.current_store()
        controls = ipywidgets.HBox([self.use_region_button, self.use_channel_button])
        if store is None:
            self.drop("inverse")
            self.settle("inverse")
            self.set_body(controls, ipywidgets.HTML(f"<p>{html.escape(NO_STORE)}</p>"))
            return
        layer, channel, target, region = self.state.layer, self.state.channel, self.state.target, self.region
        source = self.source
        if source == "channel" and (not layer or channel is None):
            self.drop("inverse")
            self.set_body(controls, ipywidgets.HTML("<p>Choose a channel (or draw a region on the atlas).</p>"))
            return
        if (sample := self.sample_source("inverse")) is None:
            return
        where, load = sample
        classes, references, k, steps = self.classes, self.references, self.k, self.steps
        crp, session = self.session.crp, self.session

        def compute():
            task = current_task()
            task.step(0, 3)
            x, _ = load()
            explained = session.explained_class(x, target)
            found = None
            if source == "region":
                found = suspicious_region(crp, x, layer, region, target=explained, k=max(k, steps))
                channels, ordered = found.channels[:k], found.channels[:steps]
            else:
                channels = [channel]
                ordered = crp.channel_relevance(x, layer, target=explained).order[:steps].tolist()
            ranking = classes_using(store, layer, channels, k=classes)
            task.step(1, 3)
            shown = channels[0]
            grids = [
                (c, reference_grid(session, layer, shown, k=4, cls=c, heatmap=True)) for c, _ in ranking[:references]
            ]
            task.step(2, 3)
            curve = switch_off_curve(crp, x, layer, ordered)
            return source, layer, explained, found, channels, ranking, grids, curve

        region_key = _region_key(region) if source == "region" else None
        key = ("inverse", str(store.path), store.manifest.get("tables"), store.samples, source, where, layer,
               channel if source == "channel" else None, region_key, target, classes, references, k, steps)  # fmt: skip
        self.set_body(controls, self.header, self.region_channels,
                      ipywidgets.HBox([self.bar_chart, with_legend(self.curve_chart, self.curve_key)],
                                      layout=ipywidgets.Layout(flex_flow="row wrap")),
                      self.reference_rows)  # fmt: skip
        self.analyse("inverse", key, compute, self._apply, f"the classes that use it, for {self.describe_request()}")

    # ---------------------------------------------------------------------------------------------- internals

    def _on_state(self, change):
        if change["name"] in ("sample", "custom") and self.source == "region":
            self.region = None  # the region belongs to the sample it was drawn on
            self.source = "channel"
            return
        if change["name"] == "channel" and self.source == "region":
            return
        self.refresh()

    def _name(self, cls):
        return class_name(self.session, cls)

    def _apply(self, result):
        source, layer, explained, found, channels, ranking, grids, curve = result
        self.ranking, self.channels, self.curve = ranking, channels, curve
        if source == "region":
            self.header.value = (
                f"<b>{html.escape(layer)}</b>: the {len(channels)} channels most relevant inside the atlas region "
                f"(class {html.escape(self._name(explained))}); the classes that use them most over the scanned "
                "dataset. Click a channel to focus it."
            )
            buttons = []
            for channel, share in zip(found.channels[: len(channels)], found.share):
                button = ipywidgets.Button(description=f"ch {channel}: {100 * share:.0f} %",
                                           layout=ipywidgets.Layout(width="auto"))  # fmt: skip
                button.on_click(lambda _, c=channel: self._focus(c))
                buttons.append(button)
            self.region_channels.children = buttons
        else:
            self.header.value = (
                f"<b>{html.escape(layer)}</b>, channel <b>{channels[0]}</b>: the classes that use it most over the "
                "scanned dataset (mean relevance per class)."
            )
            self.region_channels.children = ()
        with self.bars.hold_sync():
            self.bars.x = [self._name(c) for c, _ in ranking]
            self.bars.y = np.array([value for _, value in ranking], dtype=np.float64)
        steps = np.arange(len(curve.channels) + 1)
        self.steps_axis.tick_values = steps[:: max(1, len(steps) // 10)]  # whole steps only
        with self.lines.hold_sync():
            self.lines.x = steps
            self.lines.y = curve.confidence.T.numpy().astype(np.float64)
            self.lines.labels = [self._name(c) for c in curve.classes]
            self.lines.colors = COLOURS[: len(curve.classes)]
        self.curve_key.value = legend(self.lines.labels, self.lines.colors)
        what = "in the region" if source == "region" else "in the input"
        self.curve_chart.title = f"top {len(curve.channels)} channels {what} switched off"
        rows = []
        for cls, png in grids:
            caption = (
                f"class <b>{html.escape(self._name(cls))}</b>: class-conditional references of channel "
                f"{channels[0]}, with its heatmap over each: where it is used in them"
            )
            rows.append(_labelled(caption, _image(png)) if png else ipywidgets.HTML(f"<p>{caption}: none</p>"))
        scale = ipywidgets.HTML(colour_bar(), layout=ipywidgets.Layout(width="320px"))
        self.reference_rows.children = [*rows, scale] if rows else rows

    def _focus(self, channel):
        self.source = "channel"
        self.state.channel = channel
