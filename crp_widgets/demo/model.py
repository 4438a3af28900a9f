"""`DemoNet`: the small CNN shipped with the demo world."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CHANNELS = (16, 32, 64, 96)


def _features(channels: tuple[int, ...]) -> nn.Sequential:
    """Conv-BN-ReLU blocks, each but the last followed by 2x2 max pooling."""
    layers = OrderedDict()
    in_channels = 3
    for i, out_channels in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        layers[f"bn{i}"] = nn.BatchNorm2d(out_channels)
        layers[f"relu{i}"] = nn.ReLU()
        if i < len(channels):
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        in_channels = out_channels
    return nn.Sequential(layers)


class DemoNet(nn.Module):
    """Small VGG-like CNN for 64x64 demo images.

    Layers are named: ``features.conv1 .. features.conv4`` (each followed by its BatchNorm ``bn<i>`` and ``relu<i>``,
    and max pooling ``pool<i>`` after the first three), ``pool`` (global max pooling) and ``classifier.fc1``,
    ``classifier.relu``, ``classifier.fc2``. ``features.conv4`` is the last convolution, with ``CHANNELS[-1]``
    channels at 8x8. Global max pooling passes each channel's evidence from one place in the image, so a channel's
    conditional heatmap shows one concept instance rather than a mix of everything it responds to.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    channels : tuple of int
        Output channels of the four convolutions.
    hidden : int
        Width of ``classifier.fc1``.
    """

    def __init__(self, n_classes: int = 10, channels: tuple[int, ...] = CHANNELS, hidden: int = 128):
        super().__init__()
        self.features = _features(tuple(channels))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(channels[-1], hidden),
                relu=nn.ReLU(),
                fc2=nn.Linear(hidden, n_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, n_classes] of images x [N, 3, 64, 64]."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
