"""FedPer (Arivazhagan et al., 2019): the body is federated, the head stays on the device."""

from clients.base import ClientAlgorithm


class FedPerClient(ClientAlgorithm):
    """Trains body and head; sends the body only; keeps the head in ``context.state``."""

    personal_prefixes = ("head.",)
