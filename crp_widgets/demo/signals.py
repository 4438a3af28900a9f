"""Procedural 1-D demo world: two-channel signals with planted patterns and a time mask for each (CRP Sec. 3.5).

Every signal is noise on a slowly wandering baseline, with two planted patterns out of four: a *peak* (narrow
bump up), a *valley* (narrow dip), a *plateau* (a raised flat segment with soft edges) and a *burst* (a short
oscillation under a Gaussian envelope). Each pattern lies in its own half of the time axis, on a randomly drawn
input channel. The six classes are the six pairs of patterns, so every pattern is shared by three classes and a
model has to detect each pattern to tell the classes apart. A signal is a pure function of ``(seed, index)``.

::

    import crp_widgets as cw

    signals = cw.demo.load_signals()
    x, label = signals.dataset[4]          # x: float32 [2, 256]; classes cycle, 4 is "valley + burst"
    signals.masks(4)                       # {"valley": bool [256], "burst": bool [256]}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

VERSION = "1"
LENGTH = 256
CHANNELS = 2
PATTERNS = ("peak", "valley", "plateau", "burst")
CLASS_PATTERNS = tuple(itertools.combinations(PATTERNS, 2))
CLASS_NAMES = tuple(" + ".join(pair) for pair in CLASS_PATTERNS)
TRAIN_SEED = 0
EXPLORE_SEED = 1
NOISE = 0.08
# The two slots patterns are placed in (start, end of the allowed centre range), one pattern per slot.
SLOTS = ((40, 88), (168, 216))

_T = np.arange(LENGTH, dtype=np.float64)


@dataclass(frozen=True)
class Planted:
    """One planted pattern: what it is, where, on which channel, and its shape parameters."""

    pattern: str
    channel: int
    centre: float
    width: float
    amplitude: float
    period: float


def _pattern(planted: Planted) -> tuple[np.ndarray, np.ndarray]:
    """The pattern's curve over the time axis and its boolean mask (where it differs visibly from zero)."""
    offset = _T - planted.centre
    if planted.pattern in ("peak", "valley"):
        sign = 1.0 if planted.pattern == "peak" else -1.0
        curve = sign * planted.amplitude * np.exp(-0.5 * (offset / planted.width) ** 2)
        mask = np.abs(offset) <= 2.5 * planted.width
    elif planted.pattern == "plateau":
        half, edge = planted.width, 2.0
        curve = planted.amplitude / (1 + np.exp((np.abs(offset) - half) / edge))
        mask = np.abs(offset) <= half + 2 * edge
    else:  # burst
        envelope = np.exp(-0.5 * (offset / planted.width) ** 2)
        curve = planted.amplitude * envelope * np.sin(2 * np.pi * offset / planted.period)
        mask = np.abs(offset) <= 2.0 * planted.width
    return curve, mask


def draw(seed: int, index: int) -> tuple[int, list[Planted], int]:
    """The random choices of signal ``index`` of world ``seed``: label, planted patterns, noise seed.

    Parameters
    ----------
    seed : int
        World seed.
    index : int
        Signal index; the label is ``index % 6`` (balanced classes).

    Returns
    -------
    label : int
    planted : list[Planted]
        The class's two patterns, each in its own slot.
    noise_seed : int
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1001]))
    label = index % len(CLASS_NAMES)
    slots = rng.permutation(len(SLOTS))
    planted = []
    for pattern, slot in zip(CLASS_PATTERNS[label], slots):
        low, high = SLOTS[slot]
        centre = float(rng.uniform(low, high))
        channel = int(rng.integers(CHANNELS))
        if pattern in ("peak", "valley"):
            width, amplitude, period = rng.uniform(2.5, 5.0), rng.uniform(0.8, 1.2), 0.0
        elif pattern == "plateau":
            width, amplitude, period = rng.uniform(14.0, 26.0), rng.uniform(0.6, 0.9), 0.0
        else:
            width, amplitude, period = rng.uniform(7.0, 11.0), rng.uniform(0.6, 0.9), rng.uniform(5.0, 8.0)
        planted.append(Planted(pattern, channel, centre, float(width), float(amplitude), float(period)))
    return label, planted, int(rng.integers(2**62))


def render(seed: int, index: int) -> tuple[np.ndarray, int, dict[str, np.ndarray], list[Planted]]:
    """Signal ``index`` of world ``seed``.

    Returns
    -------
    signal : numpy.ndarray
        float32 ``[2, 256]``.
    label : int
    masks : dict of str to numpy.ndarray
        bool ``[256]`` per planted pattern.
    planted : list[Planted]
    """
    label, planted, noise_seed = draw(seed, index)
    rng = np.random.default_rng(noise_seed)
    wander_amplitude = rng.uniform(0.0, 0.15, size=(CHANNELS, 1))
    wander_period = rng.uniform(300.0, 600.0, size=(CHANNELS, 1))
    wander_phase = rng.uniform(0.0, 2 * np.pi, size=(CHANNELS, 1))
    signal = wander_amplitude * np.sin(2 * np.pi * _T / wander_period + wander_phase)
    signal = signal + NOISE * rng.standard_normal((CHANNELS, LENGTH))
    masks = {}
    for item in planted:
        curve, mask = _pattern(item)
        signal[item.channel] += curve
        masks[item.pattern] = mask
    return signal.astype(np.float32), label, masks, planted


class SignalDataset(Dataset):
    """Signals ``0 .. length-1`` of the 1-D demo world ``seed``, generated on access.

    Parameters
    ----------
    length : int
        Number of signals.
    seed : int
        World seed; signal ``i`` is a pure function of ``(seed, i)``.

    Attributes
    ----------
    classes : list of str
        Class names (pairs of patterns), indexed by label.
    concepts : list of str
        The planted patterns (keys of `masks`).
    labels : torch.LongTensor
        Label of every signal, [length]; classes cycle.
    version : str
        Version of the generator.
    """

    def __init__(self, length: int = 600, seed: int = EXPLORE_SEED):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.length, self.seed, self.version = int(length), int(seed), VERSION
        self.classes = list(CLASS_NAMES)
        self.concepts = list(PATTERNS)
        self.labels = torch.arange(self.length) % len(self.classes)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"SignalDataset(length={self.length}, seed={self.seed}, version={self.version!r})"

    def _check(self, index: int) -> int:
        index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for SignalDataset of length {self.length}")
        return index % self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        signal, label, _, _ = render(self.seed, self._check(index))
        return torch.from_numpy(signal), label

    def masks(self, index: int) -> dict[str, np.ndarray]:
        """Pattern masks of signal ``index``: {pattern: bool [L]} for its two planted patterns."""
        return render(self.seed, self._check(index))[2]

    def planted(self, index: int) -> list[Planted]:
        """The planted patterns of signal ``index`` (pattern, channel, centre, shape)."""
        return draw(self.seed, self._check(index))[1]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All signals as ``float32 [N, 2, L]`` and their labels ``[N]``."""
        signals = np.stack([render(self.seed, i)[0] for i in range(self.length)]) if self.length else None
        x = torch.from_numpy(signals) if signals is not None else torch.zeros(0, CHANNELS, LENGTH)
        return x, self.labels.clone()

    def describe(self) -> dict:
        """JSON-able description that identifies the data set (for fingerprints of stores)."""
        return {"name": "crp_widgets.demo.signals", "version": self.version, "seed": self.seed, "length": self.length}
