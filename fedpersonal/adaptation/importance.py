"""Importance weights Omega of a model's parameters on unlabelled data: DUA's user prior.

* MAS (Aljundi et al., ECCV 2018): Omega = mean over batches B of
  | d/dtheta (1/|B|) sum_{x in B} ||F(x)||^2 |, F the model's outputs. Needs no labels and
  applies to any task (classification logits or regression outputs).
* Fisher (diagonal, as in EWC): Omega = mean over batches of (d/dtheta NLL(y~ | x))^2 with the
  batch-mean NLL of labels y~ sampled from the model's own softmax. Classification only.

Parameters whose names start with an ``exclude`` prefix (the ``head.`` by default) get no Omega.
The model is in evaluation mode (BN uses its running statistics) and batches are not shuffled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fedpersonal.adaptation.adabn import Forward
from fedpersonal.training import Tensors, iterate_batches

HEAD = ("head.",)
FISHER_START = 1e-8  # the value every Fisher entry starts from
Objective = Callable[[torch.Tensor], torch.Tensor]


def _importance(
    model: nn.Module,
    forward: Forward,
    inputs: Tensors,
    batch_size: int,
    objective: Objective,
    transform: Callable[[torch.Tensor], torch.Tensor],
    exclude: Sequence[str],
    start: float = 0.0,
) -> dict[str, torch.Tensor]:
    """``start`` + the mean over batches of ``transform(grad objective(outputs))`` for every
    non-excluded parameter."""
    params = {name: p for name, p in model.named_parameters() if not name.startswith(tuple(exclude))}
    omega = {name: torch.zeros_like(p) for name, p in params.items()}
    model.eval()
    batches = 0
    for batch in iterate_batches(inputs, batch_size):
        model.zero_grad(set_to_none=True)
        objective(forward(model, batch)).backward()
        for name, p in params.items():
            if p.grad is not None:
                omega[name] += transform(p.grad.detach())
        batches += 1
    model.zero_grad(set_to_none=True)
    return {name: start + value / max(batches, 1) for name, value in omega.items()}


def mas_importance(
    model: nn.Module, forward: Forward, inputs: Tensors, batch_size: int, exclude: Sequence[str] = HEAD
) -> dict[str, torch.Tensor]:
    """MAS Omega: mean over batches of |gradient of the batch-mean squared L2 norm of the outputs|."""
    return _importance(model, forward, inputs, batch_size, lambda out: out.pow(2).sum(dim=1).mean(), torch.abs, exclude)


def fisher_importance(
    model: nn.Module,
    forward: Forward,
    inputs: Tensors,
    batch_size: int,
    generator: torch.Generator,
    exclude: Sequence[str] = HEAD,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher Omega with labels sampled from the model's softmax (``generator`` draws them);
    every entry starts at :data:`FISHER_START` (1e-8), as in DUA's reference code, so no parameter
    has exactly zero importance."""

    def sampled_nll(logits: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        labels = torch.multinomial(log_p.detach().exp(), 1, generator=generator).flatten()
        return F.nll_loss(log_p, labels)

    return _importance(model, forward, inputs, batch_size, sampled_nll, torch.square, exclude, FISHER_START)


Importance = Callable[[nn.Module, Forward, Tensors, int, torch.Generator], dict[str, torch.Tensor]]
IMPORTANCE: dict[str, Importance] = {
    "mas": lambda model, forward, inputs, batch_size, generator: mas_importance(model, forward, inputs, batch_size),
    "fisher": fisher_importance,
}


def importance(
    name: str, model: nn.Module, forward: Forward, inputs: Tensors, batch_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Omega by method ``name`` (a key of :data:`IMPORTANCE`); ``generator`` samples Fisher's labels."""
    if name not in IMPORTANCE:
        raise ValueError(f"unknown importance {name!r}; expected one of {sorted(IMPORTANCE)}")
    return IMPORTANCE[name](model, forward, inputs, batch_size, generator)
