"""FedProx (Li et al., MLSys 2020), server half: Flower's own FedProx strategy.

The server aggregates as FedAvg and sends the proximal weight mu in every train message's config
record (key ``proximal-mu``); each client adds ``mu / 2 * ||w - w_global||^2`` to its local loss
(:mod:`clients.fedprox`). The run config sets mu in section ``fedprox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flwr.serverapp.strategy import FedProx

from fedpersonal.config import setting

__all__ = ["FedProx", "FedProxSettings"]


@dataclass(frozen=True)
class FedProxSettings:
    """Run-config section ``fedprox``."""

    SECTION: ClassVar[str] = "fedprox"

    mu: float = setting(0.01, "a number >= 0 (proximal weight mu; 0 is FedAvg)", lambda v: v >= 0)
