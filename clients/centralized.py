"""Centralized training as a reference: one model trained on the pooled training data of every client.

Not federated: the one node the server samples each round trains on the union of all training
clients' training splits (as if they had been uploaded), ``local-epochs`` passes per round; every
client evaluates that model on its own test split. The upper reference the federated algorithms
are compared against (the data no algorithm may pool).
"""

from __future__ import annotations

import json

from flwr.app import Message

from clients.base import ClientAlgorithm, server_round_of
from fedpersonal.config import RunConfig
from fedpersonal.device import to_device
from fedpersonal.tasks import get_task
from fedpersonal.training import Tensors, stack

_POOLED: dict[str, Tensors] = {}  # the pooled data of the latest run config of this process


def pooled_training_data(cfg: RunConfig) -> Tensors:
    """The training splits of clients ``0 .. num-clients - 1``, concatenated (kept for the run)."""
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _POOLED:
        _POOLED.clear()
        task = get_task(cfg.task, cfg)
        _POOLED[key] = stack([task.client_data(partition).train for partition in range(cfg.num_clients)])
    return _POOLED[key]


class CentralizedClient(ClientAlgorithm):
    """Trains the received model on every training client's data; evaluates like FedAvg."""

    def train(self, msg: Message) -> Message:
        """``local-epochs`` passes over the pooled training data."""
        model = self.model_from(msg)
        data = to_device(pooled_training_data(self.cfg), self.device)
        loss = self.local_train(model, server_round_of(msg), tensors=data)
        metrics = {"train-loss": loss, "num-examples": self.data.num_train, "pooled-examples": len(data[0])}
        return self.reply(msg, metrics, self.outgoing_arrays(model))
