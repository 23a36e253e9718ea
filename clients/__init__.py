"""Client halves of the algorithms, by the same names as the strategies."""

from __future__ import annotations

from clients.base import ClientAlgorithm
from clients import fedopt
from clients.dua import DUAClient
from clients.face import FaceClient, FaceFineTuneClient, FaceLocalClient
from clients.fedavg import FedAvgClient
from clients.fedfr import FedFRClient, FedFRSettings
from clients.fedper import FedPerClient
from fedpersonal.adaptation import AdaptSettings
from fedpersonal.faults import FaultSettings

CLIENT_ALGORITHMS: dict[str, type[ClientAlgorithm]] = {"fedavg": FedAvgClient, "fedper": FedPerClient, **fedopt.CLIENTS, "dua": DUAClient,
    "fedfr": FedFRClient, "face-fedavg": FaceClient, "face-finetune": FaceFineTuneClient, "face-local": FaceLocalClient}
# Run-config sections the client halves read: name -> settings dataclass.
CONFIG_SECTIONS: dict[str, type] = {"adapt": AdaptSettings, "faults": FaultSettings, "fedfr": FedFRSettings}

__all__ = ["CLIENT_ALGORITHMS", "CONFIG_SECTIONS", "ClientAlgorithm"]
