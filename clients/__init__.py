"""Client halves of the algorithms, by the same names as the strategies."""

from __future__ import annotations

from clients.base import ClientAlgorithm
from clients.fedavg import FedAvgClient

CLIENT_ALGORITHMS: dict[str, type[ClientAlgorithm]] = {"fedavg": FedAvgClient}

__all__ = ["CLIENT_ALGORITHMS", "ClientAlgorithm"]
