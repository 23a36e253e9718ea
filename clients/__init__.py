"""Client halves of the algorithms, by the same names as the strategies."""

from __future__ import annotations

from clients.base import ClientAlgorithm
from clients import fedopt
from clients.fedavg import FedAvgClient
from fedpersonal.faults import FaultSettings

CLIENT_ALGORITHMS: dict[str, type[ClientAlgorithm]] = {"fedavg": FedAvgClient, **fedopt.CLIENTS}
# Run-config sections the client halves read: name -> settings dataclass.
CONFIG_SECTIONS: dict[str, type] = {"faults": FaultSettings}

__all__ = ["CLIENT_ALGORITHMS", "CONFIG_SECTIONS", "ClientAlgorithm"]
