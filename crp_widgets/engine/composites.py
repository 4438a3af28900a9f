"""Choosing LRP rules: the default composite (CRP paper, A.3) and a short description of a composite."""

from zennit.composites import EpsilonPlusFlat


def default_composite(model=None):
    """The composite recommended in A.3: EpsilonPlusFlat (Flat first layer, ZPlus convolutions, Epsilon dense).

    No canonizers are needed: the engine's graph canonization merges BatchNorm layers and gives residual sums,
    gates, normalisation and attention their rules (:mod:`crp_widgets.engine.graph`) for any architecture.
    """
    return EpsilonPlusFlat()


def describe(composite):
    """A short, stable text naming a composite and its canonizers (for manifests and captions)."""
    canonizers = ", ".join(type(canonizer).__name__ for canonizer in getattr(composite, "canonizers", []))
    return f"{type(composite).__name__}(canonizers=[{canonizers}])"
