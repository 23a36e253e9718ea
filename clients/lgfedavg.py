"""LG-FedAvg (Liang et al., 2020): local representations, global head: only the head is shared.

The body (feature extractor, keys ``body.*``) is personal and stays in ``context.state``; the head
(``head.*``) is averaged by the server (plain FedAvg over the keys the clients send).
"""

from clients.base import ClientAlgorithm


class LGFedAvgClient(ClientAlgorithm):
    """Trains body and head; sends the head only; keeps the body."""

    personal_prefixes = ("body.",)
