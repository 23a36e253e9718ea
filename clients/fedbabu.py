"""FedBABU (Oh et al., ICLR 2022): the body is learned federatedly with the head frozen; the head
is fine-tuned for the personal model.

During federated training every client keeps the head at its (shared, seeded) initial weights and
trains the body only; the whole model goes back, so the server averages bodies and the head stays
the initial one. For evaluation the received model is fine-tuned (every parameter) for
``fedbabu.finetune-epochs`` epochs on the client's training split: plain metrics are the received
global model's, ``personalized-<metric>`` the fine-tuned one's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from clients.fedrep import HEAD, train_only
from fedpersonal.config import setting


@dataclass(frozen=True)
class FedBABUSettings:
    """Run-config section ``fedbabu``."""

    SECTION: ClassVar[str] = "fedbabu"

    finetune_epochs: int = setting(5, "an integer in [1, 1000] (fine-tuning epochs of the personal model)",
                                   lambda v: 1 <= v <= 1000)  # fmt: skip


class FedBABUClient(ClientAlgorithm):
    """Body-only local training; a fine-tuned copy for personalized evaluation."""

    def train(self, msg: Message) -> Message:
        """Train the body with the head frozen; reply with the whole model (the head unchanged)."""
        model = self.model_from(msg)
        try:
            train_only(model, False, HEAD)
            loss = self.local_train(model, server_round_of(msg))
        finally:
            train_only(model, None, HEAD)
        return self.reply(msg, {"train-loss": loss, "num-examples": self.data.num_train}, self.outgoing_arrays(model))

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """A copy of ``model`` fine-tuned on the training split."""
        tuned = copy.deepcopy(model)
        self.local_train(tuned, server_round, epochs=self.cfg.section(FedBABUSettings).finetune_epochs)
        return tuned
