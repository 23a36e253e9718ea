"""Where tensors live: run-config key ``device`` as a torch device, and the moves to and from it.

``device = "auto"`` is CUDA when ``torch.cuda.is_available()``, else the CPU; ``"cpu"``, ``"cuda"`` and
``"cuda:N"`` are what they say. A name is resolved once per process (:func:`resolve_device`); asking for a
GPU the process cannot see is a :class:`~fedpersonal.config.ConfigError` naming the key, when the run
config is parsed. The rule everywhere else: a model is moved to the device where it is built, data where
it enters a client or a strategy (:func:`to_device`: one pinned, asynchronous host-to-device copy of a
client's whole split, then every minibatch is a slice on the device), and what crosses a Flower message
(numpy arrays in an ArrayRecord) is copied back to the host first (:func:`to_numpy`, ``.cpu()``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

from fedpersonal.config import DEVICE_NAMES, ConfigError, RunConfig

KEY = "device"


@cache
def _resolve(name: str) -> torch.device:
    """The torch device of run-config value ``name``, checked against this process's GPUs."""
    if DEVICE_NAMES.fullmatch(name) is None:  # a RunConfig built in code is not validated
        raise ConfigError(f"run config key '{KEY}' = {name!r} is invalid; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"run config key '{KEY}' = {name!r} asks for a GPU, but torch.cuda.is_available() is False in this "
            f"process (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}; under Ray a client "
            "sees a GPU only with client-resources-num-gpus > 0); expected 'auto' or 'cpu' here"
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"run config key '{KEY}' = {name!r} names GPU {device.index}, but this process sees {count} GPU(s); "
            f"expected 'cuda' or one of {[f'cuda:{index}' for index in range(count)]}"
        )
    return device


def resolve_device(cfg: RunConfig) -> torch.device:
    """The torch device of ``cfg.device`` (resolved once per process and name)."""
    return _resolve(cfg.device)


def to_device(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Each of ``tensors`` on ``device``: host tensors go to a GPU through pinned memory, asynchronously
    (``non_blocking``; later work on the same stream waits for the copy); tensors already there stay."""
    if device.type != "cuda":
        return tuple(t.to(device) for t in tensors)
    return tuple(
        t.pin_memory().to(device, non_blocking=True) if t.device.type == "cpu" else t.to(device) for t in tensors
    )


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU for a module with neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A host (numpy) copy of ``tensor``, wherever it lives."""
    return tensor.detach().cpu().numpy()


def to_host(state: Any) -> Any:
    """``state`` (a tensor, or dicts, lists and tuples of them and of plain values) with every tensor on
    the CPU: what a checkpoint saves, so that it loads on any machine."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: to_host(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(to_host(value) for value in state)
    return state
