"""Client half of the FedOpt family (FedAvgM, FedAdam, FedYogi, FedAdagrad, torch-optim FedOpt).

Only the server differs from FedAvg: clients train the received model and return all of it.
"""

from clients.fedavg import FedAvgClient

FEDOPT_NAMES = ("fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedopt")
CLIENTS: dict[str, type[FedAvgClient]] = {name: FedAvgClient for name in FEDOPT_NAMES}
