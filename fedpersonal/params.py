"""Model parameters <-> Flower ArrayRecord, and selection of shared vs personal keys."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord
from torch import nn

CONTROL_PREFIX = "control/"  # keys of control variates packed next to a model's (SCAFFOLD)


def select_keys(keys: Iterable[str], prefixes: Iterable[str]) -> list[str]:
    """The keys that start with any of ``prefixes`` (e.g. ``["body."]`` for a shared body)."""
    wanted = tuple(prefixes)
    return [key for key in keys if key.startswith(wanted)]


def to_arrays(model: nn.Module, keys: Iterable[str] | None = None) -> ArrayRecord:
    """The model's state (or only ``keys`` of it) as an ArrayRecord, copied out of the model."""
    state = model.state_dict()
    chosen = state.keys() if keys is None else keys
    return ArrayRecord({key: state[key].detach().cpu() for key in chosen})


def load_arrays(model: nn.Module, arrays: ArrayRecord, strict: bool = True) -> None:
    """Copy ``arrays`` into ``model``; with ``strict=False`` only the keys present are replaced.

    Raises ``KeyError`` naming the keys that do not belong to the model.
    """
    state = arrays.to_torch_state_dict()
    unexpected = sorted(set(state) - set(model.state_dict()))
    if unexpected:
        raise KeyError(f"arrays hold keys the model does not have: {unexpected}")
    with torch.no_grad():
        model.load_state_dict(state, strict=strict)


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # torch's normalisation-layer buffers


def is_statistic(key: str) -> bool:
    """Whether a state-dict key names a normalisation layer's running statistic (by torch's names)."""
    return key.rsplit(".", 1)[-1] in STATISTICS
