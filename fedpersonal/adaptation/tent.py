"""TENT (Wang et al., ICLR 2021): minimise the prediction entropy, updating BN gamma/beta only.

Every other parameter is frozen; BN layers normalise with batch statistics while adapting. After
the last step the running statistics are re-estimated with :func:`adabn` on the same data, so the
adapted model can be evaluated in evaluation mode. Classification only (needs class logits).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedpersonal.adaptation.adabn import Forward, adabn, require_batchnorm
from fedpersonal.training import Tensors, iterate_batches


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits``."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def bn_affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The scale (gamma) and shift (beta) of every affine BN layer."""
    layers = require_batchnorm(model, "TENT")
    params = [p for layer in layers if layer.affine for p in (layer.weight, layer.bias)]
    if not params:
        raise ValueError("TENT trains BatchNorm scale and shift, but no BN layer of the model is affine")
    return params


def tent(
    model: nn.Module,
    forward: Forward,
    inputs: Tensors,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> nn.Module:
    """Adapt ``model`` in place: ``epochs`` passes of Adam(``lr``) on the mean entropy."""
    params = bn_affine_parameters(model)
    trainable = {id(p) for p in params}
    frozen = [p for p in model.parameters() if id(p) not in trainable and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.eval()
    for layer in require_batchnorm(model, "TENT"):
        layer.train()
    for _ in range(epochs):
        for batch in iterate_batches(inputs, batch_size, generator):
            loss = mean_entropy(forward(model, batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for p in frozen:
        p.requires_grad_(True)
    return adabn(model, forward, inputs, batch_size)
