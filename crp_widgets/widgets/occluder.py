"""Global class importance by attacking (AfI, Wu et al. 2020, CVPR, Sec. 3) next to class-wide CRP channel relevance.

For a class (the explained one by default) the view learns the class's global feature occluder on its images from
the dataset (Eq. 4-5), on the session's worker with a progress bar, and shows: the occluder (the perturbation as an
image and its channel sum as a ``bwr`` map), an occluded example, the attack success rate, the class meta-detector
(Eq. 9) on the current sample, and a bqplot scatter of every channel of ``state.layer``: AfI channel importance
(Eq. 8) against the class-wide mean CRP relevance (from the store's class statistics when it has them, else over
the same images), with their Spearman rank correlation and top-k overlap. Clicking a channel sets
``state.channel``. Computed by :mod:`crp_widgets.engine.occluder`.
"""

import html

import bqplot
import ipywidgets
import numpy as np
import torch

from ..engine import CRPError
from ..engine.occluder import (
    channel_importance,
    class_relevance,
    compare_with_crp,
    learn_occluder,
    meta_detector,
)
from ..render.images import encode_png, heatmap_to_rgb, image_to_uint8
from .channels import default_layer
from .charts import about
from .component import Panel
from .flipping import class_members
from .sample import class_names
from .worker import current_task

__all__ = ["GlobalImportanceView"]

EXPLAINED = -1  # the class dropdown's "explained class" entry
BOTH, AFI, CRP_ONLY, OTHER, FOCUS = "#6a1b9a", "#d62728", "#1f77b4", "#b0bec5", "#000000"
SIZE = 128  # pixels of the pictures


def _picture(pixels):
    """PNG bytes of ``uint8 [h, w, 3]`` pixels, scaled up (nearest) to about ``SIZE`` pixels."""
    factor = max(1, SIZE // max(pixels.shape[:2]))
    return encode_png(np.kron(pixels, np.ones((factor, factor, 1), dtype=np.uint8)))


def _image():
    return ipywidgets.Image(format="png", layout=ipywidgets.Layout(width=f"{SIZE}px", height=f"{SIZE}px"))


class GlobalImportanceView(Panel):
    """AfI global class importance (Wu et al. 2020, Eq. 4-9) compared with the class-wide CRP channel relevance.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend (needs a dataset: the occluder is learned on the class's samples).
    state : ExplorerState, optional
        The shared state: ``layer`` (the channels compared), ``sample``/``target`` (the explained class, the default
        class), ``channel`` (set by clicking a channel).
    steps : int
        Adam steps of the occluder (Eq. 5) at first; the learning stops earlier once every image is flipped.
    samples : int
        How many samples of the class to learn on at first.
    l1 : float
        lambda of Eq. 5 at first.
    k : int
        Size of the top-k sets compared.
    **kwargs
        Passed to :class:`Panel`.

    Attributes
    ----------
    cls : ipywidgets.Dropdown
        The attacked class (``-1``: the explained class of the current sample).
    learn : ipywidgets.Button
        Learns the occluder (on the worker) and computes the comparison.
    progress : ipywidgets.IntProgress
        Steps done.
    scatter : bqplot.Scatter
        One point per channel: x = class-wide CRP relevance, y = AfI channel importance; click to select.
    summary : ipywidgets.HTML
        Attack success rate and agreement numbers.
    occluder : Occluder or None
        The occluder shown.
    agreement : Agreement or None
        Spearman and top-k overlap of the layer shown.
    """

    def __init__(self, session, state=None, *, steps=30, samples=32, l1=100.0, k=10, **kwargs):
        super().__init__(session, state, **kwargs)
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self.occluder, self.agreement, self.images, self.importance, self.relevance = None, None, None, None, None
        self.shown_layer, self._channels, self._quiet, self._run = None, [], False, 0
        self._learned, self._source = {}, ""
        names = self._names()
        self.cls = ipywidgets.Dropdown(
            options=[("explained class", EXPLAINED)] + [(name, i) for i, name in enumerate(names)],
            value=EXPLAINED, description="class", layout=ipywidgets.Layout(width="230px"),
        )  # fmt: skip
        self.steps = ipywidgets.BoundedIntText(int(steps), min=1, max=10000, description="steps",
                                               layout=ipywidgets.Layout(width="150px"))  # fmt: skip
        self.samples = ipywidgets.BoundedIntText(int(samples), min=1, max=4096, description="samples",
                                                 layout=ipywidgets.Layout(width="160px"))  # fmt: skip
        self.l1 = ipywidgets.BoundedFloatText(float(l1), min=0.0, max=1e9, description="sparsity",
                                              layout=ipywidgets.Layout(width="170px"))  # fmt: skip
        self.k = ipywidgets.BoundedIntText(int(k), min=1, max=4096, description="compare top",
                                           layout=ipywidgets.Layout(width="140px"))  # fmt: skip
        self.learn = ipywidgets.Button(description="learn occluder", button_style="primary", icon="bolt")
        self.learn.add_class("crpw-occluder-learn")
        self.progress = ipywidgets.IntProgress(value=0, min=0, max=int(steps), description="",
                                               layout=ipywidgets.Layout(width="200px"))  # fmt: skip
        self.progress.add_class("crpw-occluder-progress")
        self.summary = ipywidgets.HTML(about(
            "Learn the smallest change of the images that makes the model stop predicting the class.",
            "The global feature occluder of attacking for interpretability (AfI), Wu et al. 2020, Eq. 4-5; "
            "'sparsity' is the weight lambda of its l1 term",
            bold=False,
        ))  # fmt: skip
        self.summary.add_class("crpw-occluder-summary")
        self.pictures = {name: _image() for name in ("delta", "delta_map", "occluded", "meta")}
        captions = {"delta": "the occluder (the change)", "delta_map": "the change, summed over colours",
                    "occluded": "a sample, changed",
                    "meta": "where the class's key channels respond, this sample"}  # fmt: skip
        gallery = ipywidgets.HBox([
            ipywidgets.VBox([self.pictures[name], ipywidgets.HTML(f"<small>{html.escape(text)}</small>")])
            for name, text in captions.items()
        ])  # fmt: skip
        gallery.add_class("crpw-occluder-pictures")
        self._build_figure()
        self.add_class("crpw-occluder")
        self.set_body(
            ipywidgets.HBox([self.cls, self.steps, self.samples, self.l1, self.k],
                            layout=ipywidgets.Layout(flex_flow="row wrap")),
            self.learn,
            self.summary,
            ipywidgets.HBox([gallery, self.figure], layout=ipywidgets.Layout(flex_flow="row wrap")),
        )  # fmt: skip
        self.learn.on_click(lambda _: self.learn_occluder())
        self.scatter.observe(self._on_point, names=["selected"])
        self.k.observe(lambda _: self._show_comparison(), names=["value"])
        self._follow = (lambda _: self._rescore(), lambda _: self._highlight(), lambda _: self._meta())
        self.state.observe(self._follow[0], names=["layer"])
        self.state.observe(self._follow[1], names=["channel"])
        self.state.observe(self._follow[2], names=["sample", "custom"])

    def refresh(self):
        """Scores and meta-detector of the learned occluder for the current state (see :meth:`Panel.refresh`)."""
        self._rescore()
        self._meta()

    def _names(self, outputs=None):
        if outputs is not None:
            return class_names(self.session, outputs)
        try:
            return self.session.classes
        except Exception:  # no input to count the outputs with: numbers come with the first occluder
            return []

    def _build_figure(self):
        x, y = bqplot.LinearScale(), bqplot.LinearScale(min=0.0, max=1.05)
        self.scatter = bqplot.Scatter(
            x=[], y=[], scales={"x": x, "y": y}, colors=[OTHER], default_size=48, stroke="white",
            interactions={"click": "select"}, selected_style={"stroke": "black", "stroke-width": 2},
            unselected_style={"opacity": 0.8},
            tooltip=bqplot.Tooltip(fields=["name", "x", "y"], labels=["channel", "CRP", "AfI"],
                                   formats=["", ".3g", ".3f"]),
        )  # fmt: skip
        self.figure = bqplot.Figure(
            marks=[self.scatter],
            axes=[bqplot.Axis(scale=x, label="class-wide CRP relevance (mean)"),
                  bqplot.Axis(scale=y, side="left", label="importance for the occluder")],
            title="channels: AfI vs CRP",
            fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 12}, padding_x=0.05, padding_y=0.05,
            layout=ipywidgets.Layout(width="440px", height="340px"),
        )  # fmt: skip
        self.figure.add_class("crpw-occluder-figure")

    def unlink(self):
        """Stop following the shared state."""
        self.state.unobserve(self._follow[0], names=["layer"])
        self.state.unobserve(self._follow[1], names=["channel"])
        self.state.unobserve(self._follow[2], names=["sample", "custom"])
        super().unlink()

    # --------------------------------------------------------------------------------------------------- compute

    def learn_occluder(self):
        """Learn the occluder of the chosen class on the worker, then compare on ``state.layer``."""
        if (sample := self.sample_source("occluder")) is None:
            return
        _, load = sample
        chosen, layer, target = int(self.cls.value), self.state.layer, self.state.target
        steps, count, l1 = int(self.steps.value), int(self.samples.value), float(self.l1.value)
        self._run += 1
        self.progress.max, self.progress.value = steps, 0

        def compute():
            return self._learn(load, chosen, target, layer, steps, count, l1)

        key = (id(self.session), "occluder", self._run)  # a new occluder each click: nothing to reuse
        self.analyse("occluder", key, compute, self._apply, "learning the occluder", asked=True)

    def _learn(self, load, chosen, target, layer, steps, count, l1):
        session, crp = self.session, self.session.crp
        if session.dataset is None:
            raise CRPError("the occluder is learned on samples of the class: this session has no dataset")
        x, _ = load()
        cls = session.explained_class(x, target) if chosen == EXPLAINED else chosen
        members = class_members(session.dataset, cls, count, instead="choose a class that the dataset has")
        images = torch.stack([session.item(i)[0] for i in members])

        task = current_task()

        def progress(step, total, loss):
            self.progress.value = step
            task.step(step, total)

        occluder = learn_occluder(crp, images, cls, steps=steps, l1=l1, seed=0, callback=progress)
        self.progress.value = steps
        rate = occluder.success_rate  # attack_success_rate on these images (NaN: none is classified as the class)
        logits = crp.evaluate(images)[0]
        predicted = int((logits.argmax(dim=-1) == cls).sum())
        result = {"occluder": occluder, "images": images, "rate": rate, "predicted": predicted,
                  "outputs": int(logits.shape[-1])}  # fmt: skip
        result.update(self._scores(occluder, images, cls, layer))
        result["meta"] = self._meta_map(x, layer, result["importance"])
        return result

    def _scores(self, occluder, images, cls, layer):
        crp = self.session.crp
        importance = channel_importance(crp, images, occluder, layer)
        store, relevance, source = self.session.current_store(), None, f"{len(images)} samples of the class"
        if store is not None and layer in store.layers:
            column = store.class_relevance(layer)[:, cls]
            if bool(torch.isfinite(column).all()):
                relevance, source = column, "the store's class statistics"
        if relevance is None:
            relevance = class_relevance(crp, images, layer, cls)
        return {"layer": layer, "importance": importance, "relevance": relevance, "source": source}

    def _meta_map(self, x, layer, importance):
        response = meta_detector(self.session.crp, x, layer, importance)[0]
        return response if response.ndim == 2 else None

    def _rescore(self):
        """Recompute the scores for a new ``state.layer`` with the occluder shown (no new learning)."""
        if self.occluder is None or self.state.layer == self.shown_layer:
            return
        occluder, images, layer = self.occluder, self.images, self.state.layer
        if (sample := self.sample_source("occluder")) is None:
            return
        source, load = sample

        def compute():
            result = self._scores(occluder, images, occluder.cls, layer)
            result["meta"] = self._meta_map(load()[0], layer, result["importance"])
            return result

        key = (id(self.session), "occluder-scores", id(occluder), layer, source)
        self.analyse("occluder", key, compute, self._apply_scores, f"channel importance on {layer}")

    def _meta(self):
        if self.occluder is None or self.importance is None:
            return
        layer, importance = self.shown_layer, self.importance
        if (sample := self.sample_source("meta")) is None:
            return
        source, load = sample
        key = (id(self.session), "occluder-meta", id(self.occluder), layer, source)
        self.schedule("meta", key, lambda: self._meta_map(load()[0], layer, importance), self._show_meta)

    # ----------------------------------------------------------------------------------------------------- show

    def _apply(self, result):
        occluder = self.occluder = result["occluder"]
        self.images = result["images"]
        delta = occluder.delta.detach().float().cpu()
        if delta.ndim == 3 and delta.shape[0] == 3:
            peak = float(delta.abs().max()) or 1.0
            self.pictures["delta"].value = _picture(image_to_uint8((0.5 + delta / (2 * peak)).clamp(0, 1)))
            example = self.session.display(occluder.apply(self.images[:1])[0])
            self.pictures["occluded"].value = _picture(image_to_uint8(example))
        if delta.ndim == 3:
            self.pictures["delta_map"].value = _picture(heatmap_to_rgb(delta.sum(dim=0)))
        self._learned = result
        self._apply_scores(result)

    def _apply_scores(self, result):
        self.importance, self.relevance, self.shown_layer = result["importance"], result["relevance"], result["layer"]
        self._source = result["source"]
        channels = list(range(len(self.importance)))
        self._quiet = True
        try:
            with self.scatter.hold_sync():
                self.scatter.selected = None
                self._channels = channels
                self.scatter.x = self.relevance.detach().cpu().double().numpy()
                self.scatter.y = self.importance.detach().cpu().double().numpy()
        finally:
            self._quiet = False
        self._show_meta(result["meta"])
        self._show_comparison()

    def _show_meta(self, response):
        if response is not None:
            self.pictures["meta"].value = _picture(heatmap_to_rgb(response))

    def _show_comparison(self):
        if self.importance is None:
            return
        k = min(int(self.k.value), len(self.importance))
        self.agreement = agreement = compare_with_crp(self.importance, self.relevance, k)
        afi, crp, shared = set(agreement.top_importance), set(agreement.top_relevance), set(agreement.shared)
        with self.scatter.hold_sync():
            self.scatter.colors = [
                BOTH if c in shared else AFI if c in afi else CRP_ONLY if c in crp else OTHER for c in self._channels
            ]
            self.scatter.names = [str(c) if c in afi or c in crp else "" for c in self._channels]  # top-k labelled
        self._highlight()
        result, occluder = self._learned, self.occluder
        names = self._names(result["outputs"])
        name = names[occluder.cls] if occluder.cls < len(names) else str(occluder.cls)
        attacked = result["predicted"]
        rate = "no sample is classified as the class" if np.isnan(result["rate"]) else (
            f"<span class='crpw-occluder-rate'>{result['rate']:.0%}</span> of the {attacked} samples classified as "
            "the class are flipped")  # fmt: skip
        spearman = "n/a" if np.isnan(agreement.spearman) else f"{agreement.spearman:.2f}"
        stop = "all flipped" if occluder.converged else "step limit"
        self.summary.value = (
            f"Class <b>{html.escape(name)}</b>: occluder learned on {len(self.images)} samples in "
            f"{occluder.steps} steps ({stop}), mean |δ| {occluder.norm:.3g}; {rate}.<br>"
            f"<b>{html.escape(self.shown_layer)}</b>: AfI channel importance vs CRP relevance (mean over "
            f"{html.escape(self._source)}): Spearman <span class='crpw-occluder-spearman'>{spearman}</span>, "
            f"top-{k} overlap <span class='crpw-occluder-overlap'>{agreement.overlap:.0%}</span> "
            f"(shared: {', '.join(str(c) for c in agreement.shared) or 'none'}). "
            f"<span style='color:{BOTH}'>●</span> both top-{k}, <span style='color:{AFI}'>●</span> AfI only, "
            f"<span style='color:{CRP_ONLY}'>●</span> CRP only."
        )

    def _on_point(self, change):
        selected = change["new"]
        if self._quiet or selected is None or not len(selected):
            return
        index = int(selected[-1])
        if 0 <= index < len(self._channels) and self.state.layer == self.shown_layer:
            self.state.channel = self._channels[index]

    def _highlight(self):
        channel = self.state.channel
        self._quiet = True
        try:
            inside = channel is not None and 0 <= channel < len(self._channels)
            self.scatter.selected = [int(channel)] if inside and self.state.layer == self.shown_layer else None
        finally:
            self._quiet = False
