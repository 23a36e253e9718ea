"""FedAvg (McMahan et al., 2017): example-weighted mean of the client models."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from fedpersonal.config import RunConfig
from strategies.common import sampling_kwargs


def build(cfg: RunConfig) -> FedAvg:
    """Flower's FedAvg with the run's sampling settings."""
    return FedAvg(**sampling_kwargs(cfg))
