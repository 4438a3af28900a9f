"""Exceptions raised by the engine.

Every error names what was wrong and what is accepted, so that a widget can show the message as it is.
"""

import difflib


class CRPError(ValueError):
    """Base class of the engine's input errors (a ``ValueError``, so generic handlers keep working)."""


class UnknownLayerError(CRPError, KeyError):
    """A layer name that is not a module of the model."""

    def __init__(self, name, valid, role="layer"):
        self.name = name
        self.valid = list(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(repr(v) for v in self.valid)
        super().__init__(f"unknown {role} {name!r}.{hint} Valid layers: {listing}.")

    def __str__(self):
        # KeyError quotes its message; show it plainly like any ValueError.
        return self.args[0]


class UnsupportedModelError(CRPError, TypeError):
    """A model (or a part of it) that the LRP rules cannot explain."""


class ModelForwardError(RuntimeError):
    """The user's model raised inside its own forward pass."""


def check_count(value, message, minimum=1):
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``; else raise ``CRPError(message)``.

    ``message`` names the argument and what it counts (e.g. ``"k must be a positive number of classes"``); the
    rejected value is appended.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CRPError(f"{message}, got {value!r}")
    return value
