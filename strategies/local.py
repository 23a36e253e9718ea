"""Local-only training as a reference: clients share nothing, the global model never changes.

Every client trains its own model on its own data, round after round, and replies with an empty
ArrayRecord and its metrics; :class:`LocalOnly` keeps the global arrays it sent (the initial model)
and aggregates only the metrics. Mixed into another strategy (``class X(LocalOnly, Y)``) it keeps
that strategy's other behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class LocalOnly(FedAvg):
    """FedAvg's sampling and metric aggregation; the global arrays stay what they were."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays; the clients train their own models."""
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The unchanged global arrays and the clients' aggregated train metrics."""
        _, metrics = super().aggregate_train(server_round, replies)
        return self.current, metrics
