"""SCAFFOLD (Karimireddy et al., ICML 2020), server half: control variates against client drift.

The server keeps a control variate ``c`` (one tensor per trainable parameter). Each train message
carries the global model ``x`` and ``c`` in one ArrayRecord (``c``'s keys prefixed ``control/``);
each client replies with its trained model ``y_i`` and its control update ``Delta c_i`` under the
same keys. FedAvg's example-weighted average gives the new model (global step size 1) and
``avg Delta c``; the server sets ``c <- c + (|S| / N) avg Delta c`` with ``|S|`` the replies
aggregated and ``N`` the connected nodes. ``c`` is part of :meth:`Scaffold.state_dict`, so a
checkpoint holds it. The paper averages uniformly; here, as for FedAvg, by ``num-examples``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpersonal.params import CONTROL_PREFIX as CONTROL


def trainable_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys that carry a control variate: float arrays that are not BatchNorm statistics."""
    return [key for key, value in state.items() if value.is_floating_point() and "running_" not in key]


class Scaffold(FedAvg):
    """FedAvg + the server control variate; the keyword arguments are FedAvg's."""

    def __init__(self, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.control: dict[str, torch.Tensor] = {}
        self.connected = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send ``x`` and ``c`` (zero before the first round) to every sampled node."""
        state = arrays.to_torch_state_dict()
        if not self.control:
            self.control = {key: torch.zeros_like(state[key]) for key in trainable_keys(state)}
        self.connected = len(list(grid.get_node_ids()))
        messages = list(super().configure_train(server_round, arrays, config, grid))
        both = ArrayRecord({**state, **{CONTROL + key: value for key, value in self.control.items()}})
        for message in messages:
            message.content["arrays"] = both
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The average model, and ``c`` moved by ``|S| / N`` times the average control update."""
        replies = list(replies)
        average, metrics = super().aggregate_train(server_round, replies)
        if average is None:
            return None, metrics
        state = average.to_torch_state_dict()
        aggregated = sum(1 for reply in replies if not reply.has_error())
        share = aggregated / max(self.connected, aggregated)
        for key in self.control:
            self.control[key] = self.control[key] + share * state[CONTROL + key].to(self.control[key].dtype)
        return ArrayRecord({k: v for k, v in state.items() if not k.startswith(CONTROL)}), metrics

    def state_dict(self) -> dict[str, Any]:
        """The server control variate (for a checkpoint)."""
        return {"control": dict(self.control)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.control = dict(state.get("control", {}))
