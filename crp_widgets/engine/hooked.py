"""The module-level path, for a model that ``torch.fx`` cannot trace (Python control flow on the input's values).

The model runs as it is, in eval mode, under a torch function mode: every torch function its code calls outside
its layers gets the rule :mod:`.ops` gives it, and the operation of each ``torch.nn`` layer (its first call on its
input, e.g. ``F.conv2d``) is computed by the layer's handler (:mod:`.modules`, the composite's rule). Forward hooks
(registered for one pass and removed after it) follow which module runs and tap the layers. Without the graph there
are no BatchNorm merges (a BatchNorm is an affine layer with the epsilon rule) and the default rules do not know
which convolutions' outputs stay signed (z+ everywhere); gates are found as the pass runs (sigmoid and softmax
outputs, and their reshapes); every other rule is the traced graph's.
"""

import weakref

import torch
from torch.overrides import TorchFunctionMode

from . import ops
from .graph import GATE_MODULES, GATES, TRANSPARENT
from .modules import module_handler
from .state import EvalMode

# layers whose code does more than one operation on their input (attention): replaced as a whole after they ran
_WHOLE = (torch.nn.MultiheadAttention,)
# calls on a layer's input that read it without computing the layer's output
_READS = {"dim", "size", "shape", "__get__", "numel", "ndimension", "is_floating_point", "get", "is_contiguous"}


class HookedGraph:
    """What :class:`~crp_widgets.engine.graph.Graph` offers, for a model run module by module.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    templates : dict[str, object]
        The composite's rule for every module (see ``graph._templates``).
    reason : str
        Why the model could not be traced (said where a result depends on the path taken).
    """

    def __init__(self, model, templates, reason):
        self.model, self.reason = model, reason
        modules = dict(model.named_modules())
        self.names = {}
        for name, module in modules.items():
            self.names.setdefault(module, []).append(name)
        self.layers = dict.fromkeys((name for name in modules if name), 1)
        self.kinds = {name: type(module).__name__ for name, module in modules.items() if name}
        self.handlers = {}
        for name, module in modules.items():
            if name and _leaf(module):
                out_proj = None
                if isinstance(module, torch.nn.MultiheadAttention):
                    out_proj = module_handler(f"{name}.out_proj", module.out_proj, templates.get(f"{name}.out_proj"))
                self.handlers[module] = module_handler(name, module, templates.get(name), None, out_proj)

    def execute(self, run, input):
        """Run the model on ``input`` under the rules, in eval mode; return its output."""
        mode = _Rules(run, self)
        hooks = []
        try:
            for module in self.names:
                hooks.append(module.register_forward_pre_hook(mode.enter, with_kwargs=True))
                hooks.append(module.register_forward_hook(mode.leave))
            with EvalMode(self.model), mode:
                return self.model(input)
        finally:
            for hook in hooks:
                hook.remove()


def _leaf(module):
    """A ``torch.nn`` layer (as ``torch.fx`` keeps it whole)."""
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, torch.nn.Sequential)


class _Rules(TorchFunctionMode):
    """The torch function mode of one pass: rules for the calls, the layers' handlers for their operations."""

    def __init__(self, run, graph):
        super().__init__()
        self.run, self.graph = run, graph
        self.frames = []  # per running module: [module, args, kwargs, done]
        self.quiet = False  # inside the hooks: the calls are the engine's own
        self.gates = []  # weak references to this pass's sigmoid and softmax outputs (and their reshapes): gates

    def enter(self, module, args, kwargs):
        self.frames.append([module, args, kwargs, False])

    def leave(self, module, args, output):
        _, args, kwargs, _ = self.frames.pop()
        self.quiet = True
        try:
            value = output
            if isinstance(module, _WHOLE):  # computed as the module computes it, then replaced by its rules
                value = self.graph.handlers[module](self.run, args, kwargs)
            if isinstance(module, GATE_MODULES) and isinstance(value, torch.Tensor):
                self.gates.append(weakref.ref(value))
            for name in self.graph.names[module]:
                if name:
                    value = self.run.enter(name, value)
            return None if value is output else value
        finally:
            self.quiet = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.quiet:
            return func(*args, **kwargs)
        frame = self.frames[-1] if self.frames else None
        handler = self.graph.handlers.get(frame[0]) if frame is not None else None
        name = ops.function_name(func)
        if handler is not None:
            if isinstance(frame[0], _WHOLE):
                return func(*args, **kwargs)
            first = args[0] if args else None
            if not frame[3] and first is frame[1][0] and name not in _READS:
                frame[3] = True  # the layer's own operation
                return handler(self.run, frame[1], frame[2])
            return func(*args, **kwargs)
        where = f"`{name}` in {self._module_name(frame)} (the model runs module by module: {self.graph.reason})"
        if ops.in_place(name):
            if not (args and ops.data(args[0])):
                return func(*args, **kwargs)  # a constant changed in place, as the code means it
            if name not in ops.REBOUND:
                raise ops.UnsupportedModelError(
                    f"{where} changes an activation in place; the rules need out-of-place code"
                )
        handler = ops.handler(func, where)
        gates = {i for i, arg in enumerate(args) if self._gate(arg)}
        if gates and isinstance(handler, ops.LinearOperation) and len(gates) < sum(ops.data(a) for a in args):
            handler.constant |= gates  # a gate's factor is held constant (the signal takes all)
        result = handler(self.run, args, kwargs)
        if isinstance(result, torch.Tensor) and (name in GATES or (name in TRANSPARENT and 0 in gates)):
            self.gates.append(weakref.ref(result))
        return result

    def _gate(self, value):
        return isinstance(value, torch.Tensor) and any(gate() is value for gate in self.gates)

    def _module_name(self, frame):
        if frame is None:
            return "the model's forward"
        names = [name for name in self.graph.names.get(frame[0], []) if name]
        return f"module {names[0]!r}" if names else "the model's forward"
