"""One run of the explainable program, and the backward passes that reuse a recorded run.

A :class:`Run` executes a :class:`~crp_widgets.engine.graph.Graph` on one input: with relevance rules ("lrp"), with
the flat rule of receptive fields ("flat"), or as the model's own function ("plain"). Tapped layers record their
output and get a tap node, which masks the relevance passing it (Eq. 8) and shows it to an observer. The result of
an explaining run is a :class:`ForwardPass`: its backward passes carry relevance.
"""

import contextlib
import dataclasses
import threading
import weakref

import torch
import torch.fx
from torch.fx.node import map_arg

from . import ops
from .axes import channel_axis
from .errors import CRPError, ModelForwardError, UnsupportedModelError
from .graph import attribute
from .inspection import Layout
from .rules import Rule, connect
from .state import PASSES


@dataclasses.dataclass(eq=False)
class Tap:
    """A layer's place in one forward pass.

    Attributes
    ----------
    name : str
        The layer (module) name.
    order : int
        Position in the forward execution order.
    calls : int
        How often the layer ran (conditions need exactly one).
    site : torch.Tensor
        The layer's output below the tap node: the gradient here is the relevance after the mask.
    output : torch.Tensor
        The tap node's output, which the rest of the network consumes: the gradient here is the layer's relevance.
    activation : torch.Tensor
        The layer's output values (detached).
    axis : int
        The axis of the layer's output that holds its channels.
    mask : torch.Tensor or None
        The condition mask of the current backward pass.
    observer : callable or None
        Called as ``observer(name, relevance)`` with the (masked) relevance passing the tap.
    problem : str or None
        Why the layer cannot be tapped (e.g. it returns a tuple).
    layout : Layout
        Where the layer's channels and positions lie (see :class:`~crp_widgets.engine.inspection.Layout`).
    """

    name: str
    order: int = -1
    calls: int = 0
    site: torch.Tensor = None
    output: torch.Tensor = None
    activation: torch.Tensor = None
    axis: int = 1
    mask: torch.Tensor = None
    observer: object = None
    problem: str = None
    layout: object = None


class _TapRule(Rule):
    """The identity, whose backward masks the relevance (Eq. 8) and shows it to the tap's observer.

    It refers to its tap weakly: the tap refers to the node's output, and a strong reference back would make a
    cycle that keeps whole graphs alive until the garbage collector runs.
    """

    def __init__(self, tap):
        self.tap = weakref.ref(tap)

    def forward(self, input):
        """Pass the layer's output."""
        return input, None

    def backward(self, state, relevance):
        """Mask and observe the relevance."""
        tap = self.tap()
        if tap is not None:
            if tap.mask is not None:
                relevance = relevance * tap.mask
            if tap.observer is not None:
                tap.observer(tap.name, relevance)
        return (relevance,)


class _EditRule(Rule):
    """An edit of a layer's output (Sec. 4.1-4.3); relevance passes it unchanged to the layer's rule."""

    def __init__(self, edit, layout):
        self.edit, self.layout = edit, layout

    def forward(self, input):
        """The edited output."""
        return self.edit(input, self.layout), None

    def backward(self, state, relevance):
        """Pass the relevance unchanged."""
        return (relevance,)


class Run:
    """One execution of a context's graph.

    Parameters
    ----------
    context : crp_widgets.engine.context.Context
        The model, its graph and the cached parameters.
    mode : {"lrp", "flat", "plain"}
        Relevance rules, receptive-field rules, or the model's own function.
    taps : Iterable[str]
        Layers to tap.
    edits : dict[str, Edit], optional
        Edits of layer outputs (see :mod:`crp_widgets.engine.interventions`).
    observe : callable, optional
        Stream each tapped layer's output to ``observe(name, activation)`` instead of keeping it.
    """

    def __init__(self, context, mode, taps=(), edits=None, observe=None):
        self.context, self.mode = context, mode
        self.graph = None
        self.epsilon, self.attention = context.epsilon, context.attention
        self.explains = False
        self.taps = {name: Tap(name) for name in taps}
        self.edits = dict(edits or {})
        self.observe = observe
        self.counter = 0

    def parameters(self, layer, index, modifier):
        """A layer's canonized parameters (``index`` ``None``) or those of a rule's branch, kept by the context."""
        return self.context.parameters(layer, index, modifier)

    def call(self, function, *args, **kwargs):
        """Call a torch function under the rules (attention modules use it for their inner operations)."""
        return ops.handler(function, ops.function_name(function))(self, args, kwargs)

    def __call__(self, input):
        """Run the program on ``input``; return the model's output."""
        self.explains = self.mode != "plain" and torch.is_grad_enabled()
        self.graph = self.context.graph(input)
        self.spatial = tuple(input.shape[2:])
        if not hasattr(self.graph, "steps"):  # a model that runs module by module: its hooks fire in every thread
            with PASSES.alone():
                return self.graph.execute(self, input)
        with PASSES.shared():
            return self._run(input)

    def _run(self, input):
        values, axes = {}, {}
        for step in self.graph.steps:
            node = step.node
            if node.op == "output":
                return map_arg(node.args[0], values.__getitem__)
            value, axis = self._step(step, input, values, axes)
            for name in step.names:
                value = self.enter(name, value, axis)
            values[node], axes[node] = value, axis
            for freed in step.free:
                values.pop(freed, None)
                axes.pop(freed, None)
        raise UnsupportedModelError("the traced model has no output")

    def _step(self, step, input, values, axes):
        """One node's value and the channel axis it has (``None``: unknown)."""
        node = step.node
        if node.op == "placeholder":
            first = not values
            return (input, 1) if first else (_default(node), None)
        if node.op == "get_attr":
            return attribute(self.context.model, node.target), None
        args, kwargs = map_arg(node.args, values.__getitem__), map_arg(node.kwargs, values.__getitem__)
        value = self._call(step, args, kwargs)
        return value, channel_axis(node.op, step.target, args, kwargs, value, [_axis(a, axes) for a in node.args])

    def _call(self, step, args, kwargs):
        try:
            return step.handler(self, args, kwargs)
        except (CRPError, ModelForwardError):
            raise
        except Exception as error:
            raise ModelForwardError(
                f"the model's forward pass failed at {step.handler.name}: {type(error).__name__}: {error}"
            ) from error

    def enter(self, name, value, axis=None):
        """Apply the edit of layer ``name`` and tap it; return what the rest of the network consumes.

        ``axis``: the channel axis of ``value``, as followed through the graph (``None``: unknown).
        """
        edit, tap = self.edits.get(name), self.taps.get(name)
        if edit is None and tap is None:
            return value
        if not isinstance(value, torch.Tensor):
            if tap is not None:
                tap.problem = f"layer {name!r} returns {type(value).__name__}, not one tensor"
                tap.calls += 1
            if edit is not None:
                raise CRPError(f"layer {name!r} returns {type(value).__name__}; only tensor outputs can be edited")
            return value
        axis = self.context.channel_axis(name, value, axis, self.graph.kinds)
        layout = self.context.layouts[name] = Layout.of(value.shape, axis, self.spatial)
        if edit is not None:
            value = (
                connect(_EditRule(edit, layout), value)
                if self.explains and value.requires_grad
                else edit(value, layout)
            )
        if tap is not None:
            if self.mode == "plain" and torch.is_grad_enabled() and not value.requires_grad:
                value = value.detach().requires_grad_()  # gradients with respect to the layer's output
            tap.calls += 1
            tap.order, self.counter = self.counter, self.counter + 1
            tap.axis, tap.layout = axis, layout
            if self.observe is not None:
                self.observe(name, value.detach())
            else:
                tap.activation = value.detach()
            tap.site = value
            if self.explains and value.requires_grad:
                value = connect(_TapRule(tap), value)
            tap.output = value
        return value


def _axis(arg, axes):
    """The channel axis of an argument: of a node's value, or the first known one in a list of nodes."""
    if isinstance(arg, (list, tuple)):
        return next((axes[a] for a in arg if isinstance(a, torch.fx.Node) and axes.get(a) is not None), None)
    return axes.get(arg) if isinstance(arg, torch.fx.Node) else None


def _default(node):
    if node.args:
        return node.args[0]
    raise CRPError(f"the model's forward takes another input ({node.target!r}); CRP explains models of one input")


class ForwardPass:
    """The graph of one recorded forward pass, with a tap on every tapped layer.

    Parameters
    ----------
    input : torch.Tensor
        The batched input, a leaf requiring gradients.
    output : torch.Tensor
        The model output.
    taps : dict[str, Tap]
        The tapped layers.
    """

    def __init__(self, input, output, taps):
        self.input, self.output, self.taps = input, output, taps
        self.memo = {}
        self.lock = threading.RLock()  # backward passes set masks on the taps: one thread at a time
        self.vectorized = input.is_cuda
        self._bypass = {}

    def tap(self, name):
        """The tap of layer ``name``, which must have run exactly once and returned a tensor."""
        tap = self.taps[name]
        if tap.problem is not None:
            raise CRPError(f"{tap.problem}; conditions and records need a layer that returns one tensor")
        if tap.calls != 1:
            state = "did not run" if tap.calls == 0 else f"ran {tap.calls} times"
            raise CRPError(
                f"layer {name!r} {state} in the forward pass; conditions and records need a layer that runs exactly "
                "once per forward pass"
            )
        return tap

    def layer_order(self, names):
        """Sort layer names by their position in the forward pass (input side first)."""
        return sorted(names, key=lambda name: self.tap(name).order)

    def backward(
        self,
        start,
        grad,
        capture,
        masks=None,
        batched=False,
        path_masks=None,
        create_graph=False,
        last=False,
        observe=None,
    ):
        """Propagate relevance ``grad`` from tensor ``start`` downwards.

        Parameters
        ----------
        start : torch.Tensor
            Where the relevance is placed: the output, or a tap's ``site`` (below that tap's mask).
        grad : torch.Tensor
            The initial relevance, shaped like ``start`` (with a leading dimension of k slices if ``batched``).
        capture : list[torch.Tensor or Tap]
            Where to return the relevance (zeros where none arrives): at a tensor, or below a tap's mask (a Tap).
        masks : dict[str, torch.Tensor], optional
            Condition masks by layer name (Eq. 8).
        batched : bool
            Propagate each of the k slices of ``grad`` separately: one ``torch.func.vmap`` pass if ``vectorized``
            (the default on GPUs), else a loop over the retained graph.
        path_masks : dict[str, torch.Tensor], optional
            With ``batched``: masks with a leading dimension k, one per slice.
        create_graph : bool
            Make the result differentiable with respect to ``grad`` (Eq. 11-12 over all channels at once).
        last : bool
            The last backward pass on this forward pass: its graph frees its memory as it goes (scans).
        observe : callable, optional
            Called as ``observe(name, relevance)`` with the relevance of every tapped layer the pass reaches.

        Returns
        -------
        tuple[torch.Tensor, ...]
            The relevance at each ``capture`` (with a leading dimension k if ``batched``).
        """
        with self.lock, PASSES.shared():  # the rules run the layers' modules again
            return self._backward(start, grad, capture, masks, batched, path_masks, create_graph, last, observe)

    def _backward(self, start, grad, capture, masks, batched, path_masks, create_graph, last, observe):
        masks, path_masks = dict(masks or {}), dict(path_masks or {})
        touched = [self.tap(name) for name in {**masks, **path_masks}]
        if observe is not None:
            touched = list(self.taps.values())
            for tap in touched:
                tap.observer = observe
        tensors = [c.site if isinstance(c, Tap) else c for c in capture]

        def run(relevance, *per_slice):
            for name, mask in zip(path_masks, per_slice):
                self.taps[name].mask = mask
            grads = torch.autograd.grad(
                start, tensors, relevance, retain_graph=not last, allow_unused=True, create_graph=create_graph
            )
            return tuple(torch.zeros_like(c) if g is None else g for c, g in zip(tensors, grads))

        try:
            for name, mask in masks.items():
                self.taps[name].mask = mask
            if not batched:
                return run(grad)
            if self.vectorized:
                return torch.func.vmap(run)(grad, *path_masks.values())
            results = [run(*slices) for slices in zip(grad, *path_masks.values())]
            return tuple(torch.stack(parts) for parts in zip(*results))
        finally:
            for tap in touched:
                tap.mask = None
                tap.observer = None

    def input_node(self):
        """The autograd node that accumulates the input's gradient."""
        return self.input.view_as(self.input).grad_fn.next_functions[0][0]

    def bypasses(self, name):
        """Whether some relevance reaches the input without passing layer ``name`` (e.g. a residual shortcut)."""
        if name not in self._bypass:
            tap = self.tap(name)
            self._bypass[name] = _reaches(self.output.grad_fn, {self.input_node()}, {tap.output.grad_fn})
        return self._bypass[name]

    def roots(self):
        """What a backward pass must capture so that it passes every tap that ran once (for ``observe``)."""
        return [
            tap.site for tap in self.taps.values() if tap.calls == 1 and tap.problem is None and tap.site.requires_grad
        ]


def _reaches(start, targets, barriers):
    """Whether any of the autograd nodes ``targets`` can be reached from node ``start`` without passing ``barriers``."""
    seen = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node is None or node in barriers or node in seen:
            continue
        if node in targets:
            return True
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def record(context, input, taps, edits=None, observe=None):
    """Run the explainable program on ``input`` with relevance rules and taps; return the :class:`ForwardPass`."""
    leaf = input.detach().requires_grad_()
    run = Run(context, context.mode, taps, edits, observe)
    with torch.enable_grad():
        output = run(leaf)
    if not isinstance(output, torch.Tensor):
        raise UnsupportedModelError(
            f"the model returned {type(output).__name__}; CRP explains models whose forward returns one tensor of "
            "output scores"
        )
    return ForwardPass(leaf, output, run.taps)


def evaluate(context, input, record=(), edits=None, grad=False):
    """The model's own function (eval mode, canonized) on ``input``: ``(output, {layer: output})``.

    With ``grad``, the outputs are differentiable (the plain gradient); otherwise computed without gradients.
    """
    run = Run(context, "plain", record, edits)
    with torch.enable_grad() if grad else torch.no_grad(), contextlib.nullcontext():
        output = run(input)
    found = {}
    for name, tap in run.taps.items():
        if tap.problem is not None or tap.calls == 0:
            raise CRPError(f"layer {name!r} did not record an output: {tap.problem or 'it did not run'}")
        found[name] = tap.output if grad else tap.activation
    return output, found
