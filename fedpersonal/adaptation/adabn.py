"""AdaBN (Li et al., 2016): re-estimate BatchNorm statistics on a user's unlabelled data.

The running mean and variance of every BN layer are reset and re-estimated with a train-mode
pass over the data; no parameter changes. Applies to any task whose model has BN layers
(classification and gaze regression alike).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedpersonal.training import Tensors, iterate_batches

Forward = Callable[[nn.Module, Tensors], torch.Tensor]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [module for module in model.modules() if isinstance(module, _BatchNorm)]


def require_batchnorm(model: nn.Module, method: str) -> list[_BatchNorm]:
    """The BN layers of ``model``; a ValueError naming ``method`` when there are none."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{method} adapts BatchNorm layers, but the model ({type(model).__name__}) has none")
    return layers


def adabn(model: nn.Module, forward: Forward, inputs: Tensors, batch_size: int) -> nn.Module:
    """Reset and re-estimate the BN running statistics of ``model`` on ``inputs`` (in place).

    The estimate is the sample-weighted average of the batch statistics (each batch's momentum is
    its share of the samples seen so far), so it does not depend on how the last batch is cut.
    Returns ``model`` in evaluation mode.
    """
    layers = require_batchnorm(model, "AdaBN")
    saved = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.train()
    seen = 0
    with torch.no_grad():
        for batch in iterate_batches(inputs, batch_size):
            size = len(batch[0])
            seen += size
            for layer in layers:
                layer.momentum = size / seen
            forward(model, batch)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return model.eval()
