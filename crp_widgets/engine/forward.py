"""One recorded forward pass of the canonized model, and the backward passes that reuse it."""

import contextlib
import itertools
import threading
import weakref

import torch
import torch.nn.modules.module as _module_hooks
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, MergeBatchNorm

from .audit import FunctionalAudit
from .composites import rule_plan
from .errors import CRPError, ModelForwardError, UnsupportedModelError
from .propagation import Tap, in_place, make_hooks, releasing, state_signature

_MODEL_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()
# Per model and composite, what the audit of the first forward pass found: whether the forward code works in place
# (layer outputs are then copied), or the error that makes the model unexplainable.
_AUDITS = weakref.WeakKeyDictionary()


def model_lock(model):
    """The lock serialising recorded forward passes of one model (their hooks and canonizers must not overlap)."""
    with _LOCKS_LOCK:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def preserved(model, modules=None):
    """Evaluate ``model`` in eval mode and leave it exactly as found: modes restored, no hooks, no canonizers.

    ``modules``: all of the model's modules, when the caller has them.
    """
    training = [module for module in (all_modules(model) if modules is None else modules) if module.training]
    for module in training:
        module.training = False
    try:
        yield model
    finally:
        for module in training:
            module.training = True


@contextlib.contextmanager
def canonized(model, composite, epoch=None, modules=None):
    """``model`` under its lock, in eval mode, with ``composite``'s canonizers applied; left as found afterwards.

    Activations and relevances are those of the canonized model (A.3): every pass that reads a layer goes here.
    BatchNorm merges are computed once and replayed while the model's modules and parameters are unchanged
    (:class:`_Merges`). ``epoch``: the model's :func:`model_state`, and ``modules``: all its modules, when the
    caller has them.
    """
    with model_lock(model), preserved(model, modules):
        applied = []
        try:
            for canonizer in _canonizers(composite):
                if isinstance(canonizer, MergeBatchNorm):
                    applied += _Merges.of(model, canonizer, epoch).apply()
                else:
                    applied += canonizer.apply(model)
            yield model
        finally:
            for canonizer in reversed(applied):
                canonizer.remove()


def _keeps_data(composite):
    """Whether every canonizer leaves the data of parameters and buffers as it is.

    BatchNorm merges are applied by stand-in tensors (:class:`_Merges`), attribute canonizers replace methods and
    add modules; other canonizers may rewrite data in every pass.
    """
    canonizers = _canonizers(composite)
    return all(isinstance(canonizer, (MergeBatchNorm, AttributeCanonizer)) for canonizer in canonizers)


def _canonizers(composite):
    """The composite's canonizers, zennit's composite canonizers replaced by their parts, in order."""
    return _flat(getattr(composite, "canonizers", []) or [])


def _per_model(table, model):
    """``table[model]`` (a weak dictionary by model), made empty on first use: per-model caches keyed weakly."""
    entry = table.get(model)
    if entry is None:
        entry = table[model] = weakref.WeakKeyDictionary()
    return entry


def _flat(canonizers):
    """The canonizers with zennit's composite canonizers replaced by their parts, in order."""
    for canonizer in canonizers:
        if isinstance(canonizer, CompositeCanonizer):
            yield from _flat(canonizer.canonizers)
        else:
            yield canonizer


# Per model and MergeBatchNorm canonizer: the merges of its last application (see ``_Merges``).
_MERGES = weakref.WeakKeyDictionary()


class _Merges:
    """The BatchNorm merges one zennit ``MergeBatchNorm`` canonizer makes on one model, applied by stand-ins.

    Merging recomputes every merged weight on every pass; on a small model that costs a sizeable part of a whole
    forward and backward pass. zennit's merge is applied once (it merges into the parameters' data) and removed at
    once (its ``remove`` restores the data); its merged values are kept in stand-in tensors. Applying the merge puts
    the stand-ins in the originals' places in the modules, removing it puts the originals back: the user's tensors
    are never changed, and tensors a recorded graph saved keep their (merged) values after the pass. The stand-ins
    are reused while the model has the same modules and their parameters and buffers are the same tensors at the
    same version (nothing assigned, nothing changed in place).
    """

    def __init__(self, model, canonizer):
        self.model = weakref.ref(model)
        instances = canonizer.apply(model)
        try:
            self.swaps = [swap for instance in instances for swap in _stand_ins(instance)]
            self.modules = [module for instance in instances for module in (*instance.linears, instance.batch_norm)]
        finally:
            for instance in reversed(instances):
                instance.remove()
        self.signature = self._signature()
        self.epoch = None  # the model state (:func:`model_state`) the merges were last found valid in

    @classmethod
    def of(cls, model, canonizer, epoch=None):
        """The merges of ``canonizer`` on ``model``: the last ones if still valid, else new ones.

        ``epoch``: the model's :func:`model_state`; while it is the same, nothing needs checking.
        """
        cached = _per_model(_MERGES, model)
        merges = cached.get(canonizer)
        unchanged = epoch is not None and epoch == getattr(merges, "epoch", None)
        if merges is None or not (unchanged or merges.signature == merges._signature()):
            merges = cached[canonizer] = cls(model, canonizer)
        merges.epoch = epoch
        return merges

    def apply(self):
        """Put the stand-ins in place; return the objects to ``remove`` afterwards."""
        for store, key, _, stand_in in self.swaps:
            store[key] = stand_in
        return [self] if self.swaps else []

    def remove(self):
        """Put the originals back."""
        for store, key, original, _ in self.swaps:
            store[key] = original

    def _signature(self):
        model = self.model()
        # modules compare by identity, and the tuple keeps them alive: no later module can take over an identity
        return (tuple(all_modules(model)) if model is not None else None, state_signature(self.modules))


def _stand_ins(instance):
    """``(store, key, original, stand-in)`` for every tensor a zennit merge ``instance`` changed (while it is applied).

    A stand-in holds the merged value in a new tensor of the original's kind (a Parameter for a Parameter); a bias
    zennit created for a linear layer without one is its own stand-in, with ``None`` as the original.
    """
    swaps = []
    for linear, (_, original_bias) in zip(instance.linears, instance.linear_params):
        swaps.append((linear._parameters, "weight", linear.weight, _like(linear.weight)))
        if original_bias is None:
            swaps.append((linear._parameters, "bias", None, linear.bias))
        else:
            swaps.append((linear._parameters, "bias", linear.bias, _like(linear.bias)))
    batch_norm = instance.batch_norm
    for key in ("weight", "bias", "running_mean", "running_var"):
        store = batch_norm._parameters if key in batch_norm._parameters else batch_norm._buffers
        swaps.append((store, key, store[key], _like(store[key])))
    return swaps


def _like(tensor):
    """A new tensor holding ``tensor``'s current data (a Parameter with the same ``requires_grad`` for a Parameter)."""
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(tensor.data, requires_grad=tensor.requires_grad)
    return tensor.data


@contextlib.contextmanager
def out_of_place(modules):
    """Run ``modules`` built to work in place (``ReLU(inplace=True)``) out of place; their flags are restored after.

    A recorded pass keeps layer outputs for the rules and taps; an in-place module would overwrite them, and copying
    its input first costs a whole extra pass over memory that the out-of-place operation does not.
    """
    switched = [module for module in modules if in_place(module)]
    try:
        for module in switched:
            module.inplace = False
        yield
    finally:
        for module in switched:
            module.inplace = True


class ForwardPass:
    """The graph of one forward pass, with a rule on every module and a tap on every tapped layer.

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
        self.input = input
        self.output = output
        self.taps = taps
        self.memo = {}
        self.vectorized = input.is_cuda
        self._input_node = None
        self._bypass = {}
        self._terminal = set()  # merged taps below which an observing pass needs nothing (see ``roots``)

    def tap(self, name):
        """Return the tap of layer ``name``, which must have run exactly once."""
        tap = self.taps[name]
        if tap.calls != 1:
            state = "did not run" if tap.calls == 0 else f"ran {tap.calls} times"
            raise CRPError(
                f"layer {name!r} {state} in the forward pass; conditions and records need a layer that runs exactly "
                "once per forward pass"
            )
        if tap.version is not None and tap.site._version != tap.version:
            raise UnsupportedModelError(
                f"the model's forward code modified the output of layer {name!r} in place after the layer ran; its "
                "activations are lost. Use out-of-place operations (e.g. torch.relu(x) instead of x.relu_())"
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
            Where the relevance is placed (the output, or a tap's ``site`` to start below that tap's mask).
        grad : torch.Tensor
            The initial relevance, shaped like ``start`` (with a leading dimension of k vectors if ``batched``).
        capture : list[torch.Tensor or Tap]
            Where to return the relevance (zeros where none arrives): at a tensor, or at a tapped layer, below its mask
            (a :class:`Tap`, from :meth:`tap`). At a tap's ``output`` the relevance is that before its mask.
        masks : dict[str, torch.Tensor], optional
            Condition masks by layer name, applied at those taps (Eq. 8).
        batched : bool
            Propagate each of the k slices of ``grad`` separately. With ``vectorized`` (the default on GPUs) they run
            as one ``torch.func.vmap`` pass; on CPUs a loop over the retained graph measured faster (no k-fold
            intermediates; see benchmarks/).
        path_masks : dict[str, torch.Tensor], optional
            With ``batched``: masks with a leading dimension k, one per slice.
        create_graph : bool
            Make the result differentiable with respect to ``grad`` (used for Eq. 11-12 over all channels at once).
        last : bool
            This is the last backward pass on this forward pass: its graphs free their memory as it goes (scans).
        observe : callable, optional
            Called as ``observe(name, relevance)`` with the relevance of every tapped layer the pass reaches, as it
            passes (``capture`` then needs only :meth:`roots`; reference scans).

        Returns
        -------
        tuple[torch.Tensor, ...]
            The relevance at each ``capture`` tensor (with a leading dimension k if ``batched``).
        """
        masks = dict(masks or {})
        path_masks = dict(path_masks or {})
        taps = [self.tap(name) for name in {**masks, **path_masks}]
        if observe is not None:
            taps = list(self.taps.values())
            for tap in taps:
                tap.observer = observe
                tap.terminal = tap in self._terminal
        # a start at a layer's site is below its mask, also where the tap is the rule's node (``Tap.merged``)
        started = [tap for tap in self.taps.values() if tap.merged and tap.site is start]
        for tap in started:
            tap.started = True
        # relevance below the mask of a tap that is a rule's node: the relevance at its site, masked here
        masked = [isinstance(c, Tap) and c.merged for c in capture]
        tensors = [c.site if isinstance(c, Tap) else c for c in capture]
        if last:
            for tap in self.taps.values():
                tap.below = None  # nothing needs the module inputs after this pass: let them go as it proceeds

        def run(relevance, *per_slice):
            for name, mask in zip(path_masks, per_slice):
                self.taps[name].mask = mask
            grads = torch.autograd.grad(
                start, tensors, relevance, retain_graph=not last, allow_unused=True, create_graph=create_graph
            )
            grads = [torch.zeros_like(c) if g is None else g for c, g in zip(tensors, grads)]
            for index, tap in enumerate(capture):
                if masked[index] and tap.mask is not None and not tap.started:
                    grads[index] = grads[index] * tap.mask
            return tuple(grads)

        try:
            for name, mask in masks.items():
                self.taps[name].mask = mask
            if not batched:
                with releasing() if last else contextlib.nullcontext():
                    return run(grad)
            if self.vectorized:
                return torch.func.vmap(run)(grad, *path_masks.values())
            results = [run(*slices) for slices in zip(grad, *path_masks.values())]
            return tuple(torch.stack(parts) for parts in zip(*results))
        finally:
            for tap in taps:
                tap.mask = None
                tap.observer = None
                tap.terminal = False
            for tap in started:
                tap.started = False

    def input_node(self):
        """The autograd node that accumulates the input's gradient."""
        if self._input_node is None:
            probe = self.input.view_as(self.input)
            self._input_node = probe.grad_fn.next_functions[0][0]
        return self._input_node

    def bypasses(self, name):
        """Whether some relevance reaches the input without passing layer ``name`` (e.g. a residual shortcut)."""
        if name not in self._bypass:
            self._bypass[name] = _reaches(self.output.grad_fn, {self.input_node()}, {self.tap(name).node})
        return self._bypass[name]

    def roots(self):
        """What a backward pass must reach so that it passes every tap (the ``capture`` for ``observe``).

        The taps whose relevance reaches the input without passing another tap (the lowest layers), and those whose
        relevance does not reach the input at all: their sites, or for a tap that is a rule's node, its input. Such
        a tap whose relevance reaches no other tap is terminal in the observing pass: its rule does not run.
        """
        taps = [tap for tap in self.taps.values() if tap.calls == 1 and tap.site.grad_fn is not None]
        nodes = {tap.node for tap in taps}
        target = {self.input_node()}
        roots = []
        self._terminal = set()
        for tap in taps:
            # the search starts below the tap's mask: at the site's node, or past the tap's own (rule) node
            start, barriers = (tap.node, nodes - {tap.node}) if tap.merged else (tap.site.grad_fn, nodes)
            if _reaches(start, target, barriers) or not _reaches(start, target, set()):
                roots.append(tap.below if tap.merged else tap.site)
                if tap.merged and not _reaches(tap.node, nodes - {tap.node}, set()):
                    self._terminal.add(tap)
        return roots


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


def model_state(model):
    """Which modules the model has and which tensors their parameters and buffers are, at which version.

    Changes when a module, a parameter or a buffer is replaced or a tensor is changed in place: the key of
    everything computed from the model once (the forward cache, BatchNorm merges, modified parameters).
    """
    modules = all_modules(model)
    # the modules themselves (compared by identity) and the signature keep everything they name alive: no module or
    # tensor created later can take over the identity (and memory) of one they name and pass for it
    parts = tuple(modules), state_signature(modules)
    # the state found last time when nothing changed: the caches keyed on it then compare it by identity
    last = _STATES.get(model)
    if last is not None and last.parts == parts:
        return last
    state = _STATES[model] = ModelState(parts)
    return state


class ModelState:
    """The value of :func:`model_state`: compared by its parts, hashed once (it is part of every cache key).

    Its parts hold the modules and tensors they name: none of them is freed while a key holds the state.
    """

    __slots__ = ("_hash", "parts")

    def __init__(self, parts):
        self.parts = parts
        self._hash = hash(parts)

    def __eq__(self, other):
        return self is other or (type(other) is ModelState and self.parts == other.parts)

    def __hash__(self):
        return self._hash


# Per model: its last state (:func:`model_state`)
_STATES = weakref.WeakKeyDictionary()


def all_modules(model):
    """``model`` and its submodules, each once, parents before children (``model.modules()``, in a cheaper walk).

    Every pass takes the model's state: building no names saves most of ``modules()``' cost.
    """
    found = [model]
    seen = {id(model)}
    for module in found:  # the list grows while it is walked
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                found.append(child)
    return found


def record_forward(model, input, composite, tap_names, observe=None, epoch=None):
    """Run one forward pass of ``model`` with ``composite``'s canonizers and rules and taps on ``tap_names``.

    The canonizers and hooks are removed before returning; the recorded graph keeps what later backward passes need.

    Parameters
    ----------
    model : torch.nn.Module
        The user's model (left exactly as found).
    input : torch.Tensor
        A validated, batched input.
    composite : zennit.core.Composite
        Rules and canonizers.
    tap_names : Iterable[str]
        Module names to tap.
    observe : callable, optional
        Stream the tapped layers' activations to ``observe(name, activation)`` as each layer runs instead of keeping
        them (reference scans); in-place modules then stay in place where nothing needs their input afterwards.
    epoch : tuple, optional
        The model's :func:`model_state` when the caller has it: caches keyed on the model's parameters are then
        checked once for the whole model instead of module by module.

    The first forward pass of a model with a composite also audits its forward code for operations no rule can
    reach (see :mod:`.audit`); the verdict is kept for later passes.

    Returns
    -------
    ForwardPass
    """
    leaf = input.detach().requires_grad_()
    taps = {name: Tap(name) for name in tap_names}
    counter = itertools.count()
    known = _per_model(_AUDITS, model).get(composite)
    if known is None and leaf.shape[0] > 1:
        # audit on one sample: the audited pass copies every layer output, which a large batch pays dearly for
        with contextlib.suppress(ModelForwardError):  # the model may need the whole batch: audit on it below
            record_forward(model, input[:1], composite, ())
        known = _AUDITS[model].get(composite)
    if isinstance(known, UnsupportedModelError):
        raise UnsupportedModelError(*known.args)
    checker = FunctionalAudit() if known is None else None
    copy = known is not False  # until the audit says the forward code works in place nowhere, copy layer outputs
    handles = []
    fused = []
    live = []  # propagators whose fused forwards connect their modules in this pass (no hooks)
    streamed = observe is not None and not copy
    layout = _Layout.current(model, composite, epoch)
    with canonized(model, composite, epoch, None if layout is None else layout.all):
        if layout is None:
            layout = _Layout.of(model, composite, epoch)
        modules = layout.modules
        # a streamed pass leaves in-place modules in place (make_hooks gives them an alias)
        with out_of_place(() if streamed else layout.in_place):
            try:
                plan = layout.fuse(fused, fuse_branches=not copy and leaf.shape[0] == 1)
                # hooks may run inside the modules' forwards (:class:`_Wrapped`) unless they are audited or global
                # module hooks are registered, whose order relative to the pass's hooks could matter
                wrap = checker is None and not any(getattr(_module_hooks, name, None) for name in _GLOBAL_HOOKS)
                hooked = dict.fromkeys(plan)
                hooked.update({modules[name]: name for name in taps})
                forwards = set(fused)
                for module, name in hooked.items():
                    propagator = plan.get(module)
                    # nothing else hooks the module: the pass may run inside its forward
                    inside = wrap and not _hooked(module)
                    if inside and module in forwards and propagator is not None:
                        # the module's fused forward applies the rule and enters the tap itself
                        propagator.live = (taps.get(name), counter, observe)
                        live.append(propagator)
                        continue
                    pre_hook, hook = make_hooks(module, propagator, taps.get(name), counter, copy, observe)
                    if pre_hook is not None:
                        handles.append(module.register_forward_pre_hook(pre_hook))
                    handles.append(_attach(module, hook, wrap=inside and pre_hook is None))
                if checker is not None:
                    for module in modules.values():
                        if module in plan or not any(True for _ in module.children()):
                            handles.append(module.register_forward_pre_hook(checker.enter, prepend=True))
                            handles.append(module.register_forward_hook(checker.leave))
                output = _run(model, leaf, checker)
            finally:
                for handle in reversed(handles):  # a wrapped forward restores the one it wrapped
                    handle.remove()
                for module in fused:
                    del module.__dict__["forward"]
                for propagator in live:
                    propagator.live = None
    if checker is not None:
        try:
            _AUDITS[model][composite] = checker.verdict()
        except UnsupportedModelError as error:
            _AUDITS[model][composite] = error
            raise
    if not isinstance(output, torch.Tensor):
        raise UnsupportedModelError(
            f"the model returned {type(output).__name__}; CRP explains models whose forward returns one tensor of "
            "output scores"
        )
    return ForwardPass(leaf, output, taps)


class _Layout:
    """The canonized model as a pass sees it: its modules by name, those working in place, the rules' plan.

    Kept per model and composite while the model's state (:func:`model_state`) is the same object, for
    composites whose canonizers add no modules (BatchNorm merges, which swap tensors only); else built per pass.
    Built inside the canonized model.
    """

    def __init__(self, model, composite, epoch):
        named = list(model.named_modules())
        self.epoch = epoch
        self.modules = dict(named)
        self.all = list(self.modules.values())
        self.in_place = [module for module in self.all if in_place(module)]
        self.plan = rule_plan(model, composite, named)
        # the canonized parameters follow from the model's own while every canonizer keeps data as it is
        self.known_state = epoch if _keeps_data(composite) else None
        self.forwards = {}  # fuse_branches -> (plan left, [(module, forward)]) of :meth:`fuse`

    @staticmethod
    def _keeps_structure(composite, epoch):
        canonizers = _canonizers(composite)
        return epoch is not None and all(isinstance(canonizer, MergeBatchNorm) for canonizer in canonizers)

    @classmethod
    def current(cls, model, composite, epoch):
        """The layout kept for ``epoch``, or ``None``."""
        layout = _LAYOUTS.get(model, {}).get(composite)
        return layout if layout is not None and epoch is not None and layout.epoch is epoch else None

    @classmethod
    def of(cls, model, composite, epoch):
        """A new layout, kept for later passes where the canonizers add no modules."""
        layout = cls(model, composite, epoch)
        if cls._keeps_structure(composite, epoch):
            _per_model(_LAYOUTS, model)[composite] = layout
        else:
            layout.epoch = None  # never current
        return layout

    def fuse(self, fused, fuse_branches):
        """Install the rules' forwards (:func:`_fuse`, found once per kept layout); return the plan left for hooks.

        The modules given a forward are appended to ``fused``.
        """
        for propagator in self.plan.values():
            propagator.epoch = self.known_state
        start = len(fused)
        found = self.forwards.get(fuse_branches)
        if found is not None:
            left, forwards = found
            for module, forward in forwards:
                own = module.__dict__
                if "forward" in own:  # a forward of the user's own (an instance attribute) came: decide anew
                    for installed in fused[start:]:
                        del installed.__dict__["forward"]
                    del fused[start:]
                    break
                own["forward"] = forward
                fused.append(module)
            else:
                return left
        left = _fuse(self.plan, fused, fuse_branches)
        if self.epoch is not None:
            self.forwards[fuse_branches] = left, [(module, module.__dict__["forward"]) for module in fused[start:]]
        return left


# Per model and composite: the last :class:`_Layout`
_LAYOUTS = weakref.WeakKeyDictionary()


# keys of hooks attached by ``_attach``: negative, so that they never meet torch's own (counting up from zero)
_HOOK_KEYS = itertools.count(-1, -1)


class _Attached:
    """A forward hook put straight into a module's hook table (``register_forward_hook`` costs ~10x more)."""

    __slots__ = ("key", "table")

    def __init__(self, table, key):
        self.table, self.key = table, key

    def remove(self):
        """Take the hook out again."""
        self.table.pop(self.key, None)


class _Wrapped:
    """A forward hook run by a forward set on the module instance for one pass, around its own forward.

    A module without hooks is called on torch's fast path; a hook makes every call take the slow one, which costs
    more than the hook itself. While the hook runs, the module's forward is the one it had (rules call it).
    """

    __slots__ = ("module", "previous", "wrapper")

    def __init__(self, module, hook):
        self.module = module
        self.previous = previous = module.__dict__.get("forward")
        inner = previous if previous is not None else type(module).forward.__get__(module)
        own = module.__dict__
        # the wrapper puts itself back after the hook: it reads itself from this list, emptied by ``remove`` (no
        # reference cycle outlives the pass: the hook holds the pass's taps)
        self.wrapper = wrapper = []

        def forward(*args, **kwargs):
            output = inner(*args, **kwargs)
            if previous is None:
                del own["forward"]
            else:
                own["forward"] = previous
            try:
                result = hook(module, args, output)
            finally:
                own["forward"] = wrapper[0]
            return output if result is None else result

        wrapper.append(forward)
        own["forward"] = forward

    def remove(self):
        """Put the module's forward back as it was."""
        self.wrapper.clear()
        if self.previous is None:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.__dict__["forward"] = self.previous


def _hooked(module):
    """Whether ``module`` has hooks of its own."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _attach(module, hook, wrap=False):
    """Attach a forward hook for one pass; a pass attaches one per hooked module, so its cost counts.

    ``wrap``: the hook runs inside the module's forward (:class:`_Wrapped`); only for a module without hooks of its
    own (:func:`_hooked`), whose order relative to this one could matter.
    """
    if wrap:
        return _Wrapped(module, hook)
    table = getattr(module, "_forward_hooks", None)
    if not isinstance(table, dict):  # a torch without the table: the public way
        return module.register_forward_hook(hook)
    key = next(_HOOK_KEYS)
    table[key] = hook
    return _Attached(table, key)


def _fuse(plan, fused, fuse_branches):
    """Give modules whose rule can use the module's own forward a forward of the rule's; return the plan left.

    A rule's ``native_forward`` computes the module's output such that autograd's gradient of it is the rule: the
    module leaves the plan (it needs no rule node). ``fuse_branches`` (one sample, no copies) is passed on to it;
    with it, a rule's ``fused_forward`` computes its branches with the module's output (see
    ``BasicRule.fused_forward``). The forwards are instance attributes for the duration of one pass; modules that
    already carry an instance ``forward`` are left alone. The modules changed are appended to ``fused``.
    """
    left = {}
    for module, propagator in plan.items():
        forward = propagator.native_forward(module, fuse_branches)
        if forward is None:
            left[module] = propagator
            if fuse_branches and "forward" not in module.__dict__:
                forward = propagator.fused_forward(module)
        if forward is not None:
            fused.append(module)
            module.__dict__["forward"] = forward
    return left


def _run(model, leaf, checker):
    """Call the model, turning its own exceptions into a :class:`ModelForwardError`."""
    try:
        with torch.enable_grad(), checker if checker is not None else contextlib.nullcontext():
            return model(leaf)
    except CRPError:
        raise
    except Exception as error:
        raise _forward_error(error, leaf) from error


def _forward_error(error, leaf):
    return ModelForwardError(
        f"the model raised {type(error).__name__} in its forward pass for an input of shape {tuple(leaf.shape)} "
        f"({leaf.dtype}): {error}"
    )
