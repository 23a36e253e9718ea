"""FedOpt: FedAvg whose server applies an optimizer to the pseudo-gradient (Reddi et al., 2021).

Flower's FedAvg averages the replies (``avg_t``); the server then sets the gradient of its float
global weights to ``x_t - avg_t`` and takes one step of its optimizer
(:mod:`strategies.server_optimizers`). Only trainable weights reach the optimizer: statistics
(BatchNorm's ``running_mean`` / ``running_var``, or the keys given as ``averaged_keys``) take the
plain average of the replies, as FedAvg would, since a pseudo-gradient step on a running statistic is
meaningless (momentum would push a variance below zero); integer arrays (``num_batches_tracked``)
take the rounded average and keep their dtype. The optimizer state
lives in the strategy; :meth:`PseudoGradientFedAvg.state_dict` /
:meth:`~PseudoGradientFedAvg.load_state_dict` let a checkpoint save and restore it.

Every class is a plain Flower strategy with Flower's constructor conventions (keyword arguments;
the sampling and aggregation arguments of :class:`flwr.serverapp.strategy.FedAvg` pass through),
usable in any Flower ServerApp, e.g. ``FedAdam(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3,
fraction_train=0.5, min_available_nodes=10)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg, Strategy

from fedpersonal.device import to_host
from fedpersonal.params import is_statistic
from strategies.server_optimizers import ReddiAdaptive

MakeOptimizer = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


class PseudoGradientFedAvg(FedAvg):
    """FedAvg + a server optimizer stepped on ``x_t - avg_t`` once per round.

    ``make_optimizer`` builds the optimizer over a list of tensors; it is tried once on a dummy
    tensor here, so settings the optimizer rejects raise a ValueError at construction.
    ``averaged_keys``: arrays that are averaged, never stepped (default: every key
    :func:`is_statistic` names, i.e. BatchNorm running statistics). ``averaging``: a strategy that
    samples the clients and computes ``avg_t`` instead of this FedAvg (e.g.
    :class:`strategies.dp.PrivateAggregation`, whose noisy mean the optimizer then steps on).
    ``device``: where the stepped weights and the optimizer's state live (each round's arrays are
    moved there, the new global arrays and :meth:`state_dict` come back to the host).
    """

    def __init__(
        self,
        make_optimizer: MakeOptimizer,
        averaged_keys: Iterable[str] | None = None,
        averaging: Strategy | None = None,
        device: torch.device | str = "cpu",
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.averaging = averaging
        listed = None if averaged_keys is None else frozenset(averaged_keys)
        self.averaged: Callable[[str], bool] = is_statistic if listed is None else listed.__contains__
        try:
            make_optimizer([torch.zeros(1)])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{type(self).__name__}: the server optimizer rejects its settings: {error}") from error
        self.make_optimizer = make_optimizer
        self.device = torch.device(device)
        self.weights: dict[str, torch.Tensor] = {}  # the float global weights the optimizer steps
        self.dtypes: dict[str, torch.dtype] = {}  # dtype of every array of x_t
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays ``x_t`` being sent, then sample and send as FedAvg does."""
        self._track(arrays.to_torch_state_dict())
        if self.averaging is not None:
            return self.averaging.configure_train(server_round, arrays, config, grid)
        return super().configure_train(server_round, arrays, config, grid)

    def _track(self, state: dict[str, torch.Tensor]) -> None:
        self.dtypes = {key: value.dtype for key, value in state.items()}
        floats = {key: value for key, value in state.items() if value.is_floating_point() and not self.averaged(key)}
        if self.optimizer is None:
            self.weights = {key: value.to(self.device, copy=True) for key, value in floats.items()}
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
        """FedAvg's average (or the ``averaging`` strategy's), then one optimizer step from ``x_t`` on
        the pseudo-gradient."""
        if self.averaging is not None:
            average, metrics = self.averaging.aggregate_train(server_round, replies)
        else:
            average, metrics = super().aggregate_train(server_round, replies)
        if average is None:
            return None, metrics
        if self.optimizer is None:
            raise AggregationError("aggregate_train before configure_train: the server does not know x_t")
        averaged = average.to_torch_state_dict()
        if sorted(averaged) != sorted(self.dtypes):
            raise AggregationError(f"the replies hold keys {sorted(averaged)}, the server sent {sorted(self.dtypes)}")
        for key, weight in self.weights.items():
            weight.grad = weight - averaged[key].to(self.device, weight.dtype)
        for group in self.optimizer.param_groups:
            group["server-round"] = server_round  # for optimizers whose step depends on the round
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        updated = {key: self._updated(key, value) for key, value in averaged.items()}
        return ArrayRecord(updated), metrics

    def _updated(self, key: str, average: torch.Tensor) -> torch.Tensor:
        """The new global array: the stepped weight, or the replies' average in the sent dtype."""
        if key in self.weights:
            return self.weights[key].detach().to("cpu", copy=True)
        dtype = self.dtypes[key]
        return average.to(dtype) if dtype.is_floating_point else torch.round(average).to(dtype)

    def state_dict(self) -> dict[str, Any]:
        """The server optimizer's state (moments, momentum buffers, step counts) and its keys."""
        if self.optimizer is None:
            return dict(self._pending_state or {})
        state = {"keys": list(self.weights), "optimizer": to_host(self.optimizer.state_dict())}
        averaging_state = getattr(self.averaging, "state_dict", None)
        return {**state, "averaging": averaging_state()} if callable(averaging_state) else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; applied at the next ``configure_train`` if none ran yet."""
        if self.optimizer is None:
            self._pending_state = dict(state)
            return
        if state:
            load_averaging = getattr(self.averaging, "load_state_dict", None)
            if callable(load_averaging) and "averaging" in state:
                load_averaging(state["averaging"])
            if list(state["keys"]) != list(self.weights):
                raise ValueError(f"optimizer state is for keys {state['keys']}, not {list(self.weights)}")
            self.optimizer.load_state_dict(state["optimizer"])


class FedAvgM(PseudoGradientFedAvg):
    """FedAvgM (Hsu et al., 2019): ``v = momentum v + (x_t - avg)``, ``x = x - eta v`` (Nesterov optional).

    Argument names follow Flower's FedAvgM (``server_learning_rate``, ``server_momentum``).
    """

    def __init__(
        self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.9, nesterov: bool = False, **kwargs: Any
    ) -> None:
        def make(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
            return torch.optim.SGD(params, lr=server_learning_rate, momentum=server_momentum, nesterov=nesterov)

        super().__init__(make, **kwargs)


class _AdaptiveMoments(PseudoGradientFedAvg):
    """FedAdam and FedYogi: Reddi et al.'s Algorithm 2 with first and second moments; ``rule`` is the
    second-moment update of :data:`strategies.server_optimizers.SECOND_MOMENT_RULES`."""

    rule = ""

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        initial_v: float = 0.0,
        bias_correction: str = "none",
        **kwargs: Any,
    ) -> None:
        rule = self.rule

        def make(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
            return ReddiAdaptive(params, rule, eta, beta_1, beta_2, tau, initial_v, bias_correction)

        super().__init__(make, **kwargs)


class FedAdam(_AdaptiveMoments):
    """FedAdam (Reddi et al., Algorithm 2); ``bias_correction`` 'none', 'adam' or 'flower' (Flower's FedAdam)."""

    rule = "adam"


class FedYogi(_AdaptiveMoments):
    """FedYogi (Reddi et al., Algorithm 2): ``v = v - (1 - beta_2) Delta^2 sign(v - Delta^2)``."""

    rule = "yogi"


class FedAdagrad(PseudoGradientFedAvg):
    """FedAdagrad (Reddi et al., Algorithm 2): ``v = v + Delta^2``; ``beta_1 = 0`` by default, as Flower."""

    def __init__(
        self, *, eta: float = 0.003162, beta_1: float = 0.0, tau: float = 1e-3, initial_v: float = 0.0, **kwargs: Any
    ) -> None:
        def make(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
            return ReddiAdaptive(params, "adagrad", eta, beta_1, tau=tau, initial_v=initial_v)

        super().__init__(make, **kwargs)


class FedOptTorch(PseudoGradientFedAvg):
    """Any ``torch.optim`` optimizer (by class name) over the global weights, with its other
    keyword arguments in ``options`` (a dict, or a JSON object as text)."""

    def __init__(
        self, *, optimizer: str = "SGD", eta: float = 1.0, options: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> None:
        extra = json.loads(options) if isinstance(options, str) else dict(options or {})
        optimizer_class = getattr(torch.optim, optimizer, None)
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise ValueError(f"FedOptTorch: optimizer {optimizer!r} is not a torch.optim optimizer")
        # A concrete optimizer takes ``lr`` and its own options (the base class's signature does not).
        factory: Callable[..., torch.optim.Optimizer] = optimizer_class

        def make(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
            return factory(params, lr=eta, **extra)

        super().__init__(make, **kwargs)
