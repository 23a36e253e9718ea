"""Per-FedAvg (Fallah et al., NeurIPS 2020), first-order version: a global model that adapts well
after one local step (MAML).

Each local step takes two batches: ``temp = w - alpha grad f(w; D1)``, then
``w <- w - beta grad f(temp; D2)`` (first order: the gradient at ``temp`` is applied to ``w``);
``beta`` is the run's ``lr``, ``alpha`` is ``perfedavg.alpha``. The model goes back as in FedAvg.
Evaluation: plain metrics are the received global model's; ``personalized-<metric>`` those of the
model after ``perfedavg.personal-steps`` SGD steps of size ``alpha`` on the client's training split.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, round_generator, server_round_of
from fedpersonal.config import setting
from fedpersonal.training import Tensors, iterate_batches

Loss = Callable[[nn.Module, Tensors], torch.Tensor]


@dataclass(frozen=True)
class PerFedAvgSettings:
    """Run-config section ``perfedavg``."""

    SECTION: ClassVar[str] = "perfedavg"

    alpha: float = setting(0.01, "a number in (0, 10] (inner step size alpha)", lambda v: 0 < v <= 10)
    personal_steps: int = setting(1, "an integer in [1, 1000] (adaptation steps before the personalized "
                                  "evaluation)", lambda v: 1 <= v <= 1000)  # fmt: skip


def gradients(model: nn.Module, loss: Loss, batch: Tensors) -> list[torch.Tensor]:
    """The gradient of ``loss`` at ``model`` on ``batch``, one tensor per parameter."""
    model.zero_grad(set_to_none=True)
    value = loss(model, batch)
    return list(torch.autograd.grad(value, list(model.parameters())))


def fo_maml_step(model: nn.Module, loss: Loss, first: Tensors, second: Tensors, alpha: float, beta: float) -> None:
    """One first-order MAML step on ``model``: the gradient at ``w - alpha grad(w; first)`` on
    ``second``, applied to ``w`` with step ``beta``."""
    temp = copy.deepcopy(model)
    inner = gradients(model, loss, first)
    with torch.no_grad():
        for param, grad in zip(temp.parameters(), inner):
            param.sub_(alpha * grad)
    outer = gradients(temp, loss, second)
    with torch.no_grad():
        for param, grad in zip(model.parameters(), outer):
            param.sub_(beta * grad)


class PerFedAvgClient(ClientAlgorithm):
    """First-order MAML local training; a one-step-adapted copy for personalized evaluation."""

    def train(self, msg: Message) -> Message:
        """``local-epochs`` of FO-MAML steps over pairs of batches; reply with the model."""
        model = self.model_from(msg)
        model.train()
        alpha = self.cfg.section(PerFedAvgSettings).alpha
        generator = round_generator(self.cfg, self.partition_id, server_round_of(msg))
        total, seen = 0.0, 0
        for _ in range(self.cfg.local_epochs):
            batches = list(iterate_batches(self.data.train, self.cfg.batch_size, generator))
            for first, second in zip(batches[0::2], batches[1::2]):
                fo_maml_step(model, self.task.loss, first, second, alpha, self.cfg.lr)
                with torch.no_grad():
                    total += float(self.task.loss(model, second)) * len(second[0])
                seen += len(second[0])
        metrics = {"train-loss": total / max(seen, 1), "num-examples": self.data.num_train}
        return self.reply(msg, metrics, self.outgoing_arrays(model))

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """A copy of ``model`` after ``perfedavg.personal-steps`` SGD steps of size ``alpha``."""
        settings = self.cfg.section(PerFedAvgSettings)
        adapted = copy.deepcopy(model)
        adapted.train()
        generator = round_generator(self.cfg, self.partition_id, server_round)
        batches = iterate_batches(self.data.train, self.cfg.batch_size, generator)
        for _, batch in zip(range(settings.personal_steps), batches):
            step = gradients(adapted, self.task.loss, batch)
            with torch.no_grad():
                for param, grad in zip(adapted.parameters(), step):
                    param.sub_(settings.alpha * grad)
        return adapted
