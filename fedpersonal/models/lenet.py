"""LeNet gaze network of MPIIGaze (Zhang et al., CVPR 2015) with head pose concatenated."""

from __future__ import annotations

import torch
from torch import nn


class GazeLeNet(nn.Module):
    """conv 20@5x5, pool, conv 50@5x5, pool, fc 500 (``body``); concat pose, fc 2 (``head``).

    Input: (N, 1, 36, 60) images scaled to [0, 1] and (N, 2) head pose; output (N, 2) pitch/yaw.
    ``batchnorm=True`` adds BatchNorm after each conv (so AdaBN applies). Not after fc 500: in a
    pilot that made training fail (17.7 deg vs 6.5 deg on unseen users), as the fc features carry
    the gaze itself and per-batch normalisation of them distorts the regression.
    """

    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()

        def conv(channels_in: int, channels_out: int) -> list[nn.Module]:
            layer = nn.Conv2d(channels_in, channels_out, kernel_size=5)
            return [layer, nn.BatchNorm2d(channels_out)] if batchnorm else [layer]

        self.body = nn.Sequential(
            *conv(1, 20),
            nn.MaxPool2d(2),
            *conv(20, 50),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(50 * 6 * 12, 500),
            nn.ReLU(),
        )
        self.head = nn.Linear(500 + 2, 2)

    def forward(self, images: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Predict (pitch, yaw) in radians."""
        return self.head(torch.cat([self.body(images), pose], dim=1))
