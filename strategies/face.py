"""Server halves of the face baselines: FedAvg of the backbone, generic evaluation on the server.

:class:`FaceFedAvg` is Flower's FedAvg over what face clients return (the backbone only,
weighted by ``num-examples``). Before each federated evaluation it evaluates the global backbone
on the unseen identities (10-fold verification accuracy, TAR@FAR) and adds those metrics, as
``unseen-<metric>``, to the evaluation aggregate; the round loop records them as
``global-unseen-<metric>``. Generic evaluation is server-side because the unseen identities
belong to no client, and so it runs once per round, not once per client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedpersonal.device import resolve_device
from fedpersonal.params import load_arrays
from fedpersonal.tasks.face import FaceTask
from strategies.local import LocalOnly


class FaceFedAvg(FedAvg):
    """FedAvg of face backbones plus server-side generic evaluation on unseen identities.

    ``task``: the face task whose model, public and unseen identities the server uses (default:
    the embedded faces at their default settings), on its run config's ``device``; the other keyword
    arguments are FedAvg's.
    """

    def __init__(self, task: FaceTask | None = None, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.task = task if task is not None else FaceTask()
        self.device = resolve_device(self.task.cfg)
        self.unseen: dict[str, float] = {}

    def global_model(self, arrays: ArrayRecord) -> nn.Module:
        """The backbone held by ``arrays``, on the task's device."""
        model = self.task.build_model().to(self.device)
        load_arrays(model, arrays)
        return model

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate ``arrays`` on the unseen identities, then configure client evaluation."""
        generic = self.task.unseen_metrics(self.global_model(arrays))
        self.unseen = {f"unseen-{key}": value for key, value in generic.items()}
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The clients' aggregate plus the generic metrics on unseen identities."""
        aggregated = super().aggregate_evaluate(server_round, replies)
        return MetricRecord({**dict(aggregated or {}), **self.unseen})


class FaceLocalOnly(LocalOnly, FaceFedAvg):
    """Local-only training: clients share nothing, the global model stays the pretrained one (the
    server still evaluates it on the unseen identities)."""
