"""Local-only training, client half: the whole model is personal and never leaves the device.

The first round starts from the received initial model; afterwards the client's own model (kept in
``context.state``) overrides whatever the server sends. Replies carry an empty ArrayRecord.
"""

from torch import nn

from clients.base import ClientAlgorithm


class LocalOnlyClient(ClientAlgorithm):
    """Trains its own model on its own data; shares nothing."""

    def personal_keys(self, model: nn.Module) -> list[str]:
        """Every key of the model."""
        return list(model.state_dict())
