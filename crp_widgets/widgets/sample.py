"""Sample and target: the explained input and class, and its class-conditional heatmap (Achtibat et al. 2023, Fig. 2).

The dataset is shown as a paged grid of thumbnails with label and prediction; a page is computed off the comm
thread when it is shown. The heatmap explains the chosen class (the prediction by default) for the whole model:
relevance starts at that output only (Sec. 2.2, ``R(x|y)``), without conditions on hidden layers.
"""

import math

import numpy as np
import torch
import traitlets
from PIL import Image

from ..render.images import image_to_uint8
from ..render.signals import plot_signal
from .component import STATIC, Component
from .traits import PNG, Array, PNGList

__all__ = ["SampleView", "class_names", "thumbnail"]

THUMBNAIL = 64
SIGNAL_SIZE = (320, 160)


def thumbnail(image, size=THUMBNAIL):
    """An RGB image scaled down (never up) so that its longer side is at most ``size`` pixels.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        ``[3, H, W]`` or ``[H, W, 3]``, float in [0, 1] or ``uint8``; a 1-D signal ``[C, L]`` becomes a line plot.
    size : int
        The longest side of the result.

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``[h, w, 3]``.
    """
    if np.ndim(image) == 2:  # a signal [C, L] (Sec. 3.5)
        return plot_signal(image, size=(size, size * 3 // 4))
    picture = Image.fromarray(image_to_uint8(image))
    picture.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture)


def class_names(session, outputs):
    """The session's class names, or numbers when it cannot tell them (no dataset and no names given).

    Parameters
    ----------
    session : Session
        The session.
    outputs : int
        The number of model outputs.

    Returns
    -------
    list[str]
    """
    return session.class_names(outputs)


def predictions(crp, inputs):
    """Predicted classes of a page of samples: one plain forward pass (``crp.evaluate``; nothing to explain yet).

    Parameters
    ----------
    crp : CRP
        The model's CRP; the model is left as found.
    inputs : list[torch.Tensor]
        Unbatched inputs; stacked into one batch when their shapes agree.

    Returns
    -------
    list[int]
    """
    if len({tuple(x.shape) for x in inputs}) == 1:
        outputs = crp.evaluate(torch.stack(inputs))[0]
    else:
        outputs = torch.stack([crp.evaluate(x)[0] for x in inputs])
    return [int(c) for c in outputs.argmax(dim=-1)]


class SampleView(Component):
    """Choose the explained sample and class; show the class-conditional heatmap over the image.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; give ``Session(model, dataset)`` to browse a dataset.
    state : ExplorerState, optional
        The shared state; this view sets ``sample``, ``custom`` and ``target``.
    page_size : int
        Thumbnails per page.
    opacity : float
        Weight of the heatmap colour over the image.
    **kwargs
        Passed to :class:`Component`.

    Attributes
    ----------
    count : int
        Samples in the dataset (0 without one).
    page, page_size : int
        The page of thumbnails shown, and its size; the page follows ``state.sample``.
    thumbnails : tuple[numpy.ndarray]
        The page's images (at most 64 pixels on a side), synced as PNG bytes.
    thumbnail_info : list[dict]
        Per thumbnail: ``index``, ``label`` (or None) and ``prediction``.
    classes : list[str]
        Class names by output index.
    sample : int
        ``state.sample``, for the front end.
    custom : bool
        Whether ``state.custom`` is explained instead of a dataset sample.
    target : int or None
        ``state.target``: the chosen class, None for the prediction.
    prediction, explained, label : int or None
        The model's prediction for the input, the class the heatmap explains, and the sample's label.
    explained_for : dict
        The input the picture shows, from the same computation as the picture: ``sample`` (index, ``None`` for a
        custom input), ``label`` and ``note`` (what was done to a custom input); the caption is made from it.
    class_note : str
        A note when the class names given do not match the model's outputs.
    columns : int
        Thumbnail columns (0: as many as the page size suggests).
    image : numpy.ndarray
        The explained input as an image (``session.display``), synced as PNG bytes.
    heatmap : numpy.ndarray
        Its class-conditional heatmap ``[H, W]``, synced as float32 bytes and coloured in the browser. For a 1-D
        signal ``[C, L]`` it is ``None`` and ``image`` is a line plot with the relevance as a band under it (Sec. 3.5).
    opacity : float
        Weight of the heatmap colour over the image.
    """

    _esm = STATIC / "sample.js"
    _css = STATIC / "sample.css"

    count = traitlets.Int(0).tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(12, min=1).tag(sync=True)
    thumbnails = PNGList()
    thumbnail_info = traitlets.List().tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sample = traitlets.Int(0).tag(sync=True)
    custom = traitlets.Bool(False).tag(sync=True)
    target = traitlets.Int(None, allow_none=True).tag(sync=True)
    prediction = traitlets.Int(None, allow_none=True).tag(sync=True)
    explained = traitlets.Int(None, allow_none=True).tag(sync=True)
    label = traitlets.Int(None, allow_none=True).tag(sync=True)
    explained_for = traitlets.Dict().tag(sync=True)
    class_note = traitlets.Unicode("").tag(sync=True)
    columns = traitlets.Int(0, min=0).tag(sync=True)
    image = PNG()
    heatmap = Array(ndim=2)
    opacity = traitlets.Float(0.5, min=0.0, max=1.0).tag(sync=True)

    def __init__(self, session, state=None, *, page_size=12, opacity=0.5, columns=0, **kwargs):
        super().__init__(session, state, **kwargs)
        dataset = self.session.dataset
        self.count = 0 if dataset is None else len(dataset)
        self.page_size, self.opacity, self.columns = page_size, opacity, columns
        self._mirror_state()
        self.state.observe(self._on_input, names=["sample", "custom", "target"])
        self.observe(self._on_page, names=["page", "page_size"])
        self.on_msg(self._on_message)
        self.refresh()

    def refresh(self):
        """Load the page of thumbnails and explain the state's input (see :meth:`Component.refresh`)."""
        self._load_page()
        self._explain()

    def clear_view(self, view):
        """An input that cannot be explained shows no picture (and no caption of another input)."""
        if view == "explain":
            with self.hold_sync():
                self.image, self.heatmap, self.explained_for = None, None, {}

    @traitlets.validate("page")
    def _valid_page(self, proposal):
        pages = max(1, math.ceil(self.count / self.page_size))
        return min(max(0, proposal["value"]), pages - 1)

    def select(self, index):
        """Explain dataset sample ``index`` (leaving a custom input)."""
        with self.state.hold_trait_notifications():
            self.state.custom = None
            self.state.sample = int(index)

    def show(self, image):
        """Explain ``image``: a tensor, an array, or anything the session's ``transform`` accepts (a PIL image)."""
        self.state.custom = image

    def explain(self, target):
        """Explain class ``target`` (an output index or a class name); ``None`` explains the prediction."""
        self.state.target = None if target is None else self.session.class_index(target)

    def _on_message(self, _, content, buffers):
        actions = {"select": lambda: self.select(content["index"]), "target": lambda: self.explain(content["target"])}
        if content.get("type") in actions:
            self.act(actions[content["type"]], self._mirror_state)

    def _on_input(self, change):
        self._mirror_state(follow=change["name"] != "target")
        self._explain()

    def _mirror_state(self, follow=True):
        """Show the state in the front end; with ``follow``, the page moves to the explained dataset sample."""
        with self.hold_sync():
            self.sample, self.target = self.state.sample, self.state.target
            self.custom = self.state.custom is not None
            if follow and not self.custom:
                self.page = self.state.sample // self.page_size

    def _on_page(self, change):
        if change["name"] == "page_size" and not self.custom:
            page = self.state.sample // self.page_size
            if page != self.page:
                self.page = page  # which loads it, through this observer
                return
        self._load_page()

    def _load_page(self):
        start = self.page * self.page_size
        indices = range(start, min(self.count, start + self.page_size))
        if not indices:
            return

        def compute():
            items = [self.session.item(i) for i in indices]
            inputs = [x for x, _ in items]
            images = [thumbnail(self.session.display(x)) for x in inputs]
            predicted = predictions(self.session.crp, inputs)
            labels = [label for _, label in items]
            info = [{"index": i, "label": y, "prediction": p} for i, y, p in zip(indices, labels, predicted)]
            return images, info

        def apply(result):
            with self.hold_sync():
                self.thumbnails, self.thumbnail_info = result

        self.schedule("page", (id(self.session), "page", indices.start, indices.stop), compute, apply)

    def _explain(self):
        if (sample := self.sample_source("explain")) is None:
            return
        source, load = sample
        target = self.state.target

        custom, note = self.state.custom is not None, self.state.custom_note
        sample = None if custom else int(self.state.sample)

        def compute():
            x, label = load()
            output = self.session.crp.predict(x)
            prediction = int(output.argmax())
            explained = prediction if target is None else int(target)
            heatmap = self.session.crp.attribute(x, explained).heatmap
            names = class_names(self.session, int(output.shape[-1]))
            shown = self.session.display(x)
            if heatmap.ndim == 1:  # a signal: its line plot with the relevance as a band under it (Sec. 3.5)
                shown, heatmap = plot_signal(shown, heatmap, size=SIGNAL_SIZE), None
            about = {"sample": sample, "label": label, "note": note}
            return shown, heatmap, prediction, explained, label, names, about, self.session.class_note()

        def apply(result):
            with self.hold_sync():
                (self.image, self.heatmap, self.prediction, self.explained, self.label, self.classes,
                 self.explained_for, self.class_note) = result  # fmt: skip

        self.schedule("explain", (id(self.session), "explain", source, target), compute, apply)
