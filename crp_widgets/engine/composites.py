"""Choosing LRP rules: the default composite (CRP paper, A.3) and a short description of a composite."""

from zennit.composites import EpsilonPlusFlat
from zennit.rules import Epsilon, ZPlus

# key of the composite context (zennit's ``ctx``) under which the engine names the layers whose outputs stay signed
SIGNED_OUTPUTS = "crp_widgets.signed_outputs"


class DefaultComposite(EpsilonPlusFlat):
    """EpsilonPlusFlat (A.3: Flat first layer, ZPlus convolutions, Epsilon dense), with Epsilon where ZPlus loses.

    ZPlus passes relevance through positive contributions only; it conserves relevance when every output unit that
    receives relevance has some, which holds when the layer's output is rectified by a ReLU (directly, or after a
    residual addition), as in VGG and ResNet. A convolution whose output stays signed (the linear bottlenecks of
    MobileNet, MnasNet, EfficientNet, ShuffleNet) would lose the relevance of its negative outputs: it gets the
    Epsilon rule. The engine's graph names those layers in the composite's context (``ctx[SIGNED_OUTPUTS]``); without
    that entry (e.g. under zennit's own attribution) this is EpsilonPlusFlat.

    Parameters
    ----------
    epsilon, stabilizer : float
        As for zennit's ``EpsilonPlusFlat``.
    zero_params : list[str], optional
        Parameters every rule sets to zero (e.g. ``["bias"]``).
    """

    def __init__(self, epsilon=1e-6, stabilizer=1e-6, zero_params=None):
        super().__init__(epsilon=epsilon, stabilizer=stabilizer, zero_params=zero_params)
        self.signed_rule = Epsilon(epsilon=epsilon, zero_params=zero_params)

    def mapping(self, ctx, name, module):
        """The rule zennit gives the module; Epsilon instead of ZPlus on a layer whose output stays signed."""
        rule = super().mapping(ctx, name, module)
        if isinstance(rule, ZPlus) and name in ctx.get(SIGNED_OUTPUTS, ()):
            return self.signed_rule
        return rule


def default_composite(model=None):
    """The default rules: :class:`DefaultComposite`.

    No canonizers are needed: the engine's graph canonization merges BatchNorm layers and gives residual sums,
    gates, normalisation and attention their rules (:mod:`crp_widgets.engine.graph`) for any architecture.
    """
    return DefaultComposite()


def describe(composite):
    """A short, stable text naming a composite and its canonizers (for manifests and captions)."""
    canonizers = ", ".join(type(canonizer).__name__ for canonizer in getattr(composite, "canonizers", []))
    return f"{type(composite).__name__}(canonizers=[{canonizers}])"
