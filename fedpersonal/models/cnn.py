"""A small image classifier with BatchNorm (AdaBN, TENT and FedBN need BN layers)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv 3x3 - BatchNorm - ReLU - max-pool blocks and a global average pool (``body``),
    then a linear classifier (``head``).

    Input: (N, ``in_channels``, H, W) images scaled to [0, 1], H and W >= 8; output (N,
    ``num_classes``) logits. Channel widths are ``width``, 2 ``width`` and 4 ``width``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.body(images))
