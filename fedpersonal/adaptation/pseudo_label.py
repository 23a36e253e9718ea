"""Pseudo-label self-training (Lee, 2013) on a user's unlabelled data.

The received model labels the data once; the samples whose top softmax probability reaches
``threshold`` become a labelled set on which the whole model trains with cross-entropy (Adam).
No sample confident enough: the model is returned unchanged. Classification only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedpersonal.adaptation.adabn import Forward
from fedpersonal.training import Tensors, iterate_batches, train_epochs


def confident_labels(
    model: nn.Module, forward: Forward, inputs: Tensors, threshold: float, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of the samples the model predicts with probability >= ``threshold``."""
    model.eval()
    with torch.no_grad():
        probs = torch.cat([F.softmax(forward(model, batch), dim=1) for batch in iterate_batches(inputs, batch_size)])
    confidence, labels = probs.max(dim=1)
    keep = torch.nonzero(confidence >= threshold).flatten()
    return keep, labels[keep]


def pseudo_label(
    model: nn.Module,
    forward: Forward,
    inputs: Tensors,
    epochs: int,
    lr: float,
    threshold: float,
    batch_size: int,
    generator: torch.Generator,
) -> nn.Module:
    """Train ``model`` in place on its own confident predictions; returns it in evaluation mode."""
    keep, labels = confident_labels(model, forward, inputs, threshold, batch_size)
    if len(keep) == 0:
        return model.eval()
    chosen = tuple(t[keep] for t in inputs)

    def loss(net: nn.Module, batch: Tensors) -> torch.Tensor:
        return F.cross_entropy(forward(net, batch[:-1]), batch[-1])

    train_epochs(
        model, (*chosen, labels), loss, torch.optim.Adam(model.parameters(), lr=lr), epochs, batch_size, generator
    )
    return model.eval()
