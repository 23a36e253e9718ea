"""Local training: minibatches over tensors, SGD epochs, batched inference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fedpersonal.config import RunConfig

Tensors = tuple[torch.Tensor, ...]


def stack(parts: list[Tensors]) -> Tensors:
    """Concatenate aligned tensor tuples (e.g. several users' data) column by column."""
    return tuple(torch.cat(column) for column in zip(*parts))


def iterate_batches(tensors: Tensors, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensors]:
    """Yield aligned minibatches (slices, on the tensors' device); shuffled with ``generator`` when one
    is given (a CPU generator: the same order on any device)."""
    count = len(tensors[0])
    order = torch.randperm(count, generator=generator).to(tensors[0].device) if generator is not None else None
    for start in range(0, count, batch_size):
        if order is None:
            yield tuple(t[start : start + batch_size] for t in tensors)
        else:
            index = order[start : start + batch_size]
            yield tuple(t[index] for t in tensors)


def epoch_batches(tensors: Tensors, batch_size: int, generator: torch.Generator, epochs: int) -> Iterator[Tensors]:
    """The minibatches of ``epochs`` shuffled passes over ``tensors``, one after another (each pass
    draws its order from ``generator`` when it starts)."""
    for _ in range(epochs):
        yield from iterate_batches(tensors, batch_size, generator)


@dataclass(frozen=True)
class SGDSettings:
    """The client optimizer's settings: SGD learning rate, momentum and weight decay."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> SGDSettings:
        """The run's ``lr``, ``momentum`` and ``weight-decay``."""
        return cls(cfg.lr, cfg.momentum, cfg.weight_decay)


def sgd_optimizer(params: Iterable[nn.Parameter], settings: SGDSettings) -> torch.optim.SGD:
    """SGD over ``params`` with ``settings``."""
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def train_epochs(
    model: nn.Module,
    tensors: Tensors,
    loss_fn: Callable[[nn.Module, Tensors], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    grad_clip: float = 0.0,
    max_steps: int | None = None,
) -> float:
    """Run ``epochs`` passes of minibatch training; return the sample-weighted mean loss.

    ``grad_clip`` > 0 rescales each step's gradient to at most that global L2 norm; ``max_steps``
    stops after that many optimizer steps.
    """
    model.train()
    total, seen, steps = 0.0, 0, 0
    for batch in epoch_batches(tensors, batch_size, generator, epochs):
        if max_steps is not None and steps >= max_steps:
            break
        steps += 1
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        size = len(batch[0])
        total += float(loss.detach()) * size
        seen += size
    return total / max(seen, 1)
