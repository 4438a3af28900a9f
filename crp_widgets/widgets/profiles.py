"""Class profiles: which layers and channels each class uses, by CRP and by Integrated Gradients, and ablation.

After Islam & Tushar 2021 (Sec. IV-B, V-C, Fig. 4-6): a class x layer heatmap of the relevance each layer receives on
average (CRP, Eq. 10 of Achtibat et al. 2023, and channel Integrated Gradients, side by side), the per-channel profile
of a chosen class and layer (bars; a click focuses the channel in the linked views), and the accuracy of every class
before and after switching off the top or bottom 1 / 2 / 3 % of the layer's channels by that class's score. The
computations are dataset-wide: they run on the worker's analysis lane in steps of a few samples (a progress bar, a
cancel button, and clicks go first), on ``per_class`` samples of each class.
"""

import functools
import html

import bqplot
import ipywidgets
import numpy as np
import torch

from ..engine import CRPError
from ..engine.profiles import ablation_table, class_profiles
from .charts import about, legend, with_legend
from .component import Panel
from .layers import block_layers
from .worker import current_task

__all__ = ["ClassProfilesView", "ablation_in_steps", "profiles_in_steps"]

METHODS = {"crp": "CRP relevance", "ig": "Integrated Gradients"}
FRACTIONS = (0.01, 0.02, 0.03)
CHUNK = 2  # samples per step of a profile: a click waits for at most one such step


def profiles_in_steps(crp, dataset, layers, method, per_class, steps=16, chunk=CHUNK):
    """:func:`~crp_widgets.engine.profiles.class_profiles` in steps of ``chunk`` samples.

    After every step the running analysis reports its progress, stops when cancelled and lets clicks go first
    (:meth:`~crp_widgets.widgets.worker.Task.step`): a click waits for one step at most. Integrated Gradients passes
    take ``chunk`` rows at most.

    Returns
    -------
    Profiles
    """
    task = current_task()
    task.step(0, 1)
    return class_profiles(crp, dataset, list(layers), method, per_class=per_class, steps=steps, batch_size=chunk,
                          max_batch=chunk, progress=task.step)  # fmt: skip


def ablation_in_steps(crp, dataset, layer, scores, per_class, chunk=CHUNK):
    """:func:`~crp_widgets.engine.profiles.ablation_table` in steps of ``chunk`` samples (see `profiles_in_steps`)."""
    task = current_task()
    task.step(0, 1)
    return ablation_table(crp, dataset, layer, scores, FRACTIONS, ("top", "bottom"), per_class=per_class,
                          batch_size=chunk, progress=task.step)  # fmt: skip


def conv_layers(crp):
    """The profiled layers: the model's blocks (``crp.layer_groups()``), or its convolutional layers if it has none."""
    blocks = block_layers(crp)
    if len(blocks) > 1:
        return blocks
    modules = dict(crp.model.named_modules())
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    found = [name for name in crp.layer_names if isinstance(modules[name], kinds)]
    return found or list(crp.layer_names)


def short_names(layers):
    """Layer names without the dotted prefix they all share (``features.conv1`` -> ``conv1``), for axis labels."""
    parts = [name.split(".") for name in layers]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


def _fill(heatmap, rows, columns, color):
    """Set a GridHeatMap's labels and values together (bqplot validates each against the others)."""
    with heatmap.hold_sync(), heatmap.hold_trait_notifications():
        heatmap.color = color
        heatmap.row = rows
        heatmap.column = columns


class ClassProfilesView(Panel):
    """Class x layer relevance (CRP and IG), a class's channel profile, and class-wise ablation (Islam & Tushar 2021).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; needs a labelled dataset.
    state : ExplorerState, optional
        The shared state: a click on a channel bar sets ``state.layer`` and ``state.channel``.
    per_class : int
        Samples per class for profiles and ablation.
    steps : int
        Riemann steps of Integrated Gradients.
    layers : Sequence[str], optional
        Profiled layers (default: every convolution).
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    profiles : dict[str, Profiles]
        The computed profiles by method (``"crp"``, ``"ig"``).
    ablation : list[Ablation] or None
        The ablation shown: top then bottom, 1 / 2 / 3 %.
    heatmaps : dict[str, bqplot.GridHeatMap]
        The class x layer maps by method (each row divided by its maximum).
    bars : bqplot.Bars
        The chosen class's channel profile on the chosen layer (CRP and IG, mean signed score).
    table : ipywidgets.HTML
        The ablation table.
    """

    def __init__(self, session, state=None, *, per_class=20, steps=16, layers=None, **kwargs):
        super().__init__(session, state, **kwargs)
        crp = self.session.crp
        self.layers = list(layers) if layers is not None else conv_layers(crp)
        self.profiles, self.ablation = {}, None
        self.per_class = ipywidgets.BoundedIntText(int(per_class), min=1, max=100000, description="per class",
                                                   layout=ipywidgets.Layout(width="170px"))  # fmt: skip
        self.steps = ipywidgets.BoundedIntText(int(steps), min=1, max=1024, description="IG steps",
                                               layout=ipywidgets.Layout(width="170px"))  # fmt: skip
        self.compute = ipywidgets.Button(description="compute profiles", button_style="primary", icon="bar-chart")
        self.compute.add_class("crpw-profiles-compute")
        self.cls = ipywidgets.Dropdown(options=[], description="class", layout=ipywidgets.Layout(width="230px"))
        self.layer = ipywidgets.Dropdown(options=self.layers, description="layer",
                                         layout=ipywidgets.Layout(width="260px"))  # fmt: skip
        if self.state.layer in self.layers:
            self.layer.value = self.state.layer
        self.method = ipywidgets.ToggleButtons(options=[(label, m) for m, label in METHODS.items()],
                                               description="ablate by", style={"button_width": "auto"})  # fmt: skip
        self.ablate = ipywidgets.Button(description="ablate", icon="scissors")
        self.ablate.add_class("crpw-profiles-ablate")
        self.summary = ipywidgets.HTML(about(
            "Compute which layers and channels each class uses, by CRP relevance and by Integrated Gradients.",
            "Class profiles after Islam & Tushar 2021, Sec. IV-B, Fig. 4",
            bold=False,
        ))  # fmt: skip
        self.table = ipywidgets.HTML("")
        self.table.add_class("crpw-profiles-table")
        self.heatmaps, figures = {}, []
        for method, label in METHODS.items():
            figure, self.heatmaps[method] = self._heatmap(label)
            figures.append(figure)
        self._bars_figure()
        self.add_class("crpw-profiles")
        self.set_body(
            ipywidgets.HBox([self.per_class, self.steps, self.compute], layout=ipywidgets.Layout(flex_flow="row wrap")),
            self.summary,
            ipywidgets.HBox(figures, layout=ipywidgets.Layout(flex_flow="row wrap")),
            ipywidgets.HBox([self.cls, self.layer], layout=ipywidgets.Layout(flex_flow="row wrap")),
            with_legend(self.figure, self.bars_key),
            ipywidgets.HBox([self.method, self.ablate], layout=ipywidgets.Layout(flex_flow="row wrap")),
            self.table,
        )
        self.compute.on_click(lambda _: self.compute_profiles())
        self.ablate.on_click(lambda _: self.compute_ablation())
        self.cls.observe(lambda _: self._show_channels(), names=["value"])
        self.layer.observe(lambda _: self._show_channels(), names=["value"])
        self.bars.observe(self._on_bar, names=["selected"])

    # ------------------------------------------------------------------------------------------------- figures

    def _heatmap(self, label):
        rows, columns = bqplot.OrdinalScale(), bqplot.OrdinalScale()
        colours = bqplot.ColorScale(scheme="Reds", min=0.0, max=1.0)
        heatmap = bqplot.GridHeatMap(
            color=np.zeros((2, len(self.layers))), scales={"row": rows, "column": columns, "color": colours},
            tooltip=bqplot.Tooltip(fields=["row", "column", "color"], formats=["", "", ".2f"]),
        )  # fmt: skip
        names = self._initial_rows()
        _fill(heatmap, names, short_names(self.layers), np.zeros((len(names), len(self.layers))))
        figure = bqplot.Figure(
            marks=[heatmap],
            axes=[bqplot.Axis(scale=columns, tick_rotate=-35), bqplot.Axis(scale=rows, side="left"),
                  bqplot.ColorAxis(scale=colours, label="share of the strongest layer", num_ticks=3)],
            title=label,
            fig_margin={"top": 40, "bottom": 95, "left": 120, "right": 20},
            layout=ipywidgets.Layout(width="440px", height="400px"),
        )  # fmt: skip
        figure.add_class(f"crpw-profiles-heatmap-{'crp' if label.startswith('CRP') else 'ig'}")
        return figure, heatmap

    def _bars_figure(self):
        x, y = bqplot.LinearScale(), bqplot.LinearScale()
        self._bar_scales = x, y
        self.bars = bqplot.Bars(
            x=[], y=[], scales={"x": x, "y": y}, type="grouped", colors=["#c62828", "#1565c0"],
            labels=list(METHODS.values()), interactions={"click": "select"},
            selected_style={"stroke": "black", "stroke-width": 2},
            tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["channel", "mean score"], formats=["", ".3g"]),
        )  # fmt: skip
        self.figure = bqplot.Figure(
            marks=[self.bars],
            axes=[bqplot.Axis(scale=x, label="channel", tick_format="d"),
                  bqplot.Axis(scale=y, side="left", label="mean score (signed)")],
            title="channel profile",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=ipywidgets.Layout(width="860px", height="280px"),
        )  # fmt: skip
        self.figure.add_class("crpw-profiles-bars")
        self.bars_key = ipywidgets.HTML("")

    # ------------------------------------------------------------------------------------------------- compute

    def compute_profiles(self):
        """Compute the CRP profiles, then the Integrated Gradients ones, on the worker (CRP shows first)."""
        session, layers = self.session, list(self.layers)
        per_class, steps = int(self.per_class.value), int(self.steps.value)
        if session.dataset is None:
            self.settle("crp", CRPError("class profiles need a labelled dataset; this session has none"))
            return
        for method in METHODS:

            def compute(method=method):
                return profiles_in_steps(session.crp, session.dataset, layers, method, per_class, steps=steps)

            key = (id(session), "profiles", method, per_class, steps if method == "ig" else None, tuple(layers))
            self.analyse(method, key, compute, self._apply_profiles, f"{METHODS[method]} profiles", asked=True)

    def compute_ablation(self):
        """Ablate the top / bottom 1, 2, 3 % of the chosen layer's channels by the chosen class's score."""
        method, cls, layer = self.method.value, self.cls.value, self.layer.value
        profiles = self.profiles.get(method)
        if profiles is None or cls is None:
            self.settle("ablation", CRPError(f"compute the {METHODS[method]} profiles first"))
            return
        session, per_class = self.session, int(self.per_class.value)
        scores = profiles.scores(cls, layer)

        def compute():
            return ablation_in_steps(session.crp, session.dataset, layer, scores, per_class)

        key = (id(session), "ablation", method, cls, layer, per_class, profiles.samples[cls][0], len(profiles.layers))
        apply = functools.partial(self._apply_ablation, method=method, cls=cls, layer=layer)
        self.analyse("ablation", key, compute, apply, "ablation", asked=True)

    # ---------------------------------------------------------------------------------------------------- show

    def _initial_rows(self):
        """Row labels before profiles exist: the class names (two rows at least, bqplot squeezes one)."""
        try:
            names = list(self.session.classes)
        except Exception:  # no input to count the outputs with
            names = []
        return names if len(names) > 1 else ["", " "]

    def _names(self, classes):
        names = self.session.classes
        return [names[c] if c < len(names) else str(c) for c in classes]

    def _apply_profiles(self, profiles):
        self.profiles[profiles.method] = profiles
        values = profiles.layer.numpy()
        peak = np.maximum(values.max(axis=1, keepdims=True), 1e-30)
        _fill(self.heatmaps[profiles.method], self._names(profiles.classes), short_names(profiles.layers),
              values / peak)  # fmt: skip
        if not self.cls.options:
            options = list(zip(self._names(profiles.classes), profiles.classes))
            self.cls.options = options
            target = self.state.target
            self.cls.value = target if target in profiles.classes else profiles.classes[0]
        counts = sorted({len(v) for v in profiles.samples.values()})
        samples = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        self.summary.value = about(
            f"Profiles of {len(profiles.classes)} classes over {samples} samples per class: "
            + " and ".join(METHODS[m] for m in self.profiles)
            + ". Each row: how much relevance each layer receives for the class, as a share of its strongest layer. "
            "Click a bar to focus its channel.",
            "A layer's value is the mean over the class's samples of its summed |channel score|; Islam & Tushar "
            "2021, Eq. 3, Fig. 4",
            bold=False,
        )
        self._show_channels()

    def _show_channels(self):
        cls, layer = self.cls.value, self.layer.value
        shown = [m for m in METHODS if m in self.profiles and layer in self.profiles[m].layers]
        if cls is None or not shown:
            return
        series = [self.profiles[m].scores(cls, layer, signed=True).numpy() for m in METHODS if m in shown]
        channels = len(series[0])
        values = np.stack(series)
        low, high = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
        _, scale = self._bar_scales
        scale.min, scale.max = low - 0.05 * (high - low), high + 0.05 * (high - low) + 1e-12
        horizontal, _ = self._bar_scales
        horizontal.min, horizontal.max = -0.5, channels - 0.5
        with self.bars.hold_sync():
            self.bars.selected = None
            self.bars.x = np.arange(channels)
            self.bars.y = values
            self.bars.colors = ["#c62828", "#1565c0"][: len(series)] if len(shown) == 2 else (
                ["#c62828"] if shown == ["crp"] else ["#1565c0"])  # fmt: skip
            self.bars.labels = [METHODS[m] for m in shown]
        self.bars_key.value = legend(self.bars.labels, self.bars.colors)
        self.figure.title = f"channel profile: class {self._names([cls])[0]}, layer {layer}"

    def _on_bar(self, change):
        selected = change["new"]
        if selected is None or not len(selected):
            return
        with self.state.hold_trait_notifications():
            self.state.layer = self.layer.value
            self.state.channel = int(selected[-1])

    def _apply_ablation(self, table, method, cls, layer):
        self.ablation = table
        before = table[0].before.numpy()
        names = self._names(table[0].classes)
        head = "".join(f"<th>{w} {f:.0%}<br><small>{len(r.channels[layer])} ch</small></th>"
                       for w, f, r in ((r.which, r.fraction, r) for r in table))  # fmt: skip
        rows = []
        for i, name in enumerate(names):
            style = " style='font-weight:600'" if table[0].classes[i] == cls else ""
            cells = "".join(
                f"<td style='color:{'#c62828' if r.after[i] < before[i] - 1e-9 else 'inherit'}'>{r.after[i]:.0%}</td>"
                for r in table
            )
            rows.append(f"<tr{style}><td>{html.escape(name)}</td><td>{before[i]:.0%}</td>{cells}</tr>")
        self.table.value = (
            f"<div>Accuracy per class before and after switching off channels of <b>{html.escape(layer)}</b> "
            f"ranked by |{METHODS[method]}| for class <b>{html.escape(self._names([cls])[0])}</b> "
            "(as in Islam &amp; Tushar 2021, Sec. V-C).</div>"
            f"<table class='crpw-profiles-ablation'><tr><th>class</th><th>before</th>{head}</tr>{''.join(rows)}</table>"
        )
