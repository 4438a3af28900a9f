"""The embedded demo world: procedural scenes with planted concepts and a planted shortcut, and a small CNN for it.

Everything is generated or loaded offline, in seconds, on a CPU::

    import crp_widgets as cw

    demo = cw.demo.load()
    x, label = demo.dataset[9]                 # scenes cycle through the classes; 9 is a "green cross"
    demo.masks(9)                              # {concept: bool [64, 64]} for each concept in scene 9
    x_clean, _ = demo.sample(9, watermark=False)   # the same scene without the watermark
    signals = cw.demo.load_signals()           # the 1-D world: two-channel signals with planted patterns
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import EXPLORE_SEED, TRAIN_SEED, DemoDataset
from .model import DemoNet
from .world import CLASS_NAMES, CONCEPTS, SHORTCUT_CLASS, TWIN_CLASS

__all__ = [
    "CLASS_NAMES",
    "CONCEPTS",
    "EXPLORE_SEED",
    "SHORTCUT_CLASS",
    "TRAIN_SEED",
    "TWIN_CLASS",
    "Demo",
    "DemoDataset",
    "DemoNet",
    "SignalDemo",
    "World",
    "load",
    "load_model",
    "load_signals",
]

WEIGHTS = Path(__file__).parent / "weights" / "demo_cnn.safetensors"


@dataclass
class World:
    """A demo world, ready to explore: a trained model, a dataset with concept masks, and the training metadata.

    Attributes
    ----------
    model : torch.nn.Module
        Trained model with the shipped weights, in eval mode.
    dataset : torch.utils.data.Dataset
        The explore split (held out from training), with ``classes``, ``concepts`` and ``masks(i)``.
    metadata : dict
        Training metadata shipped with the weights (held-out accuracy, ...).
    """

    model: torch.nn.Module = field(repr=False)
    dataset: object
    metadata: dict = field(repr=False)

    @property
    def classes(self) -> list[str]:
        """Class names, indexed by label."""
        return self.dataset.classes

    @property
    def concepts(self) -> list[str]:
        """Names of the planted concepts."""
        return self.dataset.concepts

    def masks(self, index: int) -> dict[str, np.ndarray]:
        """Concept masks of sample ``index``: {concept: bool mask} for each concept present."""
        return self.dataset.masks(index)


@dataclass
class Demo(World):
    """The 2-D demo world: scenes with planted concepts and a planted shortcut, and `DemoNet` (see :class:`World`)."""

    @property
    def shortcut_class(self) -> str:
        """Name of the class the model recognises by its watermark."""
        return self.dataset.shortcut_class

    def sample(self, index: int, watermark: bool | None = None) -> tuple[torch.Tensor, int]:
        """Scene ``index`` as ``(image [3, H, W], label)``, the watermark forced on (True) or off (False) if given."""
        return self.dataset.sample(index, watermark)


def load_model(path: str | Path = WEIGHTS) -> DemoNet:
    """`DemoNet` with the weights at ``path`` (safetensors; default: the shipped ones), in eval mode."""
    from safetensors.torch import load_file

    model = DemoNet(n_classes=len(CLASS_NAMES))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def load(length: int = 1000, seed: int = EXPLORE_SEED) -> Demo:
    """Load the demo: the trained model and ``length`` scenes of world ``seed``.

    Parameters
    ----------
    length : int
        Number of scenes in the data set.
    seed : int
        World seed; the default is the explore split, held out from training (``TRAIN_SEED``).

    Returns
    -------
    Demo
        Model (eval mode), data set, class and concept names, masks.
    """
    metadata = json.loads(WEIGHTS.with_suffix(".json").read_text())
    return Demo(model=load_model(), dataset=DemoDataset(length, seed), metadata=metadata)


SIGNAL_WEIGHTS = Path(__file__).parent / "weights" / "signal_cnn.safetensors"


@dataclass
class SignalDemo(World):
    """The 1-D demo world (CRP paper Sec. 3.5): signals with planted patterns (masks ``bool [L]``) and `SignalNet`."""


def load_signals(length: int = 600, seed: int = 1) -> SignalDemo:
    """Load the 1-D demo: the trained `SignalNet` and ``length`` two-channel signals of world ``seed``.

    Parameters
    ----------
    length : int
        Number of signals in the data set.
    seed : int
        World seed; the default is the explore split, held out from training (seed 0).

    Returns
    -------
    SignalDemo
        Model (eval mode), data set, class and concept names, masks.
    """
    from safetensors.torch import load_file

    from .signal_model import SignalNet
    from .signals import SignalDataset

    dataset = SignalDataset(length, seed)
    model = SignalNet(n_classes=len(dataset.classes))
    model.load_state_dict(load_file(str(SIGNAL_WEIGHTS)))
    metadata = json.loads(SIGNAL_WEIGHTS.with_suffix(".json").read_text())
    return SignalDemo(model=model.eval(), dataset=dataset, metadata=metadata)
