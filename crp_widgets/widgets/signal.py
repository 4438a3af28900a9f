"""Time series: a 1-D input, heatmaps as line plots, a region dragged on the time axis (Achtibat et al. 2023, Sec. 3.5).

The explained signal ``[C, L]`` is drawn as one line per input channel over a band of ``bwr`` colours (A.3.1) showing
its class-conditional relevance ``R(x | y, θ)`` (all of ``state.conditions``, Eq. 8), which is also drawn as a line
below it on the same time axis (Fig. 18). Small line
plots show the conditional heatmaps (Eq. 9) of the selected channels of ``state.layer``, or of its top-k channels
(ranked over the whole signal, or inside the region when one is dragged). Dragging on the time axis sets
``state.region`` to a boolean ``[L]`` mask, and the region's channels are ranked by their relevance inside it
(Eq. 11-12, ``CRP.region_relevance``). Everything is computed off the comm thread by the session's worker.
"""

import bqplot
import ipywidgets
import numpy as np
import torch
import traitlets

from ..engine import CRPError
from ..render.signals import LINE_COLOURS, signal_display
from .channels import default_layer, frozen
from .component import Panel
from .heatmaps import heatmap_caption
from .sample import class_names
from .session import ExplorerState, _default_display

__all__ = ["SignalView", "is_signal_session", "region_interval", "use_signal_display"]

RELEVANCE = "#d32f2f"


def is_signal_session(session):
    """Whether the session explains 1-D inputs ``[C, L]`` (its first input has two dimensions)."""
    try:
        return session.input(ExplorerState()).ndim == 2
    except CRPError:  # no dataset: nothing to tell from
        return False


def use_signal_display(session):
    """Plot 1-D inputs as they are: replace the session's default image display (which clips to [0, 1])."""
    if session.display is _default_display:
        session.display = signal_display


def region_interval(region):
    """The ``(start, end)`` samples (end exclusive) spanned by a boolean ``[L]`` region, or ``None`` when empty."""
    if region is None:
        return None
    inside = np.flatnonzero(np.asarray(region, dtype=bool).reshape(-1))
    return None if inside.size == 0 else (int(inside[0]), int(inside[-1]) + 1)


def _signal(load):
    """The input ``load`` returns, refused with a :class:`CRPError` unless it is a 1-D signal ``[C, L]``."""
    x, _ = load()
    if x.ndim != 2:
        raise CRPError(f"SignalView shows 1-D inputs [C, L]; this input has shape {list(x.shape)}")
    return x


def _colours(n):
    return ["#{:02x}{:02x}{:02x}".format(*LINE_COLOURS[i % len(LINE_COLOURS)]) for i in range(n)]


class SignalView(Panel):
    """A 1-D input with its class-conditional heatmap, channel heatmaps and a draggable time region (Sec. 3.5).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; its inputs are signals ``[C, L]``.
    state : ExplorerState, optional
        The shared state; this view sets ``region`` (dragged on the time axis).
    top_k : int
        Channel heatmaps shown when no channel of ``state.layer`` is selected.
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    signal : numpy.ndarray or None
        ``[C, L]``: the explained signal as displayed.
    heatmap : numpy.ndarray or None
        ``[L]``: ``attribute(x, y, state.conditions).heatmap``.
    caption : str
        What ``heatmap`` is conditioned on.
    channel_heatmaps : numpy.ndarray or None
        ``[k, L]``: ``conditional_heatmaps(x, layer, channels, y, conditions on other layers)``.
    channel_info : dict
        ``layer``, ``channels`` (shown order), their ``relevance`` and ``shares`` (of the layer's, or of the region's
        relevance when ranked in a region), ``selected`` (the selected channels rather than the top-k) and
        ``region`` (``[start, end)`` of the region they were ranked in, or ``None``).
    top_k : int
        Channel heatmaps shown when none is selected.
    """

    signal = traitlets.Any(None, allow_none=True)
    heatmap = traitlets.Any(None, allow_none=True)
    caption = traitlets.Unicode("")
    channel_heatmaps = traitlets.Any(None, allow_none=True)
    channel_info = traitlets.Dict()
    top_k = traitlets.Int(4, min=1)

    def __init__(self, session, state=None, *, top_k=4, **kwargs):
        super().__init__(session, state, **kwargs)
        use_signal_display(self.session)
        self.top_k = top_k
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self._syncing = False
        self.add_class("crpw-signal")
        self._build()
        self.state.observe(self._on_state, names=["sample", "custom", "target", "layer", "conditions", "region"])
        self.observe(lambda _: self._draw_channels(), names=["top_k"])
        self.refresh()

    def refresh(self):
        """The signal and the channels' heatmaps for the current state (see :meth:`Panel.refresh`)."""
        self._draw_signal()
        self._draw_channels()

    # ------------------------------------------------------------------------------------------------- figures

    def _build(self):
        self._time = bqplot.LinearScale()
        self._values = bqplot.LinearScale()
        self._lines = bqplot.Lines(x=[], y=[], scales={"x": self._time, "y": self._values}, stroke_width=1.2)
        # The relevance of every time step as a band of bwr colours under the lines (A.3.1, Fig. 18).
        self._colour = bqplot.ColorScale(colors=["#0000ff", "#ffffff", "#ff0000"], mid=0.0, min=-1.0, max=1.0)
        self._band = bqplot.Scatter(x=[], y=[], color=[], marker="square", default_size=20, stroke_width=0,
                                    scales={"x": self._time, "y": self._values, "color": self._colour})  # fmt: skip
        self._brush = bqplot.interacts.BrushIntervalSelector(scale=self._time, color="orange")
        self._brush.observe(self._on_brush, names=["selected", "brushing"])
        layout = ipywidgets.Layout(width="560px", height="190px")
        margin = {"top": 10, "bottom": 30, "left": 50, "right": 10}
        self.signal_figure = bqplot.Figure(
            marks=[self._band, self._lines], axes=[bqplot.Axis(scale=self._time, label="time"),
                                       bqplot.Axis(scale=self._values, side="left", label="signal")],
            interaction=self._brush, layout=layout, fig_margin=margin, title="",
        )  # fmt: skip
        self._relevance_scale = bqplot.LinearScale()
        self._relevance = bqplot.Lines(x=[], y=[], scales={"x": self._time, "y": self._relevance_scale},
                                       colors=[RELEVANCE], fill="bottom", fill_opacities=[0.25])  # fmt: skip
        self.relevance_figure = bqplot.Figure(
            marks=[self._relevance], axes=[bqplot.Axis(scale=self._time),
                                           bqplot.Axis(scale=self._relevance_scale, side="left",
                                                       label="R(x)", tick_format=".2g")],
            layout=ipywidgets.Layout(width="560px", height="130px"), fig_margin=margin,
        )  # fmt: skip
        self._caption = ipywidgets.HTML("")
        self._channels_title = ipywidgets.HTML("")
        self._channel_box = ipywidgets.HBox(layout=ipywidgets.Layout(flex_flow="row wrap", max_width="580px"))
        self._channel_figures = []
        self.set_body(self._caption, self.signal_figure, self.relevance_figure, self._channels_title,
                      self._channel_box)  # fmt: skip

    def _channel_figure(self):
        scale = bqplot.LinearScale()
        lines = bqplot.Lines(x=[], y=[], scales={"x": self._time, "y": scale}, colors=[RELEVANCE], fill="bottom",
                             fill_opacities=[0.25])  # fmt: skip
        figure = bqplot.Figure(
            marks=[lines], axes=[bqplot.Axis(scale=self._time, num_ticks=3),
                                 bqplot.Axis(scale=scale, side="left", num_ticks=3, tick_format=".2g")],
            layout=ipywidgets.Layout(width="275px", height="120px"),
            fig_margin={"top": 24, "bottom": 22, "left": 48, "right": 6}, title_style={"font-size": "11px"},
        )  # fmt: skip
        return figure

    # ---------------------------------------------------------------------------------------------- interaction

    def select_region(self, start, end):
        """Set ``state.region`` to the samples ``start <= t < end`` (``None`` to clear; Eq. 11-12)."""
        if start is None:
            self.state.region = None
            return
        length = self._length()
        t = np.arange(length)
        self.state.region = (t >= int(start)) & (t < int(end))

    def _length(self):
        if self.signal is not None:
            return int(self.signal.shape[-1])
        return int(self.session.input(self.state).shape[-1])

    def _on_brush(self, change):
        if self._syncing or self._brush.brushing:
            return
        selected = self._brush.selected
        if selected is None or len(selected) < 2:
            self.select_region(None, None)
            return
        low, high = sorted(float(v) for v in selected)
        start, end = int(np.ceil(low)), int(np.floor(high)) + 1
        self._syncing = True
        try:
            self.select_region(max(0, start), max(start + 1, end))
        finally:
            self._syncing = False

    def _on_state(self, change):
        if change["name"] == "region":
            self._show_region()
        elif change["name"] in ("sample", "custom") and self.state.region is not None:
            self.state.region = None  # a region belongs to its signal; this change draws the channels again
            return
        if change["name"] not in ("layer", "region"):
            self._draw_signal()
        self._draw_channels()

    def _show_region(self):
        """Mirror a region set from Python on the brush."""
        if self._syncing:
            return
        interval = region_interval(self.state.region)
        self._syncing = True
        try:
            self._brush.selected = None if interval is None else [interval[0], interval[1] - 1]
        finally:
            self._syncing = False

    # -------------------------------------------------------------------------------------------- computations

    def _draw_signal(self):
        if (sample := self.sample_source("signal")) is None:
            return
        source, load = sample
        target = self.state.target
        conditions = {name: list(channels) for name, channels in self.state.conditions.items()}
        crp = self.session.crp

        def compute():
            x = _signal(load)
            output = crp.predict(x)
            explained = self.session.explained_class(x, target)
            heatmap = crp.attribute(x, explained, conditions).heatmap
            name = class_names(self.session, int(output.shape[-1]))[explained]
            caption, _ = heatmap_caption(name, conditions, crp.layer_names)
            return np.asarray(self.session.display(x), dtype=np.float32), heatmap.numpy(), caption

        def apply(result):
            self.signal, self.heatmap, self.caption = result
            self._plot_signal()

        key = (id(self.session), "signal-view", source, target, frozen(conditions))
        self.schedule("signal", key, compute, apply)

    def _draw_channels(self):
        if (sample := self.sample_source("channels")) is None:
            return
        source, load = sample
        layer, target, k = self.state.layer, self.state.target, self.top_k
        others = {name: list(channels) for name, channels in self.state.conditions.items() if name != layer}
        selected = list(self.state.conditions.get(layer, []))
        region = None if self.state.region is None else np.asarray(self.state.region, dtype=bool)
        interval = region_interval(region)
        crp = self.session.crp

        def compute():
            x = _signal(load)
            explained = self.session.explained_class(x, target)
            if region is not None:
                ranked = crp.region_relevance(x, layer, torch.from_numpy(region), explained, others)
                relevance, order, share = ranked.relevance, ranked.order, ranked.share_of_region
            else:
                ranked = crp.channel_relevance(x, layer, explained, others)
                relevance, order, share = ranked.relevance, ranked.order, ranked.share
            rank = {int(c): i for i, c in enumerate(order)}
            channels = sorted(selected, key=lambda c: rank.get(c, len(rank))) or order[:k].tolist()
            heatmaps = crp.conditional_heatmaps(x, layer, channels, explained, others)
            shares = [float(share[c]) for c in channels]
            info = {
                "layer": layer,
                "channels": [int(c) for c in channels],
                "relevance": [float(relevance[c]) for c in channels],
                "shares": shares,
                "selected": bool(selected),
                "region": None if interval is None else list(interval),
            }
            return heatmaps.numpy(), info

        def apply(result):
            self.channel_heatmaps, self.channel_info = result
            self._plot_channels()

        key = (id(self.session), "signal-channels", source, target, layer, frozen(others), tuple(selected),
               None if region is None else region.tobytes(), k)  # fmt: skip
        self.schedule("channels", key, compute, apply)

    # -------------------------------------------------------------------------------------------------- drawing

    def _plot_signal(self):
        signal, heatmap = self.signal, self.heatmap
        t = np.arange(signal.shape[-1], dtype=np.float32)
        self._time.min, self._time.max = 0.0, float(max(1, signal.shape[-1] - 1))
        with self._lines.hold_sync():
            self._lines.x, self._lines.y = t, signal
            self._lines.colors = _colours(signal.shape[0])
            self._lines.labels = [f"input {c}" for c in range(signal.shape[0])]
        with self._relevance.hold_sync():
            self._relevance.x, self._relevance.y = t, heatmap
        low, high = float(signal.min()), float(signal.max())
        peak = float(np.abs(heatmap).max()) or 1.0
        with self._band.hold_sync():
            self._band.x, self._band.y = t, np.full_like(t, low - 0.08 * (high - low or 1.0))
            self._band.color = heatmap / peak
        self._caption.value = f"<b>{self.caption}</b>"

    def _plot_channels(self):
        heatmaps, info = self.channel_heatmaps, self.channel_info
        while len(self._channel_figures) < len(heatmaps):
            self._channel_figures.append(self._channel_figure())
        t = np.arange(heatmaps.shape[-1], dtype=np.float32)
        for figure, heatmap, channel, share in zip(self._channel_figures, heatmaps, info["channels"], info["shares"]):
            lines = figure.marks[0]
            with lines.hold_sync():
                lines.x, lines.y = t, heatmap
            figure.title = f"{info['layer']} ch {channel} ({100 * share:.0f} %)"
        self._channel_box.children = tuple(self._channel_figures[: len(heatmaps)])
        where = "selected" if info["selected"] else f"top {len(info['channels'])}"
        region = info["region"]
        scope = f", ranked inside t = {region[0]}..{region[1] - 1}" if region else ""
        self._channels_title.value = f"Heatmap per channel: the {where} channels of {info['layer']}{scope}"
