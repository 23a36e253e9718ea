"""LeNet gaze network of MPIIGaze (Zhang et al., CVPR 2015) with head pose concatenated."""

from __future__ import annotations

import torch
from torch import nn


class GazeLeNet(nn.Module):
    """conv 20@5x5, pool, conv 50@5x5, pool, fc 500 (``body``); concat pose, fc 2 (``head``).

    Input: (N, 1, 36, 60) images scaled to [0, 1] and (N, 2) head pose; output (N, 2) pitch/yaw.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(50 * 6 * 12, 500),
            nn.ReLU(),
        )
        self.head = nn.Linear(500 + 2, 2)

    def forward(self, images: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Predict (pitch, yaw) in radians."""
        return self.head(torch.cat([self.body(images), pose], dim=1))
