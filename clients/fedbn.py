"""FedBN (Li et al., ICLR 2021): BatchNorm layers stay local; everything else is averaged.

The BatchNorm parameters (scale and shift) and statistics (running mean and variance, the batch
counter) of every BatchNorm layer never leave the device: they are kept in ``context.state`` and
override what the server sends. On a model without BatchNorm (the gaze LeNet unless
``gaze.batchnorm = true``) FedBN is FedAvg.
"""

from __future__ import annotations

from torch import nn

from clients.base import ClientAlgorithm


class FedBNClient(ClientAlgorithm):
    """FedAvg's client that keeps every BatchNorm layer personal."""

    def personal_keys(self, model: nn.Module) -> list[str]:
        """Every key of every BatchNorm layer (found by layer type, not by name)."""
        return [
            f"{name}.{key}"
            for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for key in module.state_dict()
        ]
