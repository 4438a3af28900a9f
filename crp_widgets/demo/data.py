"""`DemoDataset`: a torch data set view of the procedural demo world."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from . import world

TRAIN_SEED = 0
EXPLORE_SEED = 1


class DemoDataset(Dataset):
    """Scenes ``0 .. length-1`` of demo world ``seed``, rendered on access.

    Parameters
    ----------
    length : int
        Number of scenes.
    seed : int
        World seed; scene ``i`` is a pure function of ``(seed, i)``.

    Attributes
    ----------
    classes : list of str
        Class names, indexed by label.
    concepts : list of str
        Names of the planted concepts (keys of `masks`).
    labels : torch.LongTensor
        Label of every scene, [length]; classes cycle, so the set is balanced.
    shortcut_class : str
        The class that carries the watermark most of the time.
    version : str
        Version of the world generator.
    """

    def __init__(self, length: int = 1000, seed: int = EXPLORE_SEED):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.length = int(length)
        self.seed = int(seed)
        self.version = world.VERSION
        self.classes = list(world.CLASS_NAMES)
        self.concepts = list(world.CONCEPTS)
        self.shortcut_class = world.SHORTCUT_CLASS
        self.labels = torch.arange(self.length) % len(self.classes)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sample(index)

    def __repr__(self) -> str:
        return f"DemoDataset(length={self.length}, seed={self.seed}, version={self.version!r})"

    def _check(self, index: int) -> int:
        """Validate ``index`` (negative counts from the end) and return it as a scene index."""
        index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for DemoDataset of length {self.length}")
        return index % self.length

    def render(self, index: int, watermark: bool | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Render scene ``index``, optionally with the watermark forced on or off.

        Parameters
        ----------
        index : int
            Scene index.
        watermark : bool, optional
            True pastes the watermark in, False removes it, None keeps the scene's own draw; the rest of the
            image is identical in all three cases.

        Returns
        -------
        image : numpy.ndarray
            float32 [3, H, W] in [0, 1].
        masks : dict of str to numpy.ndarray
            bool [H, W] per concept present.
        """
        return world.render(self.seed, self._check(index), watermark)

    def sample(self, index: int, watermark: bool | None = None) -> tuple[torch.Tensor, int]:
        """Scene ``index`` as ``(image [3, H, W], label)``, optionally with the watermark forced on or off."""
        index = self._check(index)
        image, _ = world.render(self.seed, index, watermark)
        return torch.from_numpy(image), int(self.labels[index])

    def masks(self, index: int) -> dict[str, np.ndarray]:
        """Concept masks of scene ``index``: {concept: bool [H, W]} for each concept present."""
        return self.render(index)[1]

    def has_watermark(self, index: int) -> bool:
        """Whether scene ``index`` carries the watermark (cheap: nothing is rendered)."""
        return world.sample_scene(self.seed, self._check(index)).watermark

    def describe(self) -> dict:
        """JSON-able description that identifies the data set (for fingerprints of stores)."""
        return {"name": "crp_widgets.demo", "version": self.version, "seed": self.seed, "length": self.length}
