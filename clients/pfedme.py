"""pFedMe (Dinh et al., NeurIPS 2020): personalized models as Moreau envelopes of the local loss.

On every batch the client first approximately solves ``theta = argmin f(theta) + lam/2 ||theta - w||^2``
with ``pfedme.inner-steps`` gradient steps of size ``pfedme.inner-lr`` (starting from ``w``), then moves
its copy of the global model towards it: ``w <- w - lr lam (w - theta)``. ``w`` goes back as in FedAvg
(the server's step is FedAvg's average, the paper's beta = 1); the last ``theta`` is the personal model
(``pfedme-personal``). Evaluation: plain metrics are the received global model's,
``personalized-<metric>`` the personal model's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from clients.fedprox import proximal_term
from clients.perfedavg import Loss, gradients
from fedpersonal.config import setting
from fedpersonal.params import to_arrays
from fedpersonal.training import Tensors

PERSONAL_MODEL = "pfedme-personal"


@dataclass(frozen=True)
class PFedMeSettings:
    """Run-config section ``pfedme``."""

    SECTION: ClassVar[str] = "pfedme"

    lam: float = setting(15.0, "a number in (0, 1000] (lambda: regularisation towards the global model)",
                         lambda v: 0 < v <= 1000)  # fmt: skip
    inner_steps: int = setting(
        5, "an integer in [1, 100] (steps solving for the personal model)", lambda v: 1 <= v <= 100
    )
    inner_lr: float = setting(0.01, "a number in (0, 10] (step size of those steps)", lambda v: 0 < v <= 10)


def pfedme_step(
    model: nn.Module, personal: nn.Module, loss: Loss, batch: Tensors, settings: PFedMeSettings, lr: float
) -> None:
    """One pFedMe step on ``batch``: ``personal`` approximately minimises the regularised loss around
    ``model`` (from ``model``'s weights), then ``model`` moves towards it."""
    personal.load_state_dict(model.state_dict())
    anchor = [p.detach().clone() for p in model.parameters()]

    def regularised(net: nn.Module, data: Tensors) -> torch.Tensor:
        return loss(net, data) + settings.lam / 2 * proximal_term(net, anchor)

    for _ in range(settings.inner_steps):
        step = gradients(personal, regularised, batch)
        with torch.no_grad():
            for theta, grad in zip(personal.parameters(), step):
                theta.sub_(settings.inner_lr * grad)
    with torch.no_grad():
        for w, theta in zip(model.parameters(), personal.parameters()):
            w.sub_(lr * settings.lam * (w - theta))
        # Only the personal model sees data: the global copy takes its BatchNorm statistics, or they
        # would stay at their initial values forever (mean 0, variance 1).
        for buffer_w, buffer_theta in zip(model.buffers(), personal.buffers()):
            buffer_w.copy_(buffer_theta)


class PFedMeClient(ClientAlgorithm):
    """pFedMe's bi-level local training; the personal model kept for evaluation."""

    private_records = ("personal", PERSONAL_MODEL)

    def train(self, msg: Message) -> Message:
        """pFedMe steps for ``local-epochs``; reply with the global copy, keep the personal model."""
        model = self.model_from(msg)
        personal = copy.deepcopy(model)
        model.train()
        personal.train()
        settings = self.cfg.section(PFedMeSettings)

        def step(batch: Tensors) -> nn.Module:
            pfedme_step(model, personal, self.task.loss, batch, settings, self.cfg.lr)
            return personal

        loss = self.batch_steps(server_round_of(msg), step)
        self.context.state[PERSONAL_MODEL] = to_arrays(personal)
        metrics = {"train-loss": loss, "num-examples": self.data.num_train}
        return self.reply(msg, metrics, self.outgoing_arrays(model))

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """The personal model θ."""
        return self.stored_model(PERSONAL_MODEL, model)
