"""Face embedding CNN (shared ``backbone``) and the personal parts a face client keeps.

Every parameter of :class:`FaceEmbeddingNet` lives under ``backbone.``: that is what a face
federation shares. The personal parts never leave a client: :class:`CosineClassifier` (one row
per local identity, for the margin softmax) and FedFR's :class:`DFCBranch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_DIM = 64
SHARED_PREFIX = "backbone."


def _stage(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.PReLU(channels_out),
        nn.MaxPool2d(2),
    ]


class FaceEmbeddingNet(nn.Module):
    """Three conv stages (3x3 conv, BN, PReLU, 2x2 max-pool), pooled to 4x4, then fc -> embedding.

    Input: (N, 1, S, S) images scaled to [-1, 1] (any S >= 16); output (N, ``embedding_dim``)
    unnormalised embeddings.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, width: int = 16) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            *_stage(1, width),
            *_stage(width, 2 * width),
            *_stage(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(4 * width * 16, embedding_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch of images."""
        return self.backbone(images)


def cosine(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, K) cosine similarities between the rows of ``features`` and of ``weight``."""
    return F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T


class CosineClassifier(nn.Module):
    """Class rows of a margin softmax (CosFace): ``forward`` returns cos(feature, row)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, K) cosines."""
        return cosine(features, self.weight)


class DFCBranch(nn.Module):
    """FedFR's Decoupled Feature Customization: a d x d transform T (identity at start) and
    one-vs-all rows W (one per local identity, initialised from the local classifier) with
    biases b. ``forward`` gives the personalized feature T(f); ``cosines`` gives cos(T(f), W_j)."""

    def __init__(self, classifier_weight: torch.Tensor) -> None:
        super().__init__()
        dim = classifier_weight.shape[1]
        self.transform = nn.Linear(dim, dim)
        with torch.no_grad():
            self.transform.weight.copy_(torch.eye(dim))
            self.transform.bias.zero_()
        self.weight = nn.Parameter(classifier_weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros(classifier_weight.shape[0]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The personalized feature T(f)."""
        return self.transform(features)

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        """(N, K) cos(T(f), W_j)."""
        return cosine(self.transform(features), self.weight)


class PersonalEmbedding(nn.Module):
    """An embedding function made of a backbone followed by a feature transform."""

    def __init__(self, net: nn.Module, transform: nn.Module) -> None:
        super().__init__()
        self.net, self.transform = net, transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """transform(net(images))."""
        return self.transform(self.net(images))
