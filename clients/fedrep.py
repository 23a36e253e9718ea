"""FedRep (Collins et al., ICML 2021): shared representation, personal head, trained in turns.

Each round the client first trains its personal head with the body frozen for
``fedrep.head-epochs`` epochs, then the body with the head frozen for ``local-epochs`` epochs, and
sends the body only (FedAvg of the bodies); the head stays in ``context.state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from fedpersonal.config import setting

HEAD = "head."


@dataclass(frozen=True)
class FedRepSettings:
    """Run-config section ``fedrep``."""

    SECTION: ClassVar[str] = "fedrep"

    head_epochs: int = setting(5, "an integer in [1, 1000] (epochs of the head, body frozen)", lambda v: 1 <= v <= 1000)


def train_only(model: nn.Module, trainable: bool | None, prefix: str) -> None:
    """Make the parameters under ``prefix`` trainable iff ``trainable``, the others iff not
    (``trainable=None``: everything trainable again)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(True if trainable is None else name.startswith(prefix) == trainable)


class FedRepClient(ClientAlgorithm):
    """Head epochs (body frozen), then body epochs (head frozen); sends the body."""

    personal_prefixes = (HEAD,)

    def train(self, msg: Message) -> Message:
        """Train head then body; reply with the body."""
        model = self.model_from(msg)
        server_round = server_round_of(msg)
        try:
            train_only(model, True, HEAD)
            self.local_train(model, server_round, epochs=self.cfg.section(FedRepSettings).head_epochs)
            train_only(model, False, HEAD)
            loss = self.local_train(model, server_round)
        finally:
            train_only(model, None, HEAD)
        return self.reply(msg, {"train-loss": loss, "num-examples": self.data.num_train}, self.outgoing_arrays(model))
