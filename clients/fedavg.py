"""FedAvg client: the defaults of :class:`clients.base.ClientAlgorithm`."""

from clients.base import ClientAlgorithm


class FedAvgClient(ClientAlgorithm):
    """Trains the whole received model locally and returns all of it."""
