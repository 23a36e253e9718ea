"""Per-process reuse of model objects.

A client call needs a network in the run's initial state before it loads what the server sent.
Building one costs a full random initialisation (about 13 ms for the gaze LeNet, more for larger
nets); resetting a kept one from a saved state dict costs about 1 ms. The initial state is built
under ``torch.manual_seed(seed)``, exactly as the ServerApp builds the global model, so keys a
message does not carry (a personal head never trained yet) start from the same weights on every
client and in every process.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fedpersonal.config import RunConfig
from fedpersonal.device import resolve_device
from fedpersonal.tasks.base import Task

_MAX_ENTRIES = 4
_POOL: dict[tuple[Any, ...], tuple[nn.Module, dict[str, torch.Tensor]]] = {}


def seeded_model(task: Task, seed: int) -> nn.Module:
    """A new model of ``task`` initialised under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return task.build_model()


def pooled_initial_model(task: Task, cfg: RunConfig, reset: bool = True) -> nn.Module:
    """This process's model for (task, run config) on the run's device, reset to the run's initial
    weights (``reset=False`` skips that copy for a caller that overwrites every key next).

    The object is shared: it is valid until the next call for the same run config.
    """
    key = (task.name, tuple(sorted(cfg.to_dict().items())))
    if key not in _POOL:
        if len(_POOL) >= _MAX_ENTRIES:
            _POOL.pop(next(iter(_POOL)))
        model = seeded_model(task, cfg.seed).to(resolve_device(cfg))  # seeded on the CPU: the same on any device
        _POOL[key] = (model, copy.deepcopy(model.state_dict()))
    model, initial = _POOL[key]
    if reset:
        model.load_state_dict(initial)
    return model
