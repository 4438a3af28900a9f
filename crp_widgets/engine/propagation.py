"""Executing zennit's LRP rules on one recorded forward pass.

A zennit composite decides which rule belongs to which module; this module executes those rules. zennit's own hooks
recompute every layer's modified forward inside each backward pass and also run the plain gradient they discard.
Here a rule prepares its local graph once, at forward time, and each later backward pass only applies
vector-Jacobian products to it, so that many backward passes (channels, conditions, classes) share one forward.
The numbers are zennit's: the same modifiers, gradient mappers and reducers are evaluated (see the tests).

Every module with a rule returns its output through a ``_Rule`` node that connects the output directly to the
module's input, so relevance never passes through the module's plain gradient. Every tapped layer (a layer that can
carry a condition or a record) adds a ``_Tap`` node that masks the relevance passing it (Eq. 8). Forward hooks
(:func:`make_hooks`) wire the modules in; for one sample, where each layer's fixed costs count, a rule may run the
module itself instead (``Propagator.native_forward``, ``Propagator.fused_forward``).
"""

import contextlib
import dataclasses
import threading
import weakref

import torch
from zennit.core import BasicHook, Hook, ParamMod, Stabilizer
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, NoMod, Norm, Pass, WSquare, ZBox, ZPlus

from .errors import UnsupportedModelError


class Propagator:
    """How relevance passes one module: ``prepare`` once per forward, ``propagate`` once per backward.

    ``epoch``: set before each pass, the model's state (``forward.model_state``) when it determines the module's
    canonized parameters, else ``None``; caches keyed on parameters may use it instead of checking the module.
    """

    epoch = None
    merged = None  # (module, key, scale) of the last :func:`merged_scale` check
    # (tap, counter, observe) while a pass lets the module's fused forward connect it (no hook): see ``connect``
    live = None

    def admit(self, module):
        """Called before the module runs; raise to refuse a module that cannot be explained."""

    def prepare(self, module, input, shared=False):
        """Return the state that ``propagate`` needs, computed while the module's canonized parameters are set.

        ``shared``: ``input`` may be kept as it is, without a copy (the forward code modifies nothing in place).
        """
        return None

    def propagate(self, state, relevance):
        """Return the relevance at the module's input for the ``relevance`` at its output."""
        raise NotImplementedError

    def native_forward(self, module, single=False):
        """A forward whose autograd gradient is this rule (the module then needs no rule node), or ``None``.

        ``single``: the pass is of one sample, where a layer's fixed costs outweigh its arithmetic.
        """
        return None

    def fused_forward(self, module):
        """A forward for one sample that computes what ``prepare`` needs on the way, or ``None``.

        While the pass sets ``live``, it also connects the module by the rule's node and enters its tap (the module
        then needs no hook); else it leaves its branches to the hook's ``prepare``.
        """
        return None


class PassRelevance(Propagator):
    """zennit's ``Pass``: the relevance passes element-wise modules unchanged."""

    def propagate(self, state, relevance):
        """Return ``relevance`` as it is."""
        return relevance

    def native_forward(self, module, single=False):
        """One sample: a ReLU or a merged BatchNorm (:func:`merged_scale`) whose gradient is the identity.

        The output is a copy of the input (autograd: the identity) changed in place where autograd does not see it:
        bit for bit the module's output, and no rule node, whose Python calls cost more than the layer's arithmetic
        on one sample. For a batch the copy's pass over memory costs more than the node.
        """
        if not single or "forward" in module.__dict__:
            return None
        if type(module) is torch.nn.ReLU:
            return _identity_gradient(torch.Tensor.relu_)
        scale = merged_scale(module, self)
        if scale is None:
            return None
        return _identity_gradient(lambda output: output.mul_(_channelwise(scale, output.ndim)))


def _identity_gradient(change):
    """A forward ``input -> change(copy of input)`` whose gradient is the identity.

    ``change`` acts in place where autograd does not see it; the copy's node saves nothing, so no saved tensor breaks.
    """

    def forward(input):
        output = input.clone()
        change(output.detach())  # an alias of the copy, unseen by autograd (cheaper than a no_grad context)
        return output

    return forward


def _channelwise(values, ndim):
    """``[C]`` values shaped to broadcast over the channel axis (1) of a ``[B, C, ...]`` tensor of rank ``ndim``."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def merged_scale(module, propagator):
    """The per-channel scale a canonized BatchNorm (eval mode) multiplies by, if it only scales; else ``None``.

    zennit's ``MergeBatchNorm`` leaves the BatchNorm an identity up to ``1 / sqrt(1 + eps)``: its output is then
    ``input * scale`` bit for bit (the eval-mode kernel computes ``input * scale + shift`` with a zero shift). The
    check is kept in the module's ``propagator`` while the module's parameters and buffers (or the model's state,
    the propagator's ``epoch``) and ``eps`` stay the same.
    """
    if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or "forward" in module.__dict__:
        return None
    epoch = propagator.epoch
    key = epoch if epoch is not None else state_signature((module,)), module.eps
    cached = propagator.merged
    if cached is not None and cached[0] is module and cached[1] == key:
        return cached[2]
    scale = None
    if module.track_running_stats and module.running_var is not None and module.running_mean is not None:
        with torch.no_grad():
            scale = 1 / (module.running_var + module.eps).sqrt()  # as the eval-mode kernel computes it
            if module.weight is not None:
                scale = scale * module.weight
            shift = -module.running_mean * scale
            if module.bias is not None:
                shift = shift + module.bias
        scale = None if shift.any() else scale
    propagator.merged = module, key, scale
    return scale


@contextlib.contextmanager
def detached_state(module):
    """Temporarily replace a module's own parameters and buffers by detached aliases.

    A local graph built inside this context keeps the values of this moment, even after a canonizer later swaps the
    parameters' data back.
    """
    saved = {}
    try:
        for store_name in ("_parameters", "_buffers"):
            store = getattr(module, store_name)
            for key, value in list(store.items()):
                if value is not None:
                    saved[store_name, key] = value
                    store[key] = value.detach()
        yield module
    finally:
        for (store_name, key), value in saved.items():
            getattr(module, store_name)[key] = value


def in_place(module):
    """Whether ``module`` is set to work in place (``inplace=True``).

    Read from the instance (or its class): most modules have no such attribute, and ``nn.Module``'s failing lookup
    builds an exception every time, which a pass over every module would pay for.
    """
    value = module.__dict__.get("inplace")
    return bool(getattr(type(module), "inplace", False) if value is None else value)


def _local_forward(module, input):
    """Run ``module.forward`` (no hooks) on a detached leaf copy of ``input``; return ``(leaf, output)``."""
    leaf = input.detach().requires_grad_()
    with detached_state(module):
        output = module.forward(leaf.clone() if in_place(module) else leaf)
    return leaf, output


class _Release(threading.local):
    active = False  # the default on every thread (no failing attribute lookup)


_RELEASE = _Release()


@contextlib.contextmanager
def releasing():
    """Within this context, backward passes are the last on their graph: local graphs free their memory as they go."""
    _RELEASE.active = True
    try:
        yield
    finally:
        _RELEASE.active = False


def _releasing():
    return _RELEASE.active


def _vjp(outputs, inputs, grad_outputs, retain=False):
    """Vector-Jacobian product on a local graph, kept for later passes unless :func:`releasing` (or ``retain``).

    Differentiable when grad mode is on (Eq. 11-12 over all channels at once).
    """
    return torch.autograd.grad(
        outputs,
        inputs,
        grad_outputs=grad_outputs,
        retain_graph=retain or not _releasing(),
        create_graph=torch.is_grad_enabled(),
    )


class GradientRule(Propagator):
    """The plain gradient, for modules with parameters or buffers that have no rule (e.g. a merged BatchNorm)."""

    def prepare(self, module, input, shared=False):
        """Build the module's local graph with its current (canonized) parameters."""
        return _local_forward(module, input)

    def propagate(self, state, relevance):
        """Return the gradient-times-relevance at the module's input."""
        leaf, output = state
        return _vjp(output, leaf, relevance)[0]


class BatchNormGradient(Propagator):
    """The exact gradient of a BatchNorm in eval mode: a per-channel scale ``weight / sqrt(running_var + eps)``.

    Used for BatchNorm layers without a rule (a canonizer usually merged them into an identity); cheaper than a local
    graph and equal to the gradient autograd would compute.
    """

    def prepare(self, module, input, shared=False):
        """The per-channel scale, from the module's current (canonized) statistics."""
        scale = (module.running_var + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        return _channelwise(scale.detach(), input.ndim)

    def propagate(self, state, relevance):
        """Scale the relevance channel by channel."""
        return relevance * state

    def native_forward(self, module, single=False):
        """For a merged BatchNorm (:func:`merged_scale`): ``input * scale``, whose gradient is this rule."""
        scale = merged_scale(module, self)
        if scale is None:
            return None
        return lambda input: input * _channelwise(scale, input.ndim)


class HookRule(GradientRule):
    """Any other zennit ``Hook``: its ``backward`` is called as zennit would call it."""

    def __init__(self, hook):
        self.hook = hook

    def prepare(self, module, input, shared=False):
        """Build the local graph and keep the module for the hook's backward."""
        leaf, output = _local_forward(module, input)
        return module, leaf, output

    def propagate(self, state, relevance):
        """Evaluate ``hook.backward`` with the plain gradient as ``grad_input``."""
        module, leaf, output = state
        grad_input = _vjp(output, leaf, relevance)
        self.hook.stored_tensors["input"] = (leaf.detach(),)
        return self.hook.backward(module, grad_input, (relevance,))[0]


# Branches of zennit rules whose input is the negative part of the module input and whose bias is zeroed: they
# contribute exactly nothing when the input is non-negative (as after a ReLU), so they are skipped.
_NEGATIVE_INPUT_BRANCHES = {ZPlus: (1,), AlphaBeta: (1, 3)}
# Branches whose input is the positive part of the module input (``clamp(min=0)``): for a non-negative input that is
# the input itself, which a branch may then share instead of copying.
_POSITIVE_INPUT_BRANCHES = {ZPlus: (0,), AlphaBeta: (0, 2)}
# Rules whose gradient mapper multiplies the upper relevance element-wise by a factor that depends on the forward
# only (e.g. 1 / stabilize(z)): from the second backward pass on, the factors are computed once and reused.
_ELEMENTWISE_MAPPERS = (Epsilon, ZPlus, AlphaBeta, Gamma, Flat, WSquare, Norm, ZBox)


# Module types whose forward is one functional call on (input, weight, bias): modified parameters are passed to it.
_DIRECT = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def _geometry(module):
    """What a convolution's forward does besides its parameters (``None`` for a linear layer)."""
    if type(module) is torch.nn.Linear:
        return None
    return module.stride, module.padding, module.dilation, module.groups, module.padding_mode


def _transposable(module):
    """Whether :func:`_transpose` computes the module's vector-Jacobian product directly."""
    if type(module) is torch.nn.Linear:
        return True
    return type(module) in _DIRECT and module.padding_mode == "zeros" and not isinstance(module.padding, str)


def _transpose(module, weight):
    """The vector-Jacobian product ``(input, grad) -> grad_input`` of ``module``'s operation with ``weight``.

    A branch of the zennit rules in ``_ELEMENTWISE_MAPPERS`` on a plain convolution or linear layer is the module's
    own operation with modified parameters (its output modifiers are the identity), linear in its input: its
    vector-Jacobian product is the transposed operation with the branch's weight, computed directly instead of on a
    local autograd graph, and differentiable with respect to ``grad`` (Eq. 11-12 over all channels at once). With a
    weight of all ones (the Flat rule, A.3) every input channel receives the same relevance: the output channels are
    summed first and one input channel is computed. ``None`` for convolutions that pad by other means than zeros or
    by a string: they keep the local graph.
    """
    if not _transposable(module):
        return None
    if type(module) is torch.nn.Linear:
        return lambda input, grad: grad @ weight
    geometry = (list(module.stride), list(module.padding), list(module.dilation), False, [0] * len(module.stride))
    groups = module.groups
    if groups == 1 and bool((weight == 1).all()):
        single = weight[:1, :1]

        def uniform(input, grad):
            summed = grad.sum(dim=1, keepdim=True)
            one = torch.ops.aten.convolution_backward(
                summed, input[:, :1], single, None, *geometry, 1, [True, False, False]
            )[0]
            return one.expand_as(input).contiguous()

        return uniform

    def transpose(input, grad):
        return torch.ops.aten.convolution_backward(grad, input, weight, None, *geometry, groups, [True, False, False])[
            0
        ]

    return transpose


class BasicRule(Propagator):
    """A zennit ``BasicHook`` (Epsilon, ZPlus, Flat, AlphaBeta, Gamma, Norm, ...), evaluated as zennit does.

    State per forward: ``[inputs, outputs, factors, uses, shift, retain, transposes, key]``. ``factors``: the
    element-wise mapper factors, computed once (from the second backward pass; for a rule whose every branch has a
    constant input, at its first and kept under ``key`` for later passes); ``retain``: the local graphs outlive a
    last pass; ``transposes``: each branch's direct vector-Jacobian product (:func:`_transpose`), or ``None`` where
    the branches keep local graphs.
    """

    def __init__(self, rule):
        self.rule = rule
        self.skippable = _NEGATIVE_INPUT_BRANCHES.get(type(rule), ())
        self.positive = _POSITIVE_INPUT_BRANCHES.get(type(rule), ())
        self.elementwise = type(rule) in _ELEMENTWISE_MAPPERS
        # ZPlus with a non-negative input is z+ alone: R_i = x_i * (W+^T (R / stabilize(z+)))_i (Eq. 34).
        self.positive_only = type(rule) is ZPlus
        # z+ >= 0 there, where zennit's stabilizer (sign(0) = +1) is z+ + epsilon: one addition, not six passes.
        self.epsilon = _plain_epsilon(rule) if self.positive_only else None
        # Epsilon (Eq. 33) with zennit's plain stabilizer: z + epsilon * sign(z), sign(0) = +1, in one operation
        self.signed = _plain_epsilon(rule) if type(rule) is Epsilon else None
        # branch -> (key of the module's parameters, modified weight, modified bias, direct vjp or None)
        self.parameters = {}
        # branch -> (key, input, output) of a branch whose input does not depend on the input
        self.constants = {}
        self.factors = (None, None)  # (key, factors) of a rule whose every branch has a constant input
        self.fusions = {}  # module -> (key, weight, bias) of its output and z+ computed by one call
        self.pending = None  # (input, branch output, shift) of the module's fused forward, for the next ``prepare``
        self.template = None  # (key, state) of a rule whose every branch is constant: its state for inputs like key's

    def fused_forward(self, module):
        """A forward for ``module`` that also computes the rule's branch on the way (see ``Propagator``).

        On a plain convolution or linear layer. ZPlus: the output and z+ (Eq. 34) in one call. A small input (one
        sample) costs little arithmetic, so each call's fixed cost counts: one call with the output channels of both
        weights stacked replaces two; for a batch, or an input with negative values (z+ then has two branches), it
        is the module's own forward. Epsilon (Eq. 33) without modified parameters: its branch is the output itself.
        Other rules: the module's own forward (which connects the module while the pass is ``live``).
        """
        if not _transposable(module):
            return None
        plain = type(module).forward.__get__(module)
        param_mod = self.rule.param_modifiers[0]
        if self.signed is not None and type(param_mod) is NoMod and not param_mod.zero_params:

            def same(input):
                # the module's own operation on its own (canonized) parameters, without a graph: the rule connects
                parameters = self._parameters(0, module, param_mod, None)
                output = self._modified_forward(module, param_mod, input.detach(), parameters)
                return self.connect(module, input, output, output, None)

            return same
        if self.epsilon is None:
            return lambda input: self.connect(module, input, plain(input), None, None)

        def forward(input):
            if input.shape[0] != 1 or not _non_negative(input):
                return self.connect(module, input, plain(input), None, None)
            _, weight, bias = self._fusion(module, param_mod)
            # no graph: the input is detached, the stacked parameters are (:meth:`_fusion`)
            both = self._modified_forward(module, param_mod, input.detach(), (None, weight, bias, None))
            channels = module.weight.shape[0]
            return self.connect(module, input, both[:, :channels], both[:, channels:], self.epsilon)

        return forward

    def connect(self, module, input, output, branch, shift):
        """Connect the module's ``output`` to its ``input`` by the rule's node, if the pass is ``live``.

        ``branch``: the rule's one branch output, computed with the output (``shift``: z+'s stabilizer in its bias),
        or ``None`` for ``prepare`` to compute the branches. Else the branch is left to the hook's ``prepare``.
        """
        live = self.live
        if live is None:
            if branch is not None:
                self.pending = (input, branch, shift)
            return output
        state = self._fused_state(input, branch, shift) if branch is not None else self.prepare(module, input, True)
        tap, counter, observe = live
        result = _Rule.apply(input, (output.detach(),), self, state, tap)
        return result if tap is None else enter_tap(tap, result, input, counter, False, observe)

    def _fusion(self, module, param_mod):
        """The module's (canonized) weight and bias stacked over those of z+ with its stabilizer in the bias."""
        key, zplus_weight, zplus_bias, _ = self._parameters(0, module, param_mod, self.epsilon)
        cached = self.fusions.get(module)
        if cached is None or cached[0] != key:
            weight = module.weight.detach()
            bias = _bias(weight, None if module.bias is None else module.bias.detach())
            cached = self.fusions[module] = (key, torch.cat([weight, zplus_weight]), torch.cat([bias, zplus_bias]))
        return cached

    def prepare(self, module, input, shared=False):
        """Evaluate every branch's modified forward once (input, parameter and output modifiers).

        For a non-negative input (as after a ReLU), branches of the negative input part are skipped and, when the
        input may be ``shared``, branches of its positive part use it without a copy. A branch whose input is all
        ones (the Flat rule, Sec. 2.3.4 and A.3) depends only on the input's shape: its output, and the mapper's
        factors when every branch is such, are kept and reused for inputs of that shape. Plain convolutions and
        linear layers build no local graph (:func:`_transpose`).
        """
        original = input.detach()
        pending, self.pending = self.pending, None
        if pending is not None and pending[0] is input:
            # the module's forward computed the branch with its own output (:meth:`fused_forward`)
            return self._fused_state(input, pending[1], pending[2])
        template = self.template
        # every branch constant (Flat): the state depends on the input's shape and the parameters only
        if template is not None and self.epoch is not None and template[0] == self._template_key(module, original):
            state = list(template[1])
            if self.factors[0] == state[7]:
                state[2] = self.factors[1]
            return state
        non_negative = self.skippable and _non_negative(original)
        skip = self.skippable if non_negative else ()
        same = self.positive if non_negative and shared else ()
        direct = type(module) in _DIRECT
        # z+ alone (Eq. 34) on a convolution or linear layer: its stabilizer (+ epsilon, as z+ >= 0) goes into the
        # bias, so that the backward divides by the output without another pass over it
        shift = self.epsilon if non_negative and self.positive_only and direct else None
        inputs, outputs, transposes, constants = [], [], [], []
        branches = zip(self.rule.input_modifiers, self.rule.param_modifiers, self.rule.output_modifiers)
        for index, (in_mod, param_mod, out_mod) in enumerate(branches):
            if index in skip:
                if not self.positive_only:
                    inputs.append(0.0)
                    outputs.append(0.0)
                    transposes.append(None)
                    constants.append(None)
                continue
            parameters = self._parameters(index, module, param_mod, shift)
            if direct and in_mod is torch.ones_like:
                key = (tuple(original.shape), original.dtype, original.device, parameters[0])
                cached = self.constants.get(index)
                if cached is None or cached[0] != key:
                    leaf = torch.ones_like(original)
                    branch = self._branch(module, param_mod, out_mod, leaf, parameters)
                    cached = self.constants[index] = (key, leaf, *branch)
                _, branch_input, output, transpose = cached
                constants.append(key)
            else:
                # each branch gets its own input (an alias where shared), so that its gradient stays its own
                branch_input = original.detach() if index in same else in_mod(original)
                output, transpose = self._branch(module, param_mod, out_mod, branch_input, parameters)
                constants.append(None)
            inputs.append(branch_input)
            outputs.append(output)
            transposes.append(transpose)
        live = [index for index, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
        local = any(transposes[index] is None for index in live)
        # every branch constant: the mapper's factors are those of the last such pass (computed at the first use)
        constant = not local and live and all(constants[index] is not None for index in live)
        key = constants if constant else None
        factors = self.factors[1] if constant and self.factors[0] == key else None
        # local graphs of constant branches serve every later pass: a last pass must not free them
        retain = local and any(key is not None for key in constants)
        state = [inputs, outputs, factors, 0, shift, retain, None if local else transposes, key]
        if constant and self.epoch is not None:
            self.template = self._template_key(module, original), (*state[:2], None, *state[3:])
        return state

    def _fused_state(self, input, branch, shift):
        """The state of the one branch a fused forward computed (:meth:`fused_forward`), as :meth:`prepare`'s."""
        return [[input.detach()], [branch], None, 0, shift, False, [self.parameters[0][3]], None]

    def _template_key(self, module, original):
        """What a constant rule's state (:attr:`template`) depends on: the parameters, the input's shape, geometry."""
        return self.epoch, original.shape, original.dtype, original.device, _geometry(module)

    def _branch(self, module, param_mod, out_mod, input, parameters):
        """A branch's output on ``input``, and its direct vector-Jacobian product (:func:`_transpose`).

        ``parameters``: the branch's :meth:`_parameters`. Where there is no direct product, the output is a local
        graph from ``input`` (made a leaf requiring gradients).
        """
        transpose = parameters[3] if self.elementwise else None
        if transpose is None:
            input.requires_grad_()
            return out_mod(self._modified_forward(module, param_mod, input, parameters)), None
        with torch.no_grad():
            return out_mod(self._modified_forward(module, param_mod, input, parameters)), transpose

    def _parameters(self, index, module, param_mod, shift):
        """``(key, weight, bias, transpose)`` of branch ``index`` on a plain convolution or linear layer.

        Computed once and reused while the module's own parameters are the same tensors at the same version.
        ``None`` for other modules.
        """
        if type(module) not in _DIRECT:
            return None, None, None, None
        key = (_signature(module, shift) if self.epoch is None else (self.epoch, shift), _geometry(module))
        cached = self.parameters.get(index)
        if cached is None or cached[0] != key:
            with ParamMod.ensure(param_mod)(module) as modified:
                weight, bias = (None if p is None else p.detach() for p in (modified.weight, modified.bias))
            if shift is not None:
                bias = _bias(weight, bias) + shift
            cached = self.parameters[index] = (key, weight, bias, _transpose(module, weight))
        return cached

    def _modified_forward(self, module, param_mod, input, parameters):
        """The module's forward with a branch's parameter modifier applied.

        Plain convolutions and linear layers take the branch's cached modified ``parameters`` (:meth:`_parameters`,
        the z+ shift in the bias); other modules run under zennit's ``ParamMod`` every time.
        """
        if type(module) not in _DIRECT:
            with ParamMod.ensure(param_mod)(module) as modified:
                return modified.forward(input)
        _, weight, bias, _ = parameters
        if type(module) is torch.nn.Linear:
            return torch.nn.functional.linear(input, weight, bias)
        return module._conv_forward(input, weight, bias)

    def _map(self, state, relevance):
        """The rule's gradient mapper applied to ``relevance``.

        A first backward pass applies the mapper itself; later ones multiply by its element-wise factors, computed
        once (the ``k`` backward passes of conditional heatmaps share them).
        """
        outputs, factors, uses, shift = state[1:5]
        state[3] = uses + 1
        if (self.epsilon is not None or self.signed is not None) and len(outputs) == 1:
            if self.signed is not None:
                stabilized = torch.where(outputs[0] >= 0, outputs[0] + self.signed, outputs[0] - self.signed)
            else:
                stabilized = outputs[0] if shift is not None else outputs[0] + self.epsilon
            if uses == 0 and shift is not None and _releasing() and not torch.is_grad_enabled():
                # the last pass reads the stabilized output once: divide into its memory (the backward does not
                # read the output)
                stabilized = stabilized.detach()
                return [torch.div(relevance, stabilized, out=stabilized)]
            if uses == 0:
                return [relevance / stabilized]
            if factors is None:
                factors = state[2] = [stabilized.detach().reciprocal()]
            return [relevance * factors[0]]
        key = state[7]
        if not self.elementwise or (uses == 0 and factors is None and key is None):
            return _as_tuple(self.rule.gradient_mapper(relevance, outputs))
        if factors is None:
            reference = next(output for output in outputs if isinstance(output, torch.Tensor))
            with torch.no_grad():
                factors = state[2] = _as_tuple(self.rule.gradient_mapper(torch.ones_like(reference), outputs))
            if key is not None:
                self.factors = (key, factors)
        return [relevance * factor for factor in factors]

    def propagate(self, state, relevance):
        """Apply the rule's gradient mapper, the vector-Jacobian products and its reducer."""
        inputs, outputs = state[0], state[1]
        retain, transposes = state[5], state[6]
        grad_outputs = self._map(state, relevance)
        if _releasing():
            state.clear()  # the last pass: let the branch outputs go as soon as they are used
        live = [index for index, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
        if transposes is not None:
            grads = [transposes[i](inputs[i], grad_outputs[i]) for i in live]
        else:
            grads = _vjp([outputs[i] for i in live], [inputs[i] for i in live], [grad_outputs[i] for i in live], retain)
        if self.positive_only and len(inputs) == 1:
            # a fresh tensor: scale it in place unless the result must stay differentiable
            return inputs[0] * grads[0] if torch.is_grad_enabled() else grads[0].mul_(inputs[0])
        gradients = [0.0] * len(inputs)
        for index, grad in zip(live, grads):
            gradients[index] = grad
        return self.rule.reducer(inputs, gradients)


def _bias(weight, bias):
    """``bias``, or zeros for a layer without one (one per output channel of ``weight``)."""
    return torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device) if bias is None else bias


def state_signature(modules, buffers=True):
    """Which tensors the modules' parameters (and buffers) are, at which version: a :class:`Signature`.

    It changes when a tensor is assigned anew or changed in place: the key of everything computed from them once.
    """
    signature, tensors = [], []
    for module in modules:
        for store in (module._parameters, module._buffers) if buffers else (module._parameters,):
            for tensor in store.values():
                if tensor is None:
                    signature.append(None)
                else:
                    signature.append((id(tensor), tensor.data_ptr(), tensor._version))
                    tensors.append(tensor)
    signature = Signature(signature)
    signature.tensors = tensors
    return signature


class Signature(tuple):
    """``(id, data_ptr, version)`` per tensor, compared as a tuple, that keeps its tensors alive (``tensors``).

    While a key holds it, no tensor it names can be freed, so no later tensor can take over its identity and memory
    and pass for it.
    """


def _signature(module, shift=None):
    """A module's parameters (:func:`state_signature`) and the bias ``shift`` of a modified forward."""
    return state_signature((module,), buffers=False), shift


def _non_negative(tensor):
    """Whether no element of ``tensor`` is negative (one reduction, no boolean temporary; NaN counts as negative)."""
    return tensor.numel() == 0 or float(tensor.detach().amin()) >= 0


def _plain_epsilon(rule):
    """The epsilon of a rule's zennit ``Stabilizer`` when it only adds ``epsilon * sign``; else ``None``."""
    mapper = rule.gradient_mapper
    for name, cell in zip(mapper.__code__.co_freevars, mapper.__closure__ or ()):
        value = cell.cell_contents
        if name == "stabilizer_fn" and type(value) is Stabilizer and not value.clip and not value.norm_scale:
            return value.epsilon
    return None


def _as_tuple(grad_outputs):
    """Zennit's single-branch gradient mappers return a bare tensor, the others a sequence."""
    return (grad_outputs,) if isinstance(grad_outputs, torch.Tensor) else tuple(grad_outputs)


def propagator_for(rule):
    """Return the ``Propagator`` executing a zennit hook template (or a ``Propagator`` as it is)."""
    if isinstance(rule, Propagator):
        return rule
    if isinstance(rule, BasicHook):
        return BasicRule(rule)
    if type(rule) is Pass:
        return PassRelevance()
    if isinstance(rule, Hook):
        return HookRule(rule.copy())
    raise TypeError(f"a composite returned {rule!r}, which is neither a zennit Hook nor a Propagator")


class _Rule(torch.autograd.Function):
    """Connects a module's output to its input; the backward is the module's LRP rule.

    On a tapped layer the same node is also the tap (see :class:`_Tap`): it masks the arriving relevance before the
    rule redistributes it, so that a tapped layer with a rule costs one node, not two.
    """

    @staticmethod
    def forward(ctx, input, output_holder, propagator, state, tap=None):
        ctx.propagator, ctx.state = propagator, state
        ctx.tap = None if tap is None else weakref.ref(tap)
        return output_holder[0]

    @staticmethod
    def backward(ctx, relevance):
        if ctx.tap is not None:
            tap = ctx.tap()
            relevance = _pass_tap(tap, relevance)
            if tap is not None and tap.terminal:
                return None, None, None, None, None
        return ctx.propagator.propagate(ctx.state, relevance), None, None, None, None


class _Tap(torch.autograd.Function):
    """Identity in the forward; in the backward, masks the relevance with the tap's current mask (Eq. 8).

    The node refers to its tap weakly: the tap refers to the node's output, and a strong reference back would make
    a cycle that only the garbage collector frees, keeping whole graphs alive across a scan.
    """

    @staticmethod
    def forward(ctx, input, output_holder, tap):
        ctx.tap = weakref.ref(tap)
        return output_holder[0]

    @staticmethod
    def backward(ctx, relevance):
        return _pass_tap(ctx.tap(), relevance), None, None


def _pass_tap(tap, relevance):
    """The relevance passing a tap: masked by its current mask (Eq. 8), shown to its observer."""
    if tap is None or tap.started:
        return relevance
    if tap.mask is not None:
        relevance = relevance * tap.mask
    if tap.observer is not None:
        tap.observer(tap.name, relevance)
    return relevance


@dataclasses.dataclass(eq=False)
class Tap:
    """A layer's place in one forward pass.

    Attributes
    ----------
    name : str
        The layer (module) name.
    order : int
        Position in the forward execution order.
    site : torch.Tensor
        The tensor just below the tap's mask: the gradient here is the (masked) relevance of the layer.
    output : torch.Tensor
        The tensor the rest of the network consumes.
    node : torch.autograd.graph.Node
        The tap's backward node.
    activation : torch.Tensor
        The layer's output values (copied if the model's code works in place).
    mask : torch.Tensor or None
        The condition mask applied during the current backward pass.
    calls : int
        How often the module ran in the forward pass (conditions need exactly one).
    version : int or None
        The version counter of ``site`` when recorded without a copy (an in-place change of the output raises it).
    observer : callable or None
        Called as ``observer(name, relevance)`` with the (masked) relevance passing the tap in a backward pass.
    merged : bool
        On a layer with a rule, the tap is the rule's node (``_Rule``): ``site`` and ``output`` are then one tensor,
        whose gradient is the relevance *before* the mask. Otherwise the tap is a node of its own (``_Tap``), and
        ``site`` is below its mask.
    below : torch.Tensor or None
        For a merged tap, the module input the rule connects to (until a last backward pass lets it go).
    started : bool
        The current backward pass starts at this layer's ``site``, below its mask: the tap passes relevance as is.
    terminal : bool
        The current backward pass needs nothing below this merged tap: its node masks and observes, and stops.
    """

    name: str
    order: int = -1
    site: torch.Tensor = None
    output: torch.Tensor = None
    node: object = None
    activation: torch.Tensor = None
    mask: torch.Tensor = None
    calls: int = 0
    version: int = None
    observer: object = None
    merged: bool = False
    below: torch.Tensor = None
    started: bool = False
    terminal: bool = False


def make_hooks(module, propagator, tap, counter, copy=True, observe=None):
    """Return the (pre-hook, hook) pair that wires ``module`` into the relevance graph.

    ``copy``: record a tapped layer's activation as a copy, and give rules copies of their inputs (needed when the
    model's code works in place). The pre-hook is ``None`` where none is needed: for a module that neither refuses
    to run (``admit``) nor works in place, the forward hook reads the input from the module's arguments.

    ``observe``: stream the activations instead of keeping them: ``observe(name, activation)`` is called as soon as
    a tapped layer has run, and the tap keeps no activation. Nothing then reads a layer's output after the layers
    above ran, so a module working in place that passes relevance unchanged runs in place on an alias of its input
    (no copy; the rule still connects to the input as it came).
    """
    inputs = []  # the module's inputs as they came, one per call in progress (modules may be reused)
    admits = propagator is not None and type(propagator).admit is not Propagator.admit
    copies = in_place(module)
    needs_pre_hook = admits or copies
    alias = observe is not None and not copy and (propagator is None or type(propagator) is PassRelevance)

    def pre_hook(module, args):
        if propagator is not None:
            propagator.admit(module)
        inputs.append(args[0] if args else None)
        # A module working in place would overwrite a tensor that a rule or a tap keeps: give it a copy. The rule
        # connects the output to the input as it came, not to the copy (whose history the in-place op rewrites).
        if copies and args and isinstance(args[0], torch.Tensor):
            return (args[0].detach() if alias else args[0].clone(), *args[1:])
        return None

    def hook(module, args, output):
        input = (inputs.pop() if inputs else None) if needs_pre_hook else (args[0] if args else None)
        if not torch.is_grad_enabled():
            return None
        result = output
        if propagator is not None:
            if not isinstance(input, torch.Tensor) or not isinstance(output, torch.Tensor):
                raise UnsupportedModelError(
                    f"module {type(module).__name__} takes or returns something other than one tensor; "
                    "LRP rules attach to modules with one tensor input and one tensor output"
                )
            state = propagator.prepare(module, input, shared=not copy)
            result = _Rule.apply(input, (output.detach(),), propagator, state, tap)
        if tap is not None:
            if not isinstance(result, torch.Tensor):
                raise UnsupportedModelError(
                    f"layer {tap.name!r} returns {type(result).__name__}, not a tensor; "
                    "conditions and records need layers that return one tensor"
                )
            result = enter_tap(tap, result, input, counter, copy, observe, merged=propagator is not None)
        return result

    return (pre_hook if needs_pre_hook else None), hook


def enter_tap(tap, result, input, counter, copy, observe, merged=True):
    """Record that the tapped layer ran with output ``result``; return the tensor the rest of the network consumes.

    ``merged``: ``result`` is the output of the layer's rule node (``_Rule``), which is also the tap; else a
    ``_Tap`` node is added. ``copy``, ``observe``: as for :func:`make_hooks`.
    """
    tap.calls += 1
    tap.order = next(counter)
    tap.site = result
    if observe is not None:
        observe(tap.name, result.detach())
    else:
        tap.activation = result.detach().clone() if copy else result.detach()
        tap.version = None if copy else result._version
    if merged:
        tap.merged, tap.below = True, input
    else:
        result = _Tap.apply(result, (result.detach(),), tap)
    tap.output = result
    tap.node = result.grad_fn
    return result
