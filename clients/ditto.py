"""Ditto (Li et al., ICML 2021): a personal model regularised towards the global one.

Each round the client (1) trains the received global model ``w`` as FedAvg does and sends it back,
and (2) trains its personal model ``v`` (kept in ``context.state``, starting from the first global
model it receives) for ``local-epochs`` on ``loss(v) + lambda/2 ||v - w_global||^2``, with
``w_global`` the model it received this round. Evaluation: plain metrics are the received global
model's, ``personalized-<metric>`` the personal model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from clients.fedprox import proximal_term
from fedpersonal.config import setting
from fedpersonal.params import to_arrays
from fedpersonal.training import Tensors

PERSONAL_MODEL = "ditto-personal"


@dataclass(frozen=True)
class DittoSettings:
    """Run-config section ``ditto``."""

    SECTION: ClassVar[str] = "ditto"

    lam: float = setting(0.1, "a number in [0, 100] (lambda: pull of the personal model to the global)",
                         lambda v: 0 <= v <= 100)  # fmt: skip


class DittoClient(ClientAlgorithm):
    """FedAvg's training of the global model, plus a personal model with a proximal pull."""

    private_records = ("personal", PERSONAL_MODEL)

    def train(self, msg: Message) -> Message:
        """Train and send the global model; train and keep the personal model."""
        received = self.model_from(msg)
        personal = self.stored_model(PERSONAL_MODEL, received)
        anchor = [p.detach().clone() for p in received.parameters()]
        server_round = server_round_of(msg)
        loss = self.local_train(received, server_round)
        lam = self.cfg.section(DittoSettings).lam

        def personal_loss(net: nn.Module, batch: Tensors) -> torch.Tensor:
            return self.task.loss(net, batch) + lam / 2 * proximal_term(net, anchor)

        personal_loss_value = self.local_train(personal, server_round, loss=personal_loss)
        self.context.state[PERSONAL_MODEL] = to_arrays(personal)
        metrics = {"train-loss": loss, "personal-train-loss": personal_loss_value, "num-examples": self.data.num_train}
        return self.reply(msg, metrics, self.outgoing_arrays(received))

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """The personal model."""
        return self.stored_model(PERSONAL_MODEL, model)
