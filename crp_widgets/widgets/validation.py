"""Checks of explorer state values against a session: a refused value names the problem and the accepted values.

:class:`~crp_widgets.widgets.session.ExplorerState` calls these once it is bound to a session (the explorer binds
its state), so that a layer, channel, sample, class or input that the model or the dataset does not have is refused
where it is set, from Python or from a field, and the state keeps its last valid value.
"""

import numbers

from ..engine import CRPError

__all__ = ["StateError", "check_channel", "check_conditions", "check_layer", "check_sample", "check_target"]


class StateError(CRPError, ValueError):
    """A value the explorer state refuses."""


def _index(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise StateError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_layer(session, layer):
    """``layer`` if the model has it (any module name); else :class:`StateError` listing the valid layers."""
    try:
        return session.crp.validate_layer(layer)
    except CRPError as error:
        raise StateError(str(error)) from None


def check_channel(session, layer, channel):
    """``channel`` of ``layer`` (``None`` allowed) if in range; else :class:`StateError` naming the range."""
    if channel is None:
        return None
    channel = _index(channel, f"a channel of {layer}")
    count = session.channel_count(layer)
    if count is not None and not 0 <= channel < count:
        raise StateError(f"channel {channel} is out of range: layer {layer} has {count} channels (0 to {count - 1})")
    return channel


def check_conditions(session, conditions):
    """Conditions ``{layer: channels}`` with every layer and channel checked, channels as sorted lists of ints."""
    if not isinstance(conditions, dict):
        raise StateError(f"conditions are a dict {{layer: [channels]}}, got {type(conditions).__name__}")
    checked = {}
    for layer, channels in conditions.items():
        check_layer(session, layer)
        values = [channels] if isinstance(channels, numbers.Integral) else list(channels)
        if values:
            checked[layer] = sorted({check_channel(session, layer, c) for c in values})
    return checked


def check_sample(session, sample):
    """``sample`` if the dataset has it; else :class:`StateError` naming the range."""
    sample = _index(sample, "a sample")
    count = None if session.dataset is None else len(session.dataset)
    if count is not None and not 0 <= sample < count:
        raise StateError(f"sample {sample} is out of range: the dataset has {count} samples (0 to {count - 1})")
    return sample


def check_target(session, target):
    """The explained class: ``None`` (the prediction), an output index in range, or a class name."""
    if target is None:
        return None
    if isinstance(target, str):
        return session.class_index(target)
    target = _index(target, "a class")
    outputs = session.outputs()
    if outputs is not None and not 0 <= target < outputs:
        raise StateError(
            f"class {target} is out of range: the model has {outputs} outputs (0 to {outputs - 1}); "
            "None explains the prediction"
        )
    return target
