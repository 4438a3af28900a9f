"""What linked widgets share.

The session holds the model's CRP, the data, the reference store and a worker; the explorer state (sample, class,
layer, conditions, channel, region) is a set of traitlets, readable and settable from Python.
"""

import copy
import hashlib
import threading
import time

import torch
import traitlets

from ..engine import CRP, CRPError
from ..engine.references import ReferenceViews
from ..engine.store import Store, open_store
from . import validation
from .inputs import as_input
from .worker import Worker


class ExplorerState(traitlets.HasTraits):
    """The state linked widgets share; set it from Python to script the explorer.

    A state bound to a session (:meth:`bind`; the explorer binds its own) refuses values the model or the dataset
    does not have: an unknown layer, a channel or sample out of range, a class the model has no output for, an
    input it cannot take. The refused assignment raises :class:`~crp_widgets.widgets.validation.StateError`, the
    state keeps its last valid value and :attr:`refused` says why (the explorer shows it).

    Attributes
    ----------
    sample : int
        Index of the explained sample in the session's dataset. Setting it leaves a custom input.
    custom : torch.Tensor or None
        An input given directly (tensor, array or PIL image, converted by :func:`~crp_widgets.widgets.inputs.as_input`
        once the state is bound); overrides ``sample``.
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
        The examples of a user-defined concept: ``{"dataset": name, "index": int}`` references into the session's
        datasets, filled from the gallery or the concepts view.
    refused : str
        Why the last value set on a bound state was refused; empty once a value is accepted again.
    custom_note : str
        What was done to the custom input beyond a plain conversion (e.g. a resize), or empty.
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
    refused = traitlets.Unicode("")
    custom_note = traitlets.Unicode("")

    _session = None

    def bind(self, session):
        """Check every later value against ``session`` (its model, dataset and class names)."""
        self._session = session

    def select(self, layer, channels):
        """Set the selected channels of ``layer`` (an empty list removes the layer's condition)."""
        conditions = {name: list(c) for name, c in self.conditions.items() if name != layer}
        if channels:
            conditions[layer] = sorted({int(c) for c in channels})
        self.conditions = conditions

    def _checked(self, check, *args):
        """``check(session, *args)`` on a bound state; a refusal is recorded in :attr:`refused` and raised."""
        if self._session is None:
            return args[-1]
        try:
            value = check(self._session, *args)
        except Exception as error:
            self.refused = str(error) or type(error).__name__
            raise
        self.refused = ""
        return value

    @traitlets.validate("sample")
    def _valid_sample(self, proposal):
        value = self._checked(validation.check_sample, proposal["value"])
        if self.custom is not None:  # a dataset sample replaces the custom input
            self.custom = None
        return value

    @traitlets.validate("custom")
    def _valid_custom(self, proposal):
        if proposal["value"] is None or self._session is None:
            self.custom_note = ""
            return proposal["value"]
        x, note = self._checked(_check_custom, proposal["value"])
        self.custom_note = note
        return x

    @traitlets.validate("target")
    def _valid_target(self, proposal):
        return self._checked(validation.check_target, proposal["value"])

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        if not proposal["value"] and self._session is None:
            return proposal["value"]
        return self._checked(validation.check_layer, proposal["value"])

    @traitlets.validate("channel")
    def _valid_channel(self, proposal):
        return self._checked(validation.check_channel, self.layer, proposal["value"])

    @traitlets.validate("conditions")
    def _valid_conditions(self, proposal):
        return self._checked(validation.check_conditions, proposal["value"])

    @traitlets.observe("layer")
    def _channel_of_the_layer(self, change):
        """A channel in focus that the new layer does not have leaves the focus (the explorer focuses its top one)."""
        if self._session is None or self.channel is None:
            return
        count = self._session.channel_count(self.layer)
        if count is not None and self.channel >= count:
            self.channel = None


def _check_custom(session, value):
    """A custom input converted (:func:`as_input`) and tried on the model: ``(tensor, note)``."""
    like = session.item(0)[0] if session.dataset is not None and len(session.dataset) else None
    x, note = as_input(value, session.transform, like)
    try:
        session.crp.predict(x)
    except CRPError as error:
        accepted = f"; the dataset's samples are {list(like.shape)}" if like is not None else ""
        raise validation.StateError(
            f"the model cannot take this input of shape {list(x.shape)}: {error}{accepted}"
        ) from None
    return x, note


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
        self.labels = {}  # concept labels per layer (Network Dissection, Bau et al. 2017): see label()
        self._label_listeners = []
        self._store_lock = threading.Lock()
        self._store_read = 0.0
        self._outputs = None
        self._channels = None
        if store is not None:
            self.attach_store(store)

    def copy(self, worker=None, cache_size=128):
        """A session on the same model, data, store, display and labels, with its own worker and reference views.

        Views built on the copy share nothing that changes with the original's (their jobs, caches and label
        listeners are their own): an export computes on a synchronous copy while the explorer keeps working.

        Parameters
        ----------
        worker : Worker, optional
            The copy's worker (a new one by default; ``Worker(synchronous=True)`` computes on the calling thread).
        cache_size : int
            How many channels' reference views the copy keeps.
        """
        twin = copy.copy(self)
        twin.worker = worker or Worker()
        twin.labels = dict(self.labels)
        twin._label_listeners = []
        twin._store_lock = threading.Lock()
        if self.store is not None:
            twin.views = ReferenceViews(self.crp, self.store, self.datasets, cache_size=cache_size)
        return twin

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

    def outputs(self):
        """The model's number of outputs (counted on the dataset's first sample), or ``None`` without a dataset."""
        if self._outputs is None and self.dataset is not None and len(self.dataset):
            self._outputs = int(self.crp.predict(self.item(0)[0]).shape[-1])
        return self._outputs

    def channel_count(self, layer):
        """The channel count of ``layer`` (any layer the CRP knows, on the dataset's first sample), or ``None``."""
        if self._channels is None or layer not in self._channels:
            if self.dataset is None or not len(self.dataset):
                return None
            self._channels = {info.name: int(info.channels) for info in self.crp.layers(self.item(0)[0])}
        return self._channels.get(layer)

    def class_names(self, outputs):
        """One name per output: the given class names, then ``output <i>`` for outputs without a name.

        Parameters
        ----------
        outputs : int
            The number of model outputs.
        """
        names = list(self._classes) if self._classes is not None else []
        if self._classes is None:
            return [str(i) for i in range(outputs)]
        return [str(n) for n in names[:outputs]] + [f"output {i}" for i in range(len(names), outputs)]

    @property
    def classes(self):
        """Class names, by output index (one per output; see :meth:`class_names`)."""
        outputs = self.outputs()
        if outputs is None:
            if self._classes is None:
                raise CRPError("no class names: give classes=[...] or a dataset to count the model's outputs on")
            return [str(n) for n in self._classes]
        return self.class_names(outputs)

    def class_name(self, cls):
        """The name of output ``cls`` (its number when the session knows no names)."""
        try:
            names = self.classes
        except CRPError:
            return str(cls)
        return names[cls] if 0 <= cls < len(names) else f"output {cls}"

    def class_note(self):
        """A note when the class names do not match the model's outputs (``""`` when they do, or cannot tell)."""
        outputs = self.outputs() if self._classes is not None else None
        if outputs is None or len(self._classes) == outputs:
            return ""
        names = len(self._classes)
        if names < outputs:
            return (
                f"The model has {outputs} outputs but {names} class names were given: outputs {names} to "
                f"{outputs - 1} are named by their number."
            )
        unused = names - outputs
        return f"The model has {outputs} outputs but {names} class names were given: the last {unused} are unused."

    def class_index(self, name_or_index):
        """The output index of a class given by name or index."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.classes:
                shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
                raise CRPError(f"unknown class {name_or_index!r}; classes: {shown}")
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
            if isinstance(state.custom, torch.Tensor):
                return state.custom
            like = self.item(0)[0] if self.dataset is not None and len(self.dataset) else None
            return as_input(state.custom, self.transform, like)[0]
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
