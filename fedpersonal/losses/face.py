"""Face objectives: CosFace, FedFR's DFC binary loss and MOON contrastive term, hard negatives.

Conventions follow FedFR (Liu et al., AAAI 2022; docs/algorithms/fedfr.md):

* CosFace (Wang et al., 2018): logits ``s * (cos_j - m [j = y])``, cross-entropy.
* DFC: ``g(x) = 2((x + 1) / 2)^3 - 1``; ``z_j = r (g(cos_j) - m) + b_j`` for the true class and
  ``r (g(cos_j) + m) + b_j`` for the others; per sample
  ``lambda / r * log(1 + e^-z_y) + (1 - lambda) / r * sum_{j != y} log(1 + e^z_j)``, averaged
  over the batch. A label of -1 marks a sample with no positive class (a public image).
* MOON (Li et al., 2021): ``-log(e^{cos(f, f_g)/T} / (e^{cos(f, f_g)/T} + e^{cos(f, f_p)/T}))``
  with f_g the global and f_p the previous local model's feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NO_POSITIVE = -1


def cosface_loss(cosines: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Mean CosFace loss of (N, K) cosines and (N,) labels in [0, K)."""
    logits = scale * (cosines - margin * F.one_hot(labels, cosines.shape[1]).to(cosines.dtype))
    return F.cross_entropy(logits, labels)


def dfc_g(x: torch.Tensor) -> torch.Tensor:
    """The DFC similarity map g(x) = 2((x + 1)/2)^3 - 1 (g(-1) = -1, g(1) = 1)."""
    return 2.0 * ((x + 1.0) / 2.0) ** 3 - 1.0


def dfc_loss(
    cosines: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor,
    scale: float = 30.0,
    margin: float = 0.4,
    lam: float = 0.7,
) -> torch.Tensor:
    """Mean DFC one-vs-all loss of (N, K) cosines cos(T(f), W_j); labels -1: all negatives."""
    positive = F.one_hot(labels.clamp(min=0), cosines.shape[1]).to(cosines.dtype)
    positive = positive * (labels >= 0).to(cosines.dtype)[:, None]
    z = scale * (dfc_g(cosines) + margin * (1.0 - 2.0 * positive)) + bias
    per_class = lam / scale * F.softplus(-z) * positive + (1.0 - lam) / scale * F.softplus(z) * (1.0 - positive)
    return per_class.sum(dim=1).mean()


def moon_loss(
    features: torch.Tensor, global_features: torch.Tensor, previous_features: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean MOON contrastive loss: pull towards the global feature, away from the previous one."""
    positive = F.cosine_similarity(features, global_features, dim=1) / temperature
    negative = F.cosine_similarity(features, previous_features, dim=1) / temperature
    return F.softplus(negative - positive).mean()


def hard_negatives(local_features: torch.Tensor, public_features: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the public samples whose cosine to any local sample exceeds ``threshold``."""
    similarity = F.normalize(public_features, dim=1) @ F.normalize(local_features, dim=1).T
    return torch.nonzero(similarity.max(dim=1).values > threshold).flatten()
