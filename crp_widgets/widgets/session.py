"""What linked widgets share.

The session holds the model's CRP, the data, the reference store and a worker; the explorer state (sample, class,
layer, conditions, channel, region) is a set of traitlets, readable and settable from Python.
"""

import hashlib
import threading
import time

import numpy as np
import torch
import traitlets

from ..engine import CRP, CRPError
from ..engine.references import ReferenceViews
from ..engine.store import Store, open_store
from .worker import Worker


class ExplorerState(traitlets.HasTraits):
    """The state linked widgets share; set it from Python to script the explorer.

    Attributes
    ----------
    sample : int
        Index of the explained sample in the session's dataset.
    custom : torch.Tensor or None
        An input given directly (tensor, array or PIL image after the session's ``transform``); overrides ``sample``.
    target : int or None
        The explained class; ``None`` explains the prediction.
    layer : str
        The layer whose channels are shown.
    conditions : dict[str, list[int]]
        Selected channels per layer: OR within a layer, AND across layers (Eq. 8).
    channel : int or None
        The channel in focus (references, graph).
    region : numpy.ndarray or None
        A boolean input region ``[H, W]`` (drawn on the concept atlas, Eq. 11-12).
    localization : bool
        Class-free concept localisation: heatmaps start from the channels' activations (Sec. 2.3.5).
    basket : list[dict]
        The examples of a user-defined concept (seed 004): ``{"dataset": name, "index": int}`` references into the
        session's datasets, filled from the gallery or the concepts view.
    """

    sample = traitlets.Int(0)
    custom = traitlets.Any(None, allow_none=True)
    target = traitlets.Int(None, allow_none=True)
    layer = traitlets.Unicode("")
    conditions = traitlets.Dict()
    channel = traitlets.Int(None, allow_none=True)
    region = traitlets.Any(None, allow_none=True)
    localization = traitlets.Bool(False)
    basket = traitlets.List()

    def select(self, layer, channels):
        """Set the selected channels of ``layer`` (an empty list removes the layer's condition)."""
        conditions = {name: list(c) for name, c in self.conditions.items() if name != layer}
        if channels:
            conditions[layer] = sorted({int(c) for c in channels})
        self.conditions = conditions


def _default_display(x):
    """Show an input as an image: inputs in [0, 1] as they are (clipped)."""
    return x.detach().float().clamp(0, 1)


class Session:
    """The kernel-side backend of linked widgets.

    Parameters
    ----------
    model : torch.nn.Module or CRP
        The model to explain (or a prepared :class:`CRP`).
    dataset : torch.utils.data.Dataset, optional
        Items ``(input tensor, label)``.
    store : Store or str or pathlib.Path, optional
        A reference store (see :func:`crp_widgets.scan`); refused with a clear error if made for another model,
        layer set or dataset.
    classes : Sequence[str], optional
        Class names (default: ``dataset.classes`` if present, else numbers).
    datasets : dict[str, Dataset], optional
        The datasets named in the store, if it holds more than ``dataset`` (named ``"dataset"``).
    display : callable, optional
        Maps an input tensor ``[C, H, W]`` to a displayable RGB image in [0, 1] (undo a normalisation here).
    transform : callable, optional
        Maps a user's image (e.g. PIL) to an input tensor, for ``ExplorerState.custom``.
    composite, layers
        Passed to :class:`CRP` when ``model`` is a module.
    worker : Worker, optional
        Shared with other sessions if given.
    """

    def __init__(self, model, dataset=None, store=None, *, classes=None, datasets=None, display=None,
                 transform=None, composite=None, layers=(), worker=None):  # fmt: skip
        self.crp = model if isinstance(model, CRP) else CRP(model, composite=composite, layers=layers)
        self.dataset = dataset
        self.datasets = dict(datasets or {})
        if dataset is not None:
            self.datasets.setdefault("dataset", dataset)
        self.display = display or _default_display
        self.transform = transform
        self.worker = worker or Worker()
        self._classes = list(classes) if classes is not None else getattr(dataset, "classes", None)
        self.store = None
        self.views = None
        self.labels = {}  # concept labels per layer (Network Dissection, seed 002): see label()
        self._label_listeners = []
        self._store_lock = threading.Lock()
        self._store_read = 0.0
        if store is not None:
            self.attach_store(store)

    def attach_store(self, store):
        """Use a reference store, after checking it was made for this model and these datasets."""
        store = store if isinstance(store, Store) else open_store(store)
        store.check(model=self.crp.model, datasets={d["name"]: self.datasets[d["name"]] for d in store.datasets
                                                     if d["name"] in self.datasets})  # fmt: skip
        self.views = ReferenceViews(self.crp, store, self.datasets)
        self.store = store
        self._store_read = time.monotonic()

    def current_store(self, max_age=0.5):
        """The store, re-read first if a scan is still writing to it and it was read over ``max_age`` s ago.

        Views call this in their computations (on the worker), so what they show is never older than the scan's
        last checkpoint, whichever view polls.
        """
        store = self.store
        if store is not None and not store.complete:
            with self._store_lock:
                if time.monotonic() - self._store_read > max_age:
                    store.refresh()
                    self._store_read = time.monotonic()
        return store

    def label(self, layer, labels):
        """Show concept labels of ``layer``'s channels (:func:`crp_widgets.engine.dissection.dissect`) in the views.

        The channel selector, the gallery and the graph show each channel's best concept and its IoU next to the
        channel; ``labels=None`` removes them.
        """
        self.crp.validate_layer(layer)
        if labels is None:
            self.labels.pop(layer, None)
        else:
            if getattr(labels, "layer", layer) != layer:
                raise CRPError(f"these labels belong to layer {labels.layer!r}, not {layer!r}")
            self.labels[layer] = labels
        for listener in list(self._label_listeners):
            listener(layer)

    def on_labels(self, callback):
        """Call ``callback(layer)`` whenever the labels of a layer change (views use this to redraw)."""
        self._label_listeners.append(callback)

    def channel_labels(self, layer):
        """The labels of ``layer`` for the front end: ``{"layer", "concepts", "iou"}``, or ``{}`` without any."""
        labels = self.labels.get(layer)
        return labels.describe() if labels is not None else {}

    @property
    def classes(self):
        """Class names, by output index."""
        if self._classes is None:
            x = self.input(ExplorerState())
            self._classes = [str(i) for i in range(int(self.crp.predict(x).shape[-1]))]
        return list(self._classes)

    def class_index(self, name_or_index):
        """The output index of a class given by name or index."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.classes:
                raise CRPError(f"unknown class {name_or_index!r}; classes: {', '.join(self.classes)}")
            return self.classes.index(name_or_index)
        return int(name_or_index)

    def item(self, index):
        """``(input, label or None)`` of dataset sample ``index``."""
        if self.dataset is None:
            raise CRPError("this session has no dataset; set ExplorerState.custom to an input instead")
        if not 0 <= index < len(self.dataset):
            raise CRPError(f"sample {index} is out of range: the dataset has {len(self.dataset)} samples")
        item = self.dataset[index]
        if isinstance(item, (tuple, list)):
            return torch.as_tensor(item[0]), (int(item[1]) if len(item) > 1 else None)
        return torch.as_tensor(item), None

    def input(self, state):
        """The input the state points at (its ``custom`` input, or dataset sample ``state.sample``)."""
        if state.custom is not None:
            custom = state.custom
            if self.transform is not None and not isinstance(custom, (torch.Tensor, np.ndarray)):
                custom = self.transform(custom)
            return torch.as_tensor(custom)
        return self.item(state.sample)[0]

    def source(self, state):
        """Where the input of ``state`` comes from, for computations off the comm thread.

        Returns
        -------
        key : tuple
            Identifies the input when caching results computed on it: ``("sample", index)``, or a content hash of
            the custom input.
        load : callable
            Returns ``(input tensor, label or None)``; a dataset sample is loaded when ``load`` is called (a custom
            input is converted with ``transform`` here, to hash it).
        """
        if state.custom is None:
            index = int(state.sample)
            return ("sample", index), lambda: self.item(index)
        x = self.input(state)
        data = x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return ("custom", tuple(x.shape), str(x.dtype), digest), lambda: (x, None)

    def explained_class(self, x, target):
        """The class explained for input ``x``: ``target``, or the model's prediction when ``target`` is None."""
        return int(self.crp.predict(x).argmax()) if target is None else int(target)
