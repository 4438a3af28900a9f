"""How many concepts carry a decision: relevance distribution and filter flipping (Achtibat et al. 2023, Sec. 4.1).

For the layer of the shared state, three bqplot figures as in Fig. 19: the channels ranked by their share of the
positive relevance (bars for the current sample; click one to select the channel everywhere), the cumulative
relevance with the number of channels that hold 85 / 90 / 95 % of it, and the explained output relative to its
initial value while the channels are switched off most relevant first, least relevant first and in random order.
The curves are those of the current sample, or the mean and standard deviation over samples of its class from the
dataset (confident predictions only, softmax above 0.5, as in the paper). Computed by
:mod:`crp_widgets.engine.flipping` on the session's worker.
"""

import html

import bqplot
import ipywidgets
import numpy as np
import torch

from ..engine import CRPError
from ..engine.flipping import QUANTILES, filter_flipping, flip_steps, relevance_distribution
from .channels import default_layer
from .charts import figure
from .component import Panel
from .sample import class_names
from .worker import current_task

__all__ = ["DecisionView", "class_members"]

SUPPORT, CONTRADICT = "#d62728", "#1f77b4"  # the paper's red (supports) and blue (contradicts)
NEUTRAL = "#78909c"  # lines and labels that read in the light and the dark theme
ORDER_COLOURS = {"most": "#d62728", "least": "#1f77b4", "random": "#7f7f7f"}
ORDER_LABELS = {"most": "most relevant first", "least": "least relevant first", "random": "random order"}
SCOPES = (("this sample", "sample"), ("samples of its class", "class"))


def class_members(dataset, cls, n, scan=4096, instead=""):
    """The first ``n`` indices of ``dataset`` labelled ``cls``.

    Labels come from ``dataset.labels`` or ``dataset.targets`` (torchvision), the second tensor of a
    ``TensorDataset``, or else from reading the first ``scan`` items. ``instead`` says what the user can do when
    the class has no sample (e.g. "explain 'this sample' instead").

    Raises
    ------
    CRPError
        If no sample of the class is found.
    """
    labels = None
    for name in ("labels", "targets"):
        if getattr(dataset, name, None) is not None:
            labels = getattr(dataset, name)
            break
    if labels is None and isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) > 1:
        labels = dataset.tensors[1]
    if labels is not None:
        found = torch.nonzero(torch.as_tensor(labels).flatten() == int(cls)).flatten()[: int(n)].tolist()
    else:
        found = []
        for index in range(min(len(dataset), int(scan))):
            item = dataset[index]
            if isinstance(item, (tuple, list)) and len(item) > 1 and int(item[1]) == int(cls):
                found.append(index)
                if len(found) == n:
                    break
    if not found:
        raise CRPError(f"the dataset has no sample labelled {cls}" + (f"; {instead}" if instead else ""))
    return found


def _by_order(flip):
    """``flip(order)`` for each order, most relevant first, with a step of the analysis between them."""
    curves, task = {}, current_task()
    for done, order in enumerate(ORDER_COLOURS):
        task.step(done, len(ORDER_COLOURS))
        curves.update(flip(order))
    return curves


def _percent(q):
    return f"{round(q * 100)} %"


class DecisionView(Panel):
    """How many channels carry the decision for the current sample and layer (Sec. 4.1, Fig. 19, A.16).

    Follows ``state.sample``/``custom``, ``target`` (or the prediction) and ``layer``. Clicking a bar of the
    distribution sets ``state.channel`` and selects the channel (``state.select(layer, [channel])``); the bar of
    ``state.channel`` is highlighted.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend.
    state : ExplorerState, optional
        The shared state.
    steps : int
        About how many flipping steps (:func:`~crp_widgets.engine.flipping.flip_steps`; every channel count for
        layers with fewer channels).
    repeats : int
        Random orders for one sample (their spread is the band of the random curve).
    samples : int
        How many samples of the class the "samples of its class" scope uses at first.
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    scope : ipywidgets.ToggleButtons
        ``"sample"`` (the current sample) or ``"class"`` (samples of the explained class from the dataset).
    count : ipywidgets.BoundedIntText
        How many samples of the class (the first ones of the dataset).
    confident : ipywidgets.Checkbox
        Keep only the samples predicted with a probability above 0.5 for the class (as the paper does).
    bars : bqplot.Bars
        The current sample's channels (x: channel numbers, in ranked order) and their share of its positive
        relevance (red supports, blue contradicts); click to select.
    mean_shares : bqplot.Lines
        The ranked shares averaged over the class's samples (class scope).
    cumulative, cumulative_band : bqplot.Lines
        The (mean) cumulative positive relevance against the number of channels, and its standard deviation.
    markers, marker_labels : bqplot.Scatter, bqplot.Label
        The channel counts for 85 / 90 / 95 %.
    curves, bands : dict[str, bqplot.Lines]
        Per order, the mean relative output against the channels switched off, and mean +- std.
    summary : ipywidgets.HTML
        The counts in words.
    selection : ipywidgets.HTML
        The channel in focus (``state.channel``): its rank and share.
    distribution : RelevanceDistribution or None
        The distribution shown (of the current sample, or of the class's samples).
    flipping : dict[str, FlippingCurve]
        The curves shown, by order.
    """

    def __init__(self, session, state=None, *, steps=48, repeats=8, samples=8, **kwargs):
        super().__init__(session, state, **kwargs)
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self.steps, self.repeats = int(steps), int(repeats)
        self.distribution, self.flipping, self._channels, self.distribution_layer = None, {}, [], None
        self._quiet = False
        self.scope = ipywidgets.ToggleButtons(options=SCOPES, value="sample", style={"button_width": "150px"})
        self.scope.add_class("crpw-decision-scope")
        self.count = ipywidgets.BoundedIntText(int(samples), min=2, max=256, description="samples",
                                               layout=ipywidgets.Layout(width="160px"))  # fmt: skip
        self.count.add_class("crpw-decision-count")
        self.confident = ipywidgets.Checkbox(True, description="confident only (p > 0.5)", indent=False)
        self.confident.add_class("crpw-decision-confident")
        self.summary = ipywidgets.HTML("")
        self.summary.add_class("crpw-decision-summary")
        key = " ".join(
            f"<span style='color: {ORDER_COLOURS[o]}'>\N{EM DASH} {ORDER_LABELS[o]}</span>" for o in ORDER_COLOURS
        )
        self.key = ipywidgets.HTML(
            f"Switching channels off: {key} (mean; band: standard deviation). Relevance per channel: bars for this "
            "sample (red supports, blue contradicts), black line: the mean over the class's samples."
        )
        self.key.add_class("crpw-decision-key")
        self.selection = ipywidgets.HTML("")
        self.selection.add_class("crpw-decision-selection")
        self._build_figures()
        self.add_class("crpw-decision")
        self.set_body(
            ipywidgets.HBox([self.scope, self.count, self.confident]),
            self.summary,
            self.key,
            ipywidgets.HBox([self.bar_figure, self.cumulative_figure, self.flip_figure],
                            layout=ipywidgets.Layout(flex_flow="row wrap")),
            self.selection,
        )  # fmt: skip
        self.bars.observe(self._on_bar, names=["selected"])
        self.scope.observe(lambda _: self._compute(), names=["value"])
        for control in (self.count, self.confident):
            control.observe(lambda _: self._compute() if self.scope.value == "class" else None, names=["value"])
        self._follow = (lambda _: self._compute(), lambda _: self._highlight())
        self.state.observe(self._follow[0], names=["sample", "custom", "target", "layer"])
        self.state.observe(self._follow[1], names=["channel"])
        self.refresh()

    def refresh(self):
        """Distribution and flipping curves for the current state (see :meth:`Panel.refresh`)."""
        self._compute()

    # ---------------------------------------------------------------------------------------------------- layout

    def _build_figures(self):
        x, y = bqplot.OrdinalScale(), bqplot.LinearScale()
        sign = bqplot.ColorScale(min=-1, max=1, colors=[CONTRADICT, SUPPORT])
        self.bars = bqplot.Bars(
            x=[], y=[], color=[], scales={"x": x, "y": y, "color": sign}, padding=0.1,
            interactions={"click": "select"}, selected_style={"stroke": "black", "stroke-width": 2},
            unselected_style={"opacity": 0.6},
        )  # fmt: skip
        self.mean_shares = bqplot.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#000"], labels=["class mean"])
        # one bar per channel: too many for tick labels; the selected channel is named under the figures
        self.bar_axis = bqplot.Axis(
            scale=x, label="channels by relevance (click one)", grid_lines="none", tick_style={"display": "none"}
        )
        self.bar_figure = figure(
            [self.bars, self.mean_shares],
            [self.bar_axis, bqplot.Axis(scale=y, side="left", label="share of positive relevance", tick_format=".0%")],
            "relevance per channel",
            "crpw-decision-bars",
            width=360,
        )
        cx, cy = bqplot.LinearScale(min=0), bqplot.LinearScale(min=0.0, max=1.05)
        self.cumulative_band = bqplot.Lines(
            x=[], y=[], scales={"x": cx, "y": cy}, fill="between", colors=["#90a4ae"], fill_colors=["#90a4ae"],
            fill_opacities=[0.3], stroke_width=0,
        )  # fmt: skip
        self.cumulative = bqplot.Lines(x=[], y=[], scales={"x": cx, "y": cy}, colors=[NEUTRAL])
        self.markers = bqplot.Scatter(x=[], y=[], scales={"x": cx, "y": cy}, colors=[SUPPORT], default_size=40)
        self.marker_labels = bqplot.Label(
            x=[], y=[], text=[], scales={"x": cx, "y": cy}, font_weight="normal", default_size=13,
            colors=[NEUTRAL],
        )  # fmt: skip
        self.cumulative_figure = figure(
            [self.cumulative_band, self.cumulative, self.markers, self.marker_labels],
            [bqplot.Axis(scale=cx, label="channels"),
             bqplot.Axis(scale=cy, side="left", label="cumulative relevance", tick_format=".0%")],
            "cumulative relevance",
            "crpw-decision-cumulative",
            width=360,
        )  # fmt: skip
        fx, fy = bqplot.LinearScale(min=0), bqplot.LinearScale()
        self.bands, self.curves = {}, {}
        for order, colour in ORDER_COLOURS.items():
            self.bands[order] = bqplot.Lines(
                x=[], y=[], scales={"x": fx, "y": fy}, fill="between", colors=[colour], fill_colors=[colour],
                fill_opacities=[0.2], stroke_width=0,
            )  # fmt: skip
            self.curves[order] = bqplot.Lines(x=[], y=[], scales={"x": fx, "y": fy}, colors=[colour])
        self.flip_figure = figure(
            [*self.bands.values(), *self.curves.values()],
            [bqplot.Axis(scale=fx, label="channels switched off"),
             bqplot.Axis(scale=fy, side="left", label="output / initial output", tick_format=".0%")],
            "switching channels off",
            "crpw-decision-flipping",
            width=420,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------------- reactions

    def _on_bar(self, change):
        selected = change["new"]
        if self._quiet or selected is None or not len(selected):
            return
        index = int(selected[-1])
        if not 0 <= index < len(self._channels):
            return
        channel, layer = self._channels[index], self.distribution_layer
        with self.state.hold_trait_notifications():
            if self.state.layer == layer:
                self.state.channel = channel
                self.state.select(layer, [channel])

    def select(self, channel):
        """Select ``channel`` of the layer shown: ``state.channel`` and ``state.select(layer, [channel])``."""
        if channel not in self._channels:
            raise CRPError(f"channel {channel!r} is not shown: the layer has channels 0 to {len(self._channels) - 1}")
        self.bars.selected = [self._channels.index(int(channel))]

    def _highlight(self):
        channel = self.state.channel
        self._quiet = True
        try:
            if channel is not None and channel in self._channels:
                rank = self._channels.index(int(channel))
                self.bars.selected = [rank]
                share = float(self.bars.y[rank])
                self.selection.value = (
                    f"channel <b>{channel}</b> of {html.escape(str(self.distribution_layer))}: rank {rank + 1}, "
                    f"{share:.1%} of this sample's positive relevance"
                )
            else:
                self.bars.selected = None
                self.selection.value = ""
        finally:
            self._quiet = False

    def unlink(self):
        """Stop following the shared state."""
        self.state.unobserve(self._follow[0], names=["sample", "custom", "target", "layer"])
        self.state.unobserve(self._follow[1], names=["channel"])
        super().unlink()

    # --------------------------------------------------------------------------------------------------- compute

    def _compute(self):
        if (sample := self.sample_source("decision")) is None:
            return
        source, load = sample
        layer, target, scope = self.state.layer, self.state.target, self.scope.value
        count, confident = (int(self.count.value), self.confident.value) if scope == "class" else (None, None)
        steps, repeats = self.steps, self.repeats
        key = (id(self.session), "decision", source, layer, target, scope, count, confident, steps, repeats)
        self.count.disabled = self.confident.disabled = scope != "class"

        def compute():
            return self._decision(load, layer, target, scope, count, confident, steps, repeats)

        self.analyse("decision", key, compute, self._apply, f"switching channels off, for {self.describe_request()}")

    def _decision(self, load, layer, target, scope, count, confident, steps, repeats):
        crp = self.session.crp
        x, _ = load()
        explained = self.session.explained_class(x, target)
        own = relevance_distribution(crp, x, layer, target=explained)
        counts = flip_steps(own.channels, steps)
        outputs = int(crp.predict(x).shape[-1])
        result = {"layer": layer, "target": explained, "own": own, "scope": scope, "asked": 1, "outputs": outputs}
        if scope == "sample":
            result["distribution"] = own
            result["flipping"] = _by_order(lambda order: filter_flipping(
                crp, x, layer, explained, order=[order], steps=counts, repeats=repeats
            ))  # fmt: skip
            return result
        if self.session.dataset is None:
            raise CRPError("this session has no dataset: 'samples of its class' needs one; explain 'this sample'")
        members = class_members(self.session.dataset, explained, count, instead="explain 'this sample' instead")
        batch = torch.stack([self.session.item(i)[0] for i in members])
        result["asked"], result["confident"] = len(members), confident
        try:
            result["flipping"] = _by_order(lambda order: filter_flipping(
                crp, batch, layer, explained, order=[order], steps=counts, min_probability=0.5 if confident else None,
            ))  # fmt: skip
        except CRPError as error:
            if not confident:
                raise
            raise CRPError(f"{error}. Untick 'confident only' to use every sample of the class.") from None
        kept = torch.unique(result["flipping"]["most"].samples)
        result["distribution"] = relevance_distribution(crp, batch[kept], layer, target=explained)
        return result

    def _apply(self, result):
        own, dist, flipping = result["own"], result["distribution"], result["flipping"]
        self.distribution, self.flipping = dist, flipping
        self.distribution_layer = result["layer"]
        channels = [int(c) for c in own.order[0]]
        ranked = own.ranked[0].numpy()
        self._quiet = True
        try:
            with self.bars.hold_sync():
                self.bars.selected = None
                self._channels = channels
                self.bars.x = [str(c) for c in channels]
                self.bars.y = ranked
                self.bars.color = np.sign(ranked)
        finally:
            self._quiet = False
        self._highlight()
        with self.mean_shares.hold_sync():
            if result["scope"] == "class":
                self.mean_shares.x, self.mean_shares.y = [str(c) for c in channels], dist.shares.numpy()
            else:
                self.mean_shares.x, self.mean_shares.y = [], []
        ranks = np.arange(1, dist.channels + 1)
        mean, std = dist.cumulative.numpy(), dist.cumulative_std.numpy()
        self.cumulative.x, self.cumulative.y = ranks, mean
        self.cumulative_band.x, self.cumulative_band.y = ranks, np.stack([mean - std, mean + std])
        with self.markers.hold_sync():
            self.markers.x = [dist.counts[q] for q in QUANTILES]
            self.markers.y = [float(mean[dist.counts[q] - 1]) for q in QUANTILES]
        with self.marker_labels.hold_sync():  # in the empty lower right, one line per marker
            self.marker_labels.x = [dist.channels * 0.4] * len(QUANTILES)
            self.marker_labels.y = [0.5 - 0.1 * i for i in range(len(QUANTILES))]
            self.marker_labels.text = [f"{_percent(q)}: {dist.counts[q]} channels" for q in QUANTILES]
        for order, curve in flipping.items():
            steps, mean, std = curve.steps.numpy(), curve.mean.numpy(), curve.std.numpy()
            with self.curves[order].hold_sync():
                self.curves[order].x, self.curves[order].y = steps, mean
            with self.bands[order].hold_sync():
                self.bands[order].x, self.bands[order].y = steps, np.stack([mean - std, mean + std])
        self.summary.value = self._describe(result)

    def _describe(self, result):
        dist, flipping, layer = result["distribution"], result["flipping"], result["layer"]
        names = class_names(self.session, result["outputs"])
        name = names[result["target"]] if 0 <= result["target"] < len(names) else str(result["target"])
        counts = " / ".join(str(dist.counts[q]) for q in QUANTILES)
        quantiles = " / ".join(_percent(q) for q in QUANTILES)

        def drops(order):
            values = [flipping[order].drops[q] for q in QUANTILES]
            return " / ".join("never" if v is None else str(v) for v in values)

        if result["scope"] == "class":
            kept = len(torch.unique(flipping["most"].samples))
            which = " predicted with p &gt; 0.5" if result["confident"] else ""
            who = f"mean of the {kept}{which} of {result['asked']} samples of class <b>{html.escape(name)}</b>"
        else:
            who = f"this sample, explaining <b>{html.escape(name)}</b>"
        return (
            f"<b>{html.escape(layer)}</b> ({dist.channels} channels), {who}: "
            f"<span class='crpw-decision-counts'>{counts}</span> channels hold {quantiles} of the positive relevance; "
            f"the output falls by {quantiles} after switching off <span class='crpw-decision-drops'>{drops('most')}"
            f"</span> of the most relevant channels ({drops('least')} of the least relevant)."
        )
