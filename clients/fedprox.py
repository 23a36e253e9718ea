"""FedProx (Li et al., MLSys 2020), client half: local SGD on loss + mu/2 ||w - w_global||^2.

``mu`` comes from the train message's config record (key ``proximal-mu``), as Flower's FedProx
strategy sends it; ``w_global`` is the received model, ``||.||^2`` the squared L2 distance over
every trainable parameter. The reported ``train-loss`` includes the proximal term.
"""

from __future__ import annotations

import torch
from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from fedpersonal.training import Tensors

PROXIMAL_MU = "proximal-mu"


def proximal_term(model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor:
    """``||w - anchor||^2`` summed over ``model``'s parameters (in ``parameters()`` order)."""
    return sum((((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor)), torch.zeros(()))


def proximal_mu(msg: Message) -> float:
    """The ``mu`` of a train message's config (FedProx's server sends it); a ValueError if absent."""
    config = msg.content.config_records["config"]
    if PROXIMAL_MU not in config:
        raise ValueError(f"train message has no '{PROXIMAL_MU}' in its config; FedProx's server sends it")
    return float(config[PROXIMAL_MU])  # type: ignore[arg-type]


class FedProxClient(ClientAlgorithm):
    """FedAvg's client with the proximal term towards the received global model."""

    def train(self, msg: Message) -> Message:
        """Local training of the received model on the task loss plus the proximal term."""
        mu = proximal_mu(msg)
        model = self.model_from(msg)
        anchor = [p.detach().clone() for p in model.parameters()]

        def loss(net: nn.Module, batch: Tensors) -> torch.Tensor:
            return self.task.loss(net, batch) + mu / 2 * proximal_term(net, anchor)

        return self.trained_reply(msg, model, self.local_train(model, server_round_of(msg), loss=loss))
