"""The reference gallery: what a channel's concept looks like (Achtibat et al. 2023, Sec. 2.3.3-2.3.5, 3.1-3.2).

For the channel in focus it shows the reference samples of a scan (RelMax or ActMax, sum or max target, Eq. 18-23),
seen as full samples, receptive-field crops, conditional heatmaps of the crops or relevance-masked crops (Fig. 8),
with tabs for the classes that use the channel most and their class-conditional references (Fig. 13), and a
side-by-side RelMax-versus-ActMax mode (Fig. 9). While a scan is still running it polls the store and fills up.
"""

import functools
import threading

import torch
import traitlets

from ..engine import CRPError
from ..render.signals import heatmap_picture, signal_reference_picture
from .component import STATIC, Component
from .layers import layer_menu
from .traits import PNGList

__all__ = ["FOLLOWS_RELEVANCE", "ReferenceGallery"]

MODES = {"relevance": "RelMax", "activation": "ActMax"}
VIEWS = ("sample", "crop", "heatmap", "masked")
CLASS_TABS = 5

FOLLOWS_RELEVANCE = "Every position of this layer sees the whole {input}: crops follow the relevance."

NO_STORE = (
    "No reference store yet. Reference samples come from a scan of a dataset (the samples that use each channel\n"
    "most, and those that activate it most):\n"
    "    store = cw.scan(cw.CRP(model), dataset, layers=[...], path='references')\n"
    "then call gallery.attach_store(store), or pass store=... to the Session."
)


class ReferenceGallery(Component):
    """Reference samples of the channel in focus (``state.layer``, ``state.channel``).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; its reference store gives the references (:func:`crp_widgets.engine.scan.scan`).
    state : ExplorerState, optional
        The shared state; the gallery follows its ``layer`` and ``channel`` and sets them from its header.
    layer : str, optional
        Sets ``state.layer``.
    channel : int, optional
        Sets ``state.channel``.
    poll_interval : float
        Seconds between re-reads of a store whose scan is still running.
    **kwargs
        Initial values of the traits below, or passed to :class:`Component`.

    Attributes
    ----------
    mode : {"relevance", "activation"}
        RelMax or ActMax references (Sec. 2.3.3, Fig. 9).
    compare : bool
        Show RelMax and ActMax side by side (Fig. 9).
    maximization : {"sum", "max"}
        The maximization target over the channel's neurons (Eq. 18, 19).
    k : int
        References per row.
    view : {"sample", "crop", "heatmap", "masked"}
        Full sample, receptive-field crop, conditional heatmap of the crop, or the crop masked where the smoothed
        heatmap stays below 40 % of its maximum (Fig. 8). Where the channel's neurons see the whole input (a
        transformer's tokens), the crop is the bounding box of the relevant region instead (see ``crop_note``).
    init : {"relevance", "activation"}
        Heatmaps start from the relevance for the sample's class or from the channel's activation (Sec. 2.3.5).
    cls : int or None
        Class-conditional references of this class (Fig. 13; RelMax only); ``None`` for all classes.
    class_tabs : list[dict]
        The classes that use the channel most: ``{"cls", "name", "relevance"}`` (mean relevance, Fig. 13).
    groups : list[dict]
        The rows shown: ``{"title", "mode", "tiles": [{"dataset", "index", "value", "target"}]}``.
    images : tuple[numpy.ndarray]
        The tiles' pictures, row after row (PNG bytes in the front end).
    store_info : dict
        The store's layers (name to channel count), ``k``, ``class_k``, ``samples``, ``total`` and ``complete``;
        empty without a store.
    layer_menu : list[dict]
        The store's layers, grouped as the model's blocks by stage (``{"group", "layers"}``,
        :func:`~crp_widgets.widgets.layers.layer_menu`); without a store, the model's blocks.
    crop_note : str
        Why the crops are not receptive fields, next to the references, or empty: where every position of the layer
        sees the whole input (a transformer's tokens), a crop is the bounding box of the relevant region
        (:data:`FOLLOWS_RELEVANCE`), and the view is called "relevant region" instead of "receptive field".
    message : str
        A note shown instead of tiles (no store yet, no channel chosen).
    concept : dict
        The channel's concept label (``session.label``, Network Dissection, Bau et al. 2017): ``{"concept", "iou"}``, or
        empty when its layer has no labels.
    """

    _esm = STATIC / "gallery.js"
    _css = STATIC / "gallery.css"

    layer = traitlets.Unicode("").tag(sync=True)
    channel = traitlets.Int(None, allow_none=True).tag(sync=True)
    mode = traitlets.Enum(tuple(MODES), default_value="relevance").tag(sync=True)
    compare = traitlets.Bool(False).tag(sync=True)
    maximization = traitlets.Enum(("sum", "max"), default_value="sum").tag(sync=True)
    k = traitlets.Int(8).tag(sync=True)
    view = traitlets.Enum(VIEWS, default_value="crop").tag(sync=True)
    init = traitlets.Enum(("relevance", "activation"), default_value="relevance").tag(sync=True)
    cls = traitlets.Int(None, allow_none=True).tag(sync=True)
    class_tabs = traitlets.List().tag(sync=True)
    groups = traitlets.List().tag(sync=True)
    images = PNGList()
    store_info = traitlets.Dict().tag(sync=True)
    layer_menu = traitlets.List().tag(sync=True)
    crop_note = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    concept = traitlets.Dict().tag(sync=True)

    def __init__(self, session, state=None, *, layer=None, channel=None, poll_interval=2.0, **kwargs):
        super().__init__(session, state, **kwargs)
        if layer is not None:
            self.state.layer = layer
        if channel is not None:
            self.state.channel = channel
        self.poll_interval = poll_interval
        self._timer = None
        self._closed = False
        self.mirror("layer", "channel")
        self.observe(self._changed, names=["layer", "channel", "mode", "compare", "maximization", "k", "view",
                                           "init", "cls"])  # fmt: skip
        self.on_msg(self._on_message)
        self.session.on_labels(lambda layer: self._show_concept())
        self.show()

    def refresh(self):
        """Show the references for the current state (see :meth:`Component.refresh`)."""
        self.show()

    def clear_view(self, view):
        """References that could not be read show no tiles of another channel."""
        if view == "tiles":
            with self.hold_sync():
                self.groups, self.images, self.class_tabs, self.crop_note = [], (), [], ""

    def _show_concept(self):
        """The dissection label of the channel in focus, next to its references."""
        labels = self.session.labels.get(self.layer)
        if labels is None or self.channel is None or not 0 <= self.channel < len(labels.thresholds):
            self.concept = {}
            return
        concept, iou = labels.label(self.channel)
        self.concept = {"concept": concept, "iou": iou}

    def _on_message(self, _, content, buffers):
        """A tile's "add to concept basket" (or a keyboard action on it) adds its sample to ``state.basket``."""
        if content.get("type") == "basket":
            entry = {"dataset": str(content["dataset"]), "index": int(content["index"])}
            if entry not in self.state.basket:
                self.state.basket = [*self.state.basket, entry]

    def attach_store(self, store):
        """Use a reference store (a :class:`Store` or its path) and show its references.

        A store made for another model or dataset is refused: the error shows inside the gallery (until the
        gallery next shows references) and is raised; the gallery keeps the store it had.
        """
        try:
            self.session.attach_store(store)
        except CRPError as error:
            self.settle("store", error)
            raise
        self.settle("store")
        self.show()

    def show(self):
        """Show the references for the current state and options (the gallery calls this on every change)."""
        self._show_concept()
        store = self.session.store
        if store is None:
            self.drop("tiles")
            self._clear(NO_STORE)
            return
        self.store_info = _store_info(store)
        self.layer_menu = layer_menu(self.session.crp, store.layers)
        self._watch()
        if not self.layer or self.channel is None:
            self.drop("tiles")
            self.settle("tiles")
            self._clear("Choose a layer and a channel to see its reference samples.")
            return
        request = (self.layer, self.channel, self.mode, self.compare, self.maximization, self.k, self.view,
                   self.init, self.cls)  # fmt: skip
        key = ("gallery", str(store.path), store.manifest.get("tables"), store.samples, *request)
        self.schedule("tiles", key, lambda: self._compute(store, *request), self._apply)

    def unlink(self):
        """Stop polling the store and following the state."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.unmirror()
        super().unlink()

    # ------------------------------------------------------------------------------------------------ internals

    def _changed(self, change):
        if change["name"] in ("layer", "channel") and self.cls is not None:
            self.cls = None  # the class tabs belong to the channel; this change shows the gallery again
            return
        self.show()

    def _clear(self, message):
        with self.hold_sync():
            self.message = message
            self.groups = []
            self.images = ()
            self.class_tabs = []
            self.crop_note = ""
            if self.session.store is None:
                self.store_info, self.layer_menu = {}, layer_menu(self.session.crp)

    def _compute(self, store, layer, channel, mode, compare, maximization, k, view, init, cls):
        self.session.current_store()
        views = self.session.views
        tabs = [{"cls": c, "name": self._class_name(c), "relevance": r}
                for c, r in store.top_classes(layer, channel, k=CLASS_TABS)]  # fmt: skip
        groups, images, note = [], [], ""
        for shown in ("relevance", "activation") if compare else (mode,):
            conditional = cls if shown == "relevance" else None
            references = views.views(layer, channel, mode=shown, target=maximization, k=k, cls=conditional, init=init)
            groups.append({
                "title": self._title(shown, maximization, conditional, cls),
                "mode": shown,
                "tiles": [_tile(v, self._class_name) for v in references],
            })  # fmt: skip
            images.extend(self._picture(v, view) for v in references)
            if any(v.follows_relevance for v in references):
                note = FOLLOWS_RELEVANCE.format(input="signal" if references[0].sample.ndim == 2 else "image")
        return tabs, groups, images, note

    def _apply(self, result):
        self.settle("store")  # references shown again: a refused store is history
        tabs, groups, images, note = result
        scanning = not self.store_info.get("complete", True)
        empty = not any(group["tiles"] for group in groups)
        with self.hold_sync():
            self.class_tabs = tabs
            self.groups = groups
            self.images = images
            self.crop_note = note
            self.message = ("No references yet: the scan has not reached this channel." if scanning
                            else "This channel has no references in the store.") if empty else ""  # fmt: skip

    def _title(self, mode, maximization, conditional, cls):
        title = f"{MODES[mode]} ({maximization})"
        if conditional is not None:
            return f"{title}, class {self._class_name(conditional)}"
        if cls is not None:
            return f"{title}, all classes (class-conditional references are RelMax only)"
        return title

    def _class_name(self, cls):
        return None if cls is None else class_name(self.session, cls)

    def _picture(self, reference, view):
        if reference.sample.ndim == 2:  # a 1-D signal [C, L]: line plots (Sec. 3.5)
            return signal_reference_picture(self.session.display, reference, view)
        if view == "heatmap":  # drawn over the crop it explains
            return heatmap_picture(reference.crop_heatmap, displayed(self.session, reference.crop))
        picture = {"sample": reference.sample, "crop": reference.crop, "masked": reference.masked}[view]
        return displayed(self.session, picture)

    def _watch(self):
        """Re-read a store whose scan is running every ``poll_interval`` seconds, on the worker thread."""
        store = self.session.store
        if self._closed or self._timer is not None or store is None or store.complete:
            return
        self._timer = threading.Timer(self.poll_interval, self._poll, args=(store,))
        self._timer.daemon = True
        self._timer.start()

    def _poll(self, store):
        before = store.samples

        def refreshed(_):
            self._timer = None
            self.settle("poll")
            if store is self.session.store and (store.samples != before or store.complete):
                self.show()
            else:
                self._watch()

        def failed(error):
            self._timer = None
            self.settle("poll", error)
            self._watch()

        refresh = functools.partial(self.session.current_store, max_age=0)
        self.session.worker.submit((id(self), "poll"), None, refresh, refreshed, failed)


def _store_info(store):
    return {
        "layers": {name: info["channels"] for name, info in store.layers.items()},
        "k": store.manifest["k"],
        "class_k": store.manifest["class_k"],
        "samples": store.samples,
        "total": sum(dataset["length"] for dataset in store.datasets),
        "complete": store.complete,
    }


def _tile(view, name_of):
    reference = view.reference
    return {
        "dataset": reference.dataset,
        "index": reference.index,
        "value": reference.value,
        "target": name_of(view.target),
    }


def displayed(session, x):
    """An input ``[C, H, W]`` as the session displays it, in RGB (grey images repeated to three channels)."""
    image = torch.as_tensor(session.display(x))
    return image.expand(3, -1, -1) if image.ndim == 3 and image.shape[0] == 1 else image


def class_name(session, cls):
    """The name of class ``cls`` (its number when the session knows no names)."""
    return session.class_name(cls)
