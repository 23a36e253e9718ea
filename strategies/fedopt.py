"""FedOpt: FedAvg whose server applies an optimizer to the pseudo-gradient (Reddi et al., 2021).

Flower's FedAvg averages the replies (``avg_t``); the server then sets the gradient of its float
global weights to ``x_t - avg_t`` and takes one step of the named optimizer
(:mod:`strategies.server_optimizers`). Non-float arrays (BatchNorm ``num_batches_tracked``) never
reach the optimizer: they take the rounded average. The optimizer state lives in the strategy;
:meth:`PseudoGradientFedAvg.state_dict` / :meth:`~PseudoGradientFedAvg.load_state_dict` let a
checkpoint save and restore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from fedpersonal.config import RunConfig
from strategies.common import sampling_kwargs
from strategies.server_optimizers import SERVER_OPTIMIZERS, optimizer_factory

MakeOptimizer = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


class PseudoGradientFedAvg(FedAvg):
    """FedAvg + a server optimizer stepped on ``x_t - avg_t`` once per round."""

    def __init__(self, make_optimizer: MakeOptimizer, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.make_optimizer = make_optimizer
        self.weights: dict[str, torch.Tensor] = {}  # the float global weights the optimizer steps
        self.dtypes: dict[str, torch.dtype] = {}  # dtype of every array of x_t
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays ``x_t`` being sent, then sample and send as FedAvg does."""
        self._track(arrays.to_torch_state_dict())
        return super().configure_train(server_round, arrays, config, grid)

    def _track(self, state: dict[str, torch.Tensor]) -> None:
        self.dtypes = {key: value.dtype for key, value in state.items()}
        floats = {key: value for key, value in state.items() if value.is_floating_point()}
        if self.optimizer is None:
            self.weights = {key: value.detach().clone() for key, value in floats.items()}
            self.optimizer = self.make_optimizer(list(self.weights.values()))
            if self._pending_state is not None:
                self.load_state_dict(self._pending_state)
                self._pending_state = None
            return
        if sorted(floats) != sorted(self.weights):
            raise AggregationError(
                f"this round's float arrays {sorted(floats)} differ from the optimizer's {sorted(self.weights)}"
            )
        with torch.no_grad():
            for key, value in floats.items():
                self.weights[key].copy_(value)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's average, then one optimizer step from ``x_t`` on the pseudo-gradient."""
        average, metrics = super().aggregate_train(server_round, replies)
        if average is None:
            return None, metrics
        if self.optimizer is None:
            raise AggregationError("aggregate_train before configure_train: the server does not know x_t")
        averaged = average.to_torch_state_dict()
        if sorted(averaged) != sorted(self.dtypes):
            raise AggregationError(f"the replies hold keys {sorted(averaged)}, the server sent {sorted(self.dtypes)}")
        for key, weight in self.weights.items():
            weight.grad = weight - averaged[key].to(weight.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        updated = {
            key: self.weights[key].detach().clone() if key in self.weights else torch.round(value).to(self.dtypes[key])
            for key, value in averaged.items()
        }
        return ArrayRecord(updated), metrics

    def state_dict(self) -> dict[str, Any]:
        """The server optimizer's state (moments, momentum buffers, step counts) and its keys."""
        if self.optimizer is None:
            return dict(self._pending_state or {})
        return {"keys": list(self.weights), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; applied at the next ``configure_train`` if none ran yet."""
        if self.optimizer is None:
            self._pending_state = dict(state)
            return
        if state:
            if list(state["keys"]) != list(self.weights):
                raise ValueError(f"optimizer state is for keys {state['keys']}, not {list(self.weights)}")
            self.optimizer.load_state_dict(state["optimizer"])


def builder(name: str) -> Callable[[RunConfig], PseudoGradientFedAvg]:
    """``build(cfg)`` for the server optimizer ``name``, configured by the section ``name``."""

    def build(cfg: RunConfig) -> PseudoGradientFedAvg:
        return PseudoGradientFedAvg(optimizer_factory(name, cfg.section(name)), **sampling_kwargs(cfg))

    build.__doc__ = f"FedAvg + the '{name}' server optimizer, configured by run-config section '{name}'."
    return build


BUILDERS: dict[str, Callable[[RunConfig], PseudoGradientFedAvg]] = {name: builder(name) for name in SERVER_OPTIMIZERS}
SECTIONS: dict[str, type] = {name: section for name, (section, _) in SERVER_OPTIMIZERS.items()}
