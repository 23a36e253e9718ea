"""APFL (Deng et al., 2020): adaptive personalized FL, a personal model mixed with the global one.

Each client keeps a local model ``v`` and a mixing weight ``alpha`` (``context.state``). On every
batch it takes one SGD step of the global copy ``w`` on its loss (sent back as in FedAvg), and one
step of ``v`` and of ``alpha`` on the loss of the mixture ``v_bar = alpha v + (1 - alpha) w``
(with ``w`` before its step): ``v <- v - lr alpha g``, ``alpha <- alpha - lr <v - w, g>`` clipped to
[0, 1], where ``g`` is the gradient at ``v_bar``. Both steps are plain SGD with the run's ``lr``
(no momentum, no weight decay, no clipping). BatchNorm statistics of ``v`` follow the mixture's.
Evaluation: plain metrics are the received global model's, ``personalized-<metric>`` the mixture's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import ConfigRecord, Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from clients.perfedavg import Loss, gradients
from fedpersonal.config import setting
from fedpersonal.params import to_arrays
from fedpersonal.training import Tensors

PERSONAL_MODEL, MIXING = "apfl-personal", "apfl-alpha"


@dataclass(frozen=True)
class APFLSettings:
    """Run-config section ``apfl``."""

    SECTION: ClassVar[str] = "apfl"

    alpha: float = setting(0.25, "a number in [0, 1] (initial mixing weight of the personal model)",
                           lambda v: 0 <= v <= 1)  # fmt: skip


def mixture(personal: nn.Module, global_model: nn.Module, alpha: float) -> nn.Module:
    """A model whose every float array is ``alpha personal + (1 - alpha) global``."""
    mixed = copy.deepcopy(personal)
    personal_state, global_state = personal.state_dict(), global_model.state_dict()
    with torch.no_grad():
        for key, value in mixed.state_dict().items():
            if value.is_floating_point():
                value.copy_(alpha * personal_state[key] + (1 - alpha) * global_state[key])
    return mixed


def apfl_step(personal: nn.Module, model: nn.Module, alpha: float, loss: Loss, batch: Tensors, lr: float) -> float:
    """One APFL step on ``batch``: SGD of ``model`` (the global copy) on its loss, of ``personal``
    and of the mixing weight on the mixture's loss; returns the new mixing weight."""
    mixed = mixture(personal, model, alpha)
    mixed.train()
    at_mixture = gradients(mixed, loss, batch)  # the forward pass also moves the mixture's BN statistics
    own = gradients(model, loss, batch)
    with torch.no_grad():
        alpha_grad = sum(
            float(((v - w) * g).sum()) for v, w, g in zip(personal.parameters(), model.parameters(), at_mixture)
        )
        for w, g in zip(model.parameters(), own):
            w.sub_(lr * g)
        for v, g in zip(personal.parameters(), at_mixture):
            v.sub_(lr * alpha * g)
        for buffer, mixed_buffer in zip(personal.buffers(), mixed.buffers()):
            buffer.copy_(mixed_buffer)
    return min(1.0, max(0.0, alpha - lr * alpha_grad))


class APFLClient(ClientAlgorithm):
    """Global and personal steps on every batch; the mixing weight learned by gradient."""

    private_records = ("personal", PERSONAL_MODEL)

    def personal_state(self, received: nn.Module) -> tuple[nn.Module, float]:
        """The saved personal model and mixing weight (a copy of ``received`` and ``apfl.alpha`` at first)."""
        personal = self.stored_model(PERSONAL_MODEL, received)
        mixing = self.context.state.config_records.get(MIXING)
        alpha = float(mixing["alpha"]) if mixing is not None else self.cfg.section(APFLSettings).alpha  # type: ignore[arg-type]
        return personal, alpha

    def train(self, msg: Message) -> Message:
        """One global and one personal step per batch for ``local-epochs``; reply with the global copy."""
        model = self.model_from(msg)
        personal, alpha = self.personal_state(model)
        model.train()

        def step(batch: Tensors) -> nn.Module:
            nonlocal alpha
            alpha = apfl_step(personal, model, alpha, self.task.loss, batch, self.cfg.lr)
            return model

        loss = self.batch_steps(server_round_of(msg), step)
        self.context.state[PERSONAL_MODEL] = to_arrays(personal)
        self.context.state[MIXING] = ConfigRecord({"alpha": alpha})
        metrics = {"train-loss": loss, "alpha": alpha, "num-examples": self.data.num_train}
        return self.reply(msg, metrics, self.outgoing_arrays(model))

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """The mixture of the personal and the received model."""
        personal, alpha = self.personal_state(model)
        return mixture(personal, model, alpha)
