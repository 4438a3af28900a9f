"""`SignalNet`: the small 1-D CNN shipped with the 1-D demo world (CRP paper Sec. 3.5)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CHANNELS = (16, 32, 48)
KERNELS = (7, 7, 7)


class SignalNet(nn.Module):
    """Small 1-D CNN for two-channel signals of length 256.

    Layers are named ``features.conv1 .. features.conv3`` (each followed by ``bn<i>`` and ``relu<i>``, and max
    pooling ``pool<i>`` after the first two), ``pool`` (global max pooling over time) and ``classifier.fc1``,
    ``classifier.relu``, ``classifier.fc2``. The receptive field of a ``features.conv3`` neuron spans 46 samples.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    in_channels : int
        Input channels of the signals.
    channels : tuple of int
        Output channels of the three convolutions.
    hidden : int
        Width of ``classifier.fc1``.
    """

    def __init__(self, n_classes: int = 6, in_channels: int = 2, channels: tuple[int, ...] = CHANNELS,
                 hidden: int = 64):  # fmt: skip
        super().__init__()
        layers = OrderedDict()
        previous = in_channels
        for i, (width, kernel) in enumerate(zip(channels, KERNELS), start=1):
            layers[f"conv{i}"] = nn.Conv1d(previous, width, kernel_size=kernel, padding=kernel // 2, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm1d(width)
            layers[f"relu{i}"] = nn.ReLU()
            if i < len(channels):
                layers[f"pool{i}"] = nn.MaxPool1d(2)
            previous = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(channels[-1], hidden), relu=nn.ReLU(), fc2=nn.Linear(hidden, n_classes))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, n_classes] of signals x [N, 2, L]."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
