"""LRP rules as autograd nodes: the backward pass of an explained forward pass carries relevance.

Every operation of the explainable graph that needs a rule returns its output through :func:`connect`: one
autograd node whose backward is the rule's, mapping the relevance at the output to the relevance at each input
(Bach et al. 2015; Montavon et al. 2019). Operations that only move values (reshape, concatenation, max pooling)
keep their plain gradient, which routes relevance exactly. A rule keeps what its backward needs from the forward
pass in a typed state, so that many backward passes (channels, conditions, classes; CRP paper Sec. 2.2) share one
forward pass.
"""

import dataclasses

import torch
from zennit.core import ParamMod, stabilize, zero_wrap
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, WSquare, ZBox, ZPlus

# zennit rules whose reducer is the sum of input times gradient over the branches: a branch whose input is all
# zeros contributes exactly nothing, so its backward is skipped (e.g. the negative branch after a ReLU), and its
# input and gradient enter the reducer as zero scalars (these rules' reducers and mappers broadcast)
_PRODUCT_REDUCERS = (ZPlus, AlphaBeta, Gamma)
# zennit rules whose gradient mapper multiplies the relevance element-wise by factors of the outputs alone
_ELEMENTWISE_MAPPERS = (Epsilon, ZPlus, AlphaBeta, Gamma, Flat, WSquare, ZBox, Norm)


class Rule:
    """How relevance passes one operation: ``forward`` once per forward pass, ``backward`` per backward pass."""

    def forward(self, *inputs):
        """Return ``(output, state)``: the operation's output and what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, state, relevance):
        """Return the relevance at each input (``None`` for an input that receives none)."""
        raise NotImplementedError


class _Node(torch.autograd.Function):
    """The autograd node of a rule: forward is the operation, backward the rule."""

    @staticmethod
    def forward(ctx, rule, *inputs):
        output, state = rule.forward(*inputs)
        ctx.rule, ctx.state = rule, state
        # a new tensor object: the state may hold the output's data, but never the object autograd attaches this
        # node to (a reference cycle that only the garbage collector would free)
        return output.detach()

    @staticmethod
    def backward(ctx, relevance):
        return (None, *ctx.rule.backward(ctx.state, relevance))


def connect(rule, *inputs):
    """The output of ``rule``'s operation on ``inputs``, with the rule as its backward pass."""
    return _Node.apply(rule, *inputs)


def _vjp(output, inputs, grad):
    """Vector-Jacobian product on a local graph, kept for later backward passes; differentiable in ``grad``."""
    return torch.autograd.grad(
        output, inputs, grad, retain_graph=True, create_graph=torch.is_grad_enabled(), allow_unused=True
    )


class Identity(Rule):
    """The identity rule for element-wise non-linearities (GELU, SiLU, ...): ``R_in = R_out`` (AttnLRP, Sec. 3)."""

    def __init__(self, function):
        self.function = function

    def forward(self, input):
        """Apply the non-linearity."""
        return self.function(input), None

    def backward(self, state, relevance):
        """Pass the relevance unchanged."""
        return (relevance,)


class SoftmaxRule(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``R_in = x * (R - s * sum(R))`` along ``dim``.

    The deep Taylor decomposition of the softmax at its input ``x`` (masked scores of ``-inf`` count as 0).
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, input):
        """The softmax."""
        output = torch.softmax(input, self.dim)
        return output, (input, output)

    def backward(self, state, relevance):
        """Distribute the relevance over the scores."""
        input, output = state
        input = torch.where(torch.isneginf(input), torch.zeros_like(input), input)
        return (input * (relevance - output * relevance.sum(self.dim, keepdim=True)),)


@dataclasses.dataclass
class LinearState:
    """What :class:`Linear` keeps: the data inputs, their leaf copies, the local output graph and the output.

    ``factor``: ``1 / stabilize(output)``, kept from the second backward pass on.
    """

    inputs: tuple
    leaves: list
    local: torch.Tensor
    output: torch.Tensor
    factor: torch.Tensor = None
    uses: int = 0


class Linear(Rule):
    """The epsilon rule over an operation that is linear in its data inputs, everything else held constant.

    ``R_i = share_i * x_i * (J_i^T (R / stabilize(y)))``: additions split relevance in proportion to the summands
    (zennit's ``Norm`` on ``Sum``), pooling and means in proportion to the pooled values, a product with a constant
    (a gate, attention weights, a layer scale) passes it to the signal (Arras et al. 2017; CP-LRP, Ali et al. 2022).
    With all shares 1 the rule conserves relevance up to the stabiliser and any constant added; a product of ``n``
    data factors gives each the share ``1 / n`` (AttnLRP's uniform rule, Achtibat et al. 2024, Prop. 3.3).

    Parameters
    ----------
    function : callable
        The operation on the data inputs (constants bound), linear in them jointly (or multilinear, with shares).
    shares : Sequence[float], optional
        Each data input's share (default 1 each).
    epsilon : float
        The stabiliser (zennit's ``stabilize``: ``y + epsilon * sign(y)``, with sign(0) = 1).
    """

    def __init__(self, function, shares=None, epsilon=1e-6):
        self.function, self.shares, self.epsilon = function, shares, epsilon

    def forward(self, *inputs):
        """Build the local graph of the operation on leaf copies of the inputs."""
        leaves = [input.detach().requires_grad_() for input in inputs]
        with torch.enable_grad():
            local = self.function(*leaves)
        return local.detach(), LinearState(inputs, leaves, local, local.detach())

    def backward(self, state, relevance):
        """Distribute ``relevance`` over the inputs by their contributions."""
        state.uses += 1
        if state.uses == 1:
            scaled = relevance / stabilize(state.output, self.epsilon)
        else:
            if state.factor is None:
                state.factor = stabilize(state.output, self.epsilon).reciprocal()
            scaled = relevance * state.factor
        grads = _vjp(state.local, state.leaves, scaled)
        shares = self.shares or (1.0,) * len(grads)
        return tuple(
            None if grad is None else (input * grad if share == 1 else share * input * grad)
            for input, grad, share in zip(state.inputs, grads, shares)
        )


class Spread(Rule):
    """Relevance spread evenly over an operation's connections (the flat rule of receptive fields, Sec. 2.3.4).

    ``connections`` is the operation with every weight set to one; it is evaluated on inputs of ones, so that each
    output's relevance is shared by the inputs connected to it in proportion to the number of connections.
    """

    def __init__(self, function, connections):
        self.function, self.connections = function, connections

    def forward(self, *inputs):
        """Apply the operation; build the connection graph on ones."""
        ones = [torch.ones_like(input).requires_grad_() for input in inputs]
        with torch.enable_grad():
            local = self.connections(*ones)
        return self.function(*inputs), (ones, local)

    def backward(self, state, relevance):
        """Share each output's relevance over its connections."""
        ones, local = state
        return _vjp(local, ones, relevance / local.detach().clamp(min=1e-12))


@dataclasses.dataclass
class Branch:
    """One branch of a zennit rule: its modified input, parameters and output, and how to differentiate it.

    ``local`` is set when the branch is differentiated on a local graph (``input`` is then its leaf); ``zero``
    when its input is all zeros and it contributes nothing (``input`` is then a zero scalar).
    """

    input: torch.Tensor
    parameters: dict
    output: torch.Tensor
    local: bool = False
    zero: bool = False


@dataclasses.dataclass
class ZennitState:
    """What a :class:`ZennitRule` keeps: the input and output; the branches (from the first backward pass on).

    From the second backward pass on, also the gradient mapper's factors.
    """

    input: torch.Tensor
    output: torch.Tensor
    branches: list = None
    factors: tuple = None
    uses: int = 0


class ZennitRule(Rule):
    """A zennit ``BasicHook`` (Epsilon, ZPlus, Flat, AlphaBeta, Gamma, ZBox, Norm, ...) on one layer.

    The rule's own input, parameter and output modifiers, gradient mapper and reducer are evaluated as zennit
    evaluates them, on the layer's canonized parameters: the results are zennit's. The branches are computed at the
    first backward pass (a scan never needs those of its lowest layers) and kept for the later ones; a convolution
    or linear layer differentiates them by its transposed operation. zennit's own rules divide the relevance by
    stabilised outputs: from the second backward pass on, those factors are computed once and multiplied.

    Parameters
    ----------
    hook : zennit.core.BasicHook
        The rule.
    layer : crp_widgets.engine.layers.Layer
        The operation and its parameters.
    parameters : callable
        ``parameters(index, modifier)``: the layer's parameters modified for branch ``index`` (kept by the context).
    """

    def __init__(self, hook, layer, parameters):
        self.hook, self.layer, self.parameters = hook, layer, parameters
        self.modifiers = list(zip(hook.input_modifiers, hook.param_modifiers, hook.output_modifiers))
        self.skips_zeros = type(hook) in _PRODUCT_REDUCERS and layer.linear
        self.elementwise = type(hook) in _ELEMENTWISE_MAPPERS

    def forward(self, input):
        """The layer's output."""
        output = self.layer.function(input, self.parameters(None, None))
        return output, ZennitState(input, output)

    def branches(self, state):
        """Every branch of the rule for the input of ``state``."""
        plain = self.parameters(None, None)
        input, output = state.input, state.output
        branches = []
        for index, (input_modifier, param_modifier, output_modifier) in enumerate(self.modifiers):
            branch_input = input_modifier(input)
            parameters = self.parameters(index, param_modifier)
            if self.skips_zeros and not bool(branch_input.any()):
                # its input is not kept: a zero scalar takes its place
                zero = input.new_zeros(())
                branches.append(Branch(zero, parameters, self.layer.at_zero(parameters, output), zero=True))
            elif branch_input is input and _same(parameters, plain) and output_modifier(output) is output:
                branches.append(self._branch(branch_input, parameters, output_modifier, output))
            else:
                branches.append(self._branch(branch_input, parameters, output_modifier))
        return branches

    def _branch(self, input, parameters, output_modifier, output=None):
        """A branch, differentiated directly where the layer can, else on a local graph."""
        if self.layer.transposable:
            output = self.layer.function(input, parameters) if output is None else output
            modified = output_modifier(output)
            if modified is output:
                return Branch(input, parameters, output)
        leaf = input.detach().requires_grad_()
        with torch.enable_grad():
            local = output_modifier(self.layer.function(leaf, parameters))
        return Branch(leaf, parameters, local, local=True)

    def backward(self, state, relevance):
        """Zennit's gradient mapper, the branches' vector-Jacobian products and the reducer."""
        if state.branches is None:
            state.branches = self.branches(state)
        branches = state.branches
        if all(branch.zero for branch in branches):
            return (torch.zeros_like(state.input),)
        mapped = self._map(state, relevance)
        gradients = []
        for branch, grad in zip(branches, mapped):
            if branch.zero:
                gradients.append(branch.input)  # the zero scalar: the reducer's products of zeros broadcast
            elif branch.local:
                gradients.append(_vjp(branch.output, branch.input, grad)[0])
            else:
                gradients.append(self.layer.transpose(branch.input, branch.parameters, grad))
        inputs = [branch.input.detach() if branch.local else branch.input for branch in branches]
        return (self.hook.reducer(inputs, gradients),)

    def _map(self, state, relevance):
        """The gradient mapper's output for ``relevance`` (from its kept factors after the first pass)."""
        state.uses += 1
        if state.factors is not None:
            return [relevance * factor for factor in state.factors]
        outputs = [branch.output.detach() if branch.local else branch.output for branch in state.branches]
        if self.elementwise and state.uses > 1:
            with torch.no_grad():
                state.factors = _as_tuple(self.hook.gradient_mapper(torch.ones_like(outputs[0]), outputs))
            return [relevance * factor for factor in state.factors]
        return _as_tuple(self.hook.gradient_mapper(relevance, outputs))


def _as_tuple(mapped):
    """A gradient mapper's output as a tuple (single-branch mappers return a bare tensor)."""
    return (mapped,) if isinstance(mapped, torch.Tensor) else tuple(mapped)


def _same(parameters, plain):
    return parameters.keys() == plain.keys() and all(parameters[key] is plain[key] for key in plain)


class HookRule(Rule):
    """Any other zennit ``Hook``: its ``backward`` is called as zennit calls it, with the plain gradient."""

    def __init__(self, hook, layer, parameters):
        self.hook, self.layer, self.parameters = hook, layer, parameters

    def forward(self, input):
        """The layer's output on a local graph."""
        leaf = input.detach().requires_grad_()
        with torch.enable_grad():
            local = self.layer.function(leaf, self.parameters(None, None))
        return local.detach(), (leaf, local)

    def backward(self, state, relevance):
        """Evaluate ``hook.backward`` with the plain gradient as its ``grad_input``."""
        leaf, local = state
        grad_input = _vjp(local, leaf, relevance)
        self.hook.stored_tensors["input"] = (leaf.detach(),)
        self.hook.stored_tensors["kwargs"] = {}
        return (self.hook.backward(self.layer.module, grad_input, (relevance,))[0],)


def modified_parameters(modifier, parameters):
    """The parameters as zennit's ``ParamMod`` ``modifier`` changes them (unchanged tensors stay the same objects).

    As zennit does it: the modifier's ``param_keys`` (default: every parameter), its ``zero_params`` set to zero,
    parameters that are ``None`` left out.
    """
    modifier = ParamMod.ensure(modifier)
    keys = list(parameters) if modifier.param_keys is None else modifier.param_keys
    change = zero_wrap(modifier.zero_params or [])(modifier.modifier)
    missing = [key for key in keys if key not in parameters]
    if modifier.require_params and missing:
        raise RuntimeError(f"the rule needs parameters {missing} that the layer does not have")
    return {
        key: (change(value, key) if key in keys and value is not None else value) for key, value in parameters.items()
    }
