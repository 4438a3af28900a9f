"""Graph canonization: any model's forward pass as an explainable program that shares the model's parameters.

The model is traced with ``torch.fx`` (``torch.nn`` layers stay whole, everything else is traced through), in eval
mode. Every call of the traced graph gets a handler with an LRP rule (:mod:`.ops`, :mod:`.modules`); a BatchNorm
that follows a convolution or linear layer is folded into it (canonization, CRP paper A.3); the factor of a product
that comes from a sigmoid or softmax is a gate, held constant. The user's module names stay the layer names: the
output of every module call, leaf or not (a ResNet block, a transformer layer), can be tapped. The model itself is
never changed.
"""

import dataclasses
import functools

import torch
import torch.fx
from zennit.canonizers import CompositeCanonizer, MergeBatchNorm

from . import ops
from .composites import SIGNED_OUTPUTS
from .errors import ModelForwardError, UnsupportedModelError
from .layers import Convolution, Dense, is_batch_norm, layer_of
from .modules import module_handler
from .state import PASSES, EvalMode, ModelState

TRANSPARENT = {
    "view", "reshape", "permute", "transpose", "expand", "expand_as", "flatten", "unsqueeze", "squeeze", "contiguous",
    "to", "dropout", "getitem", "clone", "type_as", "float", "half", "double", "stochastic_depth",
}  # fmt: skip
GATES = {"sigmoid", "hardsigmoid", "softmax", "_softmax"}
GATE_MODULES = (torch.nn.Sigmoid, torch.nn.Hardsigmoid, torch.nn.Softmax)
_PRODUCTS = {"mul", "rmul", "multiply", "matmul", "mm", "bmm", "einsum", "imul"}
_SOFTMAX_MODULES = (torch.nn.Softmax, torch.nn.LogSoftmax, torch.nn.Softmin)


class UntraceableError(UnsupportedModelError):
    """``torch.fx`` cannot trace the model (the engine then runs it module by module, :mod:`.hooked`)."""


class _Tracer(torch.fx.Tracer):
    """``torch.fx`` tracing that also records which node is the output of every module call, leaf or not."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True
        self.calls = []  # (module name, output node), in the order the calls return

    def call_module(self, m, forward, args, kwargs):
        output = super().call_module(m, forward, args, kwargs)
        if isinstance(output, torch.fx.Proxy):
            self.calls.append((self.path_of_module(m), output.node))
        return output


@dataclasses.dataclass(eq=False)
class Step:
    """One node of the program: its handler, the layers whose output it is, and the values it lets go."""

    node: torch.fx.Node
    handler: object = None
    names: tuple = ()
    free: tuple = ()
    target: object = None


class Graph:
    """A model's forward pass as a program of :class:`Step` s, each with its rule.

    Parameters
    ----------
    model : torch.nn.Module
        The model (traced in eval mode; left as found).
    composite : zennit.core.Composite
        Rules for the layers (``module_map``); its canonizers that change the structure (e.g. zennit's residual
        ``Sum``) apply while tracing; BatchNorm merges are the graph's own.

    Attributes
    ----------
    steps : list[Step]
        The program, in execution order.
    layers : dict[str, int]
        How many times each module is called in one forward pass (a layer for conditions is called once).
    kinds : dict[str, str]
        The module type of each layer.
    """

    def __init__(self, model, composite, example=None, attention="cp"):
        self.model = model
        with PASSES.alone(), EvalMode(model), _StructuralCanonizers(model, composite):
            graph, calls, modules = _trace(model, example)
        merges = _merges(graph, modules)
        rules = templates(model, composite, _signed_outputs(graph, modules, merges))
        user = dict(model.named_modules())
        names = {}
        self.layers, self.kinds = {}, {}
        for name, node in calls:
            if name and name in user:
                names.setdefault(node, []).append(name)
                self.layers[name] = self.layers.get(name, 0) + 1
                self.kinds[name] = type(user[name]).__name__
        _functionalize(graph)
        _check(graph, modules)
        self.steps = [
            Step(
                node,
                _handler(node, modules, rules, merges, attention),
                tuple(names.get(node, ())),
                target=_target(node, modules),
            )
            for node in graph.nodes
        ]
        _schedule_frees(self.steps)

    def module(self, name):
        """The user's module called ``name``."""
        return self.model.get_submodule(name)


def _trace(model, example=None):
    """The fx graph of ``model``, its module calls, and its modules by name (those canonizers add included).

    If tracing fails, the model is run on ``example``: an error of its own is a :class:`ModelForwardError`.
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        if example is not None:
            _run_plainly(model, example)
        raise UntraceableError(
            f"the model cannot be traced by torch.fx ({type(error).__name__}: {error}){_location(error)}. Tracing "
            "needs a forward pass whose Python control flow does not depend on the input's values; move such code "
            "out of forward, or into a torch.nn module"
        ) from error
    return graph, tracer.calls, dict(model.named_modules())


def _run_plainly(model, example):
    """Run the model on ``example``; raise :class:`ModelForwardError` if the model itself fails."""
    try:
        with torch.no_grad():
            model(example.detach())
    except Exception as error:
        raise ModelForwardError(
            f"the model raised {type(error).__name__} in its forward pass for an input of shape "
            f"{tuple(example.shape)} ({example.dtype}): {error}"
        ) from error


def _location(error):
    """`` at file:line`` of the innermost frame of the model's own code in ``error``'s traceback."""
    frame, found = error.__traceback__, None
    while frame is not None:
        filename = frame.tb_frame.f_code.co_filename
        if "/torch/" not in filename and "crp_widgets" not in filename:
            found = f" at {filename}:{frame.tb_lineno}"
        frame = frame.tb_next
    return found or ""


class _StructuralCanonizers:
    """The composite's canonizers other than BatchNorm merges, applied while tracing (zennit's public API)."""

    def __init__(self, model, composite):
        self.model = model
        self.canonizers = [c for c in _flat(getattr(composite, "canonizers", None) or []) if not _merges_only(c)]
        self.handles = []

    def __enter__(self):
        for canonizer in self.canonizers:
            before = ModelState(self.model)
            self.handles += canonizer.apply(self.model)
            after = ModelState(self.model)
            if before.tensors != after.tensors or before.versions != after.versions:
                self.__exit__()
                raise UnsupportedModelError(
                    f"the canonizer {type(canonizer).__name__} changes the model's parameters; the engine merges "
                    "BatchNorm layers itself and takes canonizers that change the model's structure only"
                )

    def __exit__(self, *exc):
        for handle in reversed(self.handles):
            handle.remove()
        self.handles = []


def _flat(canonizers):
    for canonizer in canonizers:
        if isinstance(canonizer, CompositeCanonizer):
            yield from _flat(canonizer.canonizers)
        else:
            yield canonizer


def _merges_only(canonizer):
    return isinstance(canonizer, MergeBatchNorm)


def templates(model, composite, signed):
    """The composite's rule for every module, as zennit assigns them (``module_map`` in ``named_modules`` order).

    The composite's context names the layers whose outputs stay ``signed`` (see :class:`.DefaultComposite`).
    """
    context = {SIGNED_OUTPUTS: signed}
    return {name: composite.module_map(context, name, module) for name, module in model.named_modules()}


_RECTIFIERS = (torch.nn.ReLU, torch.nn.ReLU6)
_ON_THE_WAY = {"add", "iadd", "cat", "view", "reshape", "flatten", "contiguous", "channel_shuffle", "dropout"}


def _signed_outputs(graph, modules, merges):
    """The convolution and linear layers whose outputs reach something other than a ReLU (they stay signed).

    On the way to the ReLU may lie a folded BatchNorm, dropout, a residual addition, a concatenation or a reshape.
    """
    rectified = {}

    def reaches_relu(node):
        if node not in rectified:
            rectified[node] = False  # a cycle cannot occur in a traced graph; this only guards the recursion
            rectified[node] = bool(node.users) and all(_rectifies(user) for user in node.users)
        return rectified[node]

    def _rectifies(user):
        if user.op == "call_module":
            module = modules[user.target]
            if isinstance(module, _RECTIFIERS):
                return True
            if user in merges or isinstance(module, (torch.nn.Dropout, torch.nn.Identity)):
                return reaches_relu(user)
            return False
        if user.op in ("call_function", "call_method"):
            name = _name(user)
            if name in ("relu", "relu_", "relu6"):
                return True
            return name in _ON_THE_WAY and reaches_relu(user)
        return False

    return {
        node.target
        for node in graph.nodes
        if node.op == "call_module" and _mergeable(modules[node.target]) and not reaches_relu(node)
    }


def _merges(graph, modules):
    """``{BatchNorm node: the convolution or linear node it folds into}`` (the layer's only consumer)."""
    merges = {}
    for node in graph.nodes:
        if node.op != "call_module" or not is_batch_norm(modules[node.target]) or len(node.args) != 1:
            continue
        source = node.args[0]
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and _mergeable(modules[source.target])
        ):
            merges[node] = source
    return merges


def _mergeable(module):
    return isinstance(layer_of("", module), (Convolution, Dense))


def _handler(node, modules, templates, merges, attention):
    """The handler of one node."""
    if node in merges:  # folded into the layer before it
        return ops.Plain(node.target, _identity)
    if node.op == "call_module":
        module = modules[node.target]
        merged = next((modules[bn.target] for bn, target in merges.items() if target is node), None)
        out_proj = None
        if isinstance(module, torch.nn.MultiheadAttention):
            name = f"{node.target}.out_proj"
            out_proj = module_handler(name, module.out_proj, templates.get(name))
        return module_handler(node.target, module, templates.get(node.target), merged, out_proj)
    if node.op in ("call_function", "call_method"):
        handler = ops.handler(node.target, _where(node))
        gates = _gates(node, modules, attention)
        if gates and isinstance(handler, ops.LinearOperation):
            handler.constant |= gates
        return handler
    return None


def _target(node, modules):
    """What a node calls: its module, or its function (a tensor method by name)."""
    return modules[node.target] if node.op == "call_module" else node.target


def _where(node):
    """A call's place in the model, for messages: the operation, the node and the model's source line."""
    target = node.target if isinstance(node.target, str) else ops.function_name(node.target)
    lines = (node.stack_trace or "").strip().splitlines()
    frames = [
        (lines[i].strip(), lines[i + 1].strip()) for i in range(len(lines) - 1) if lines[i].strip().startswith("File")
    ]
    own = [frame for frame in frames if "/torch/" not in frame[0]]
    line = f" ({own[-1][0]}: {own[-1][1]})" if own else ""
    return f"`{target}` (graph node {node.name}){line}"


def _source(node, modules):
    """The node a value comes from, through operations that only reshape, select or copy it."""
    while isinstance(node, torch.fx.Node):
        if (node.op in ("call_method", "call_function") and _name(node) in TRANSPARENT and node.args) or (
            node.op == "call_module" and isinstance(modules[node.target], (torch.nn.Dropout, torch.nn.Identity))
        ):
            node = node.args[0]
        else:
            return node
    return node


def _name(node):
    return node.target if isinstance(node.target, str) else ops.function_name(node.target)


def _is_gate(node, modules, attention):
    """Whether a value is a gate: a sigmoid's output, or a softmax's under CP-LRP (AttnLRP explains softmaxes)."""
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_module":
        module = modules[node.target]
        return isinstance(module, GATE_MODULES) and (attention == "cp" or not isinstance(module, torch.nn.Softmax))
    name = _name(node)
    return (
        node.op in ("call_function", "call_method") and name in GATES and (attention == "cp" or "softmax" not in name)
    )


def _gates(node, modules, attention):
    """Positions of a product's factors that come from a gate (held constant); none if every factor does."""
    if _name(node) not in _PRODUCTS:
        return set()
    factors = {i for i, arg in enumerate(node.args) if isinstance(arg, torch.fx.Node)}
    gates = {i for i in factors if _is_gate(_source(node.args[i], modules), modules, attention)}
    return gates if gates != factors else set()


def _check(graph, modules):
    """Refuse what no rule can fix: a model that ends with a softmax."""
    for node in graph.nodes:
        if node.op == "output":
            result = node.args[0]
            source = _source(result, modules) if isinstance(result, torch.fx.Node) else None
            if isinstance(source, torch.fx.Node) and (
                (source.op == "call_module" and isinstance(modules[source.target], _SOFTMAX_MODULES))
                or (source.op != "call_module" and _name(source) in ops._SOFTMAX)
            ):
                raise UnsupportedModelError(
                    "the model ends with a softmax: LRP explains the model's output scores (logits), starting from "
                    "the output value (A.3). Pass the model without its final softmax"
                )


def _functionalize(graph):
    """Make in-place method calls out of place: later users of the changed value read the call's result instead.

    ``x.relu_()`` followed by a use of ``x`` then computes as the model does, and the value before the call (a
    layer's output, say) stays as it was for the taps and rules that keep it.
    """
    position = {node: index for index, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        name = node.target if node.op == "call_method" else ""
        if name.endswith("_") and not name.startswith("_") and node.args and isinstance(node.args[0], torch.fx.Node):
            after = position[node]
            node.args[0].replace_all_uses_with(node, delete_user_cb=lambda user, after=after: position[user] > after)


def _identity(value):
    return value


def _schedule_frees(steps):
    """Let every value go after the last step that reads it."""
    last = {}
    for index, step in enumerate(steps):
        for value in step.node.all_input_nodes:
            last[value] = index
    frees = {}
    for node, index in last.items():
        frees.setdefault(index, []).append(node)
    for index, step in enumerate(steps):
        step.free = tuple(frees.get(index, ()))


def attribute(model, target):
    """The attribute ``target`` (a dotted path) of ``model``, detached if it is a tensor."""
    value = functools.reduce(getattr, target.split("."), model)
    return value.detach() if isinstance(value, torch.Tensor) else value
