"""One context per (model, composite): everything that does not depend on the input, invalidated in one place.

The explainable graph, the canonized and modified parameters of the layers and the recorded forward passes are
valid while the model's :class:`~crp_widgets.engine.state.ModelState` is unchanged; :meth:`Context.refresh` checks
it before every use and drops what a change invalidates (a new module: the graph too).
"""

import collections
import threading

import torch

from .forward import evaluate, record
from .graph import Graph, UntraceableError, templates
from .hooked import HookedGraph
from .rules import modified_parameters
from .state import PASSES, ModelState

# module types whose output holds its channels on the last axis (features of a token or a row)
_CHANNELS_LAST = {"Linear", "NonDynamicallyQuantizableLinear", "LayerNorm", "RMSNorm", "MultiheadAttention"}


class Context:
    """The explainable program of a model under a composite, with its caches.

    Parameters
    ----------
    model : torch.nn.Module
        The model (never changed).
    composite : zennit.core.Composite
        The rules.
    mode : {"lrp", "flat"}
        Relevance rules, or the flat rule of receptive fields.
    epsilon : float
        The stabiliser of the engine's own epsilon rules (sums, norms, attention).
    cache_size : int
        How many recorded forward passes to keep.
    attention : {"cp", "attnlrp"}
        CP-LRP (attention weights held constant) or AttnLRP's softmax and product rules.
    """

    def __init__(self, model, composite, mode="lrp", epsilon=1e-6, cache_size=2, attention="cp"):
        self.model, self.composite, self.mode, self.epsilon = model, composite, mode, epsilon
        self.attention = attention
        self.lock = threading.RLock()  # held briefly, around the caches
        self.cache_size = max(1, int(cache_size))
        self.state = None
        self._graph = None
        self._parameters = {}
        self.passes = collections.OrderedDict()
        self.axes = {}
        self.layouts = {}  # layer -> Layout, as seen in the last pass

    def refresh(self):
        """Compare the model with the state the caches were made for; drop what a change invalidates."""
        state = ModelState(self.model)
        with self.lock:
            if state != self.state:
                if self.state is None or not state.same_modules(self.state):
                    self._graph = None
                    self.axes, self.layouts = {}, {}
                self._parameters.clear()
                self.passes.clear()
                self.state = state
        return state

    def clear(self):
        """Drop the recorded forward passes (and the memory their graphs hold)."""
        with self.lock:
            self.passes.clear()

    def graph(self, example=None):
        """The explainable graph (traced on first use, and again after the model's modules changed).

        ``example``: an input, run through the model to tell its own errors from tracing problems. A model that
        cannot be traced runs module by module (:class:`~crp_widgets.engine.hooked.HookedGraph`).
        """
        graph = self._graph
        if graph is not None:
            return graph
        with PASSES.alone(), self.lock:  # tracing waits for the passes of other threads, before the caches' lock
            if self._graph is None:
                try:
                    self._graph = Graph(self.model, self.composite, example, self.attention)
                except UntraceableError as error:
                    reason = str(error).split(". Tracing needs", 1)[0]
                    self._graph = HookedGraph(self.model, templates(self.model, self.composite, set()), reason)
            return self._graph

    def parameters(self, layer, index, modifier):
        """A layer's canonized parameters (``index`` ``None``), or those of its rule's branch ``index``."""
        key = (layer.name, index)
        cached = self._parameters.get(key)
        if cached is None:  # two threads may compute it at once: both get the same values
            if index is None:
                cached = layer.parameters()
            else:
                cached = modified_parameters(modifier, self.parameters(layer, None, None))
            self._parameters[key] = cached
        return cached

    def channel_axis(self, name, value=None, axis=None, kinds=None):
        """The axis of layer ``name``'s output that holds its channels.

        With ``value`` (the layer's output in a pass), the ``axis`` the pass followed to it and the module ``kinds``
        of the pass's graph: that axis, kept for later questions; where the pass lost track, axis 1 for images and
        signals, the last one for tokens and rows.
        Without: the axis kept from the last pass (1 if none ran yet).
        """
        if value is None:
            return self.axes.get(name, 1)
        if axis is None:
            axis = value.ndim - 1 if value.ndim in (2, 3) and kinds.get(name) in _CHANNELS_LAST else 1
            axis = min(axis, value.ndim - 1)
        self.axes[name] = axis
        return axis

    def forward(self, x, taps, edits=None, edits_key=(), cache=True):
        """The recorded forward pass of ``x`` with ``taps`` (from the cache when the input and model are the same).

        The pass is recorded outside the context's lock: other threads' passes go on meanwhile. ``cache=False``:
        neither looked up nor kept.
        """
        key = (tuple(x.shape), x.dtype, x.device, float(x.sum()), frozenset(taps), edits_key)
        if cache:
            with self.lock:
                cached = self.passes.get(key)
                if cached is not None and torch.equal(cached[0], x):
                    self.passes.move_to_end(key)
                    return cached[1]
                self.passes.pop(key, None)
                while len(self.passes) >= self.cache_size:  # let go first: the memory is reused at once
                    self.passes.popitem(last=False)
        forward = record(self, x, taps, edits)
        if cache:
            with self.lock:
                self.passes[key] = (x.detach().clone(), forward)
        return forward

    def record(self, x, taps, edits=None, observe=None):
        """A forward pass that is not cached (scans: ``observe`` streams the activations)."""
        return record(self, x, taps, edits, observe)

    def evaluate(self, x, taps=(), edits=None, grad=False):
        """The model's own function on ``x``: ``(output, {layer: output})`` (see :func:`.forward.evaluate`)."""
        return evaluate(self, x, taps, edits, grad)
