"""Server optimizers of the FedOpt family and their run-config sections.

The server treats the pseudo-gradient ``g_t = x_t - avg_t`` (minus the example-weighted mean
client update ``Delta_t``) as the gradient of the global weights and takes one optimizer step per
round (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):

* ``fedavgm``: torch SGD with momentum, ``v = beta v + g``, ``x = x - eta v`` (Hsu et al., 2019);
* ``fedadam`` / ``fedyogi`` / ``fedadagrad``: :class:`ReddiAdaptive`, Reddi's Algorithm 2;
* ``fedopt``: any ``torch.optim`` optimizer by name, with its keyword arguments as JSON.

The strategies themselves are in :mod:`strategies.fedopt`; each name has a run-config section of
the same name here (``fedadam.server-lr``, ...), whose fields map one to one onto the strategy's
constructor arguments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fedpersonal.config import setting


def _second_moment_adam(v: torch.Tensor, sq: torch.Tensor, beta2: float) -> None:
    v.mul_(beta2).add_(sq, alpha=1 - beta2)


def _second_moment_yogi(v: torch.Tensor, sq: torch.Tensor, beta2: float) -> None:
    v.sub_((1 - beta2) * sq * torch.sign(v - sq))


def _second_moment_adagrad(v: torch.Tensor, sq: torch.Tensor, _beta2: float) -> None:
    v.add_(sq)


BIAS_CORRECTIONS = ("none", "adam", "flower")
SECOND_MOMENT_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], None]] = {
    "adam": _second_moment_adam,
    "yogi": _second_moment_yogi,
    "adagrad": _second_moment_adagrad,
}


class ReddiAdaptive(torch.optim.Optimizer):
    """FedAdam / FedYogi / FedAdagrad server step, exactly Reddi et al.'s Algorithm 2.

    With ``Delta = -grad``: ``m = beta1 m + (1 - beta1) Delta``; ``v`` by ``rule``
    (adam: ``beta2 v + (1 - beta2) Delta^2``; yogi: ``v - (1 - beta2) Delta^2 sign(v - Delta^2)``;
    adagrad: ``v + Delta^2``); ``x = x + eta_t m / (sqrt(v) + tau)`` with ``eta_t = eta``, or
    ``eta sqrt(1 - beta2^t) / (1 - beta1^t)`` with a bias correction: ``"adam"`` takes ``t`` = the
    number of steps taken (Adam's convention), ``"flower"`` takes ``t = server_round + 1`` (Flower
    1.42's FedAdam; the round is read from the param group's ``"server-round"``, which
    :class:`strategies.fedopt.PseudoGradientFedAvg` sets before each step), ``"none"`` (Reddi's
    Algorithm 2) none. ``m`` starts at 0 and ``v`` at ``initial_v`` (Reddi: ``v_-1 >= tau^2``; Flower: 0).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        rule: str,
        lr: float,
        beta1: float,
        beta2: float = 0.0,
        tau: float = 1e-3,
        initial_v: float = 0.0,
        bias_correction: str = "none",
    ) -> None:
        if rule not in SECOND_MOMENT_RULES:
            raise ValueError(f"unknown second-moment rule {rule!r}; choose one of {sorted(SECOND_MOMENT_RULES)}")
        if bias_correction not in BIAS_CORRECTIONS:
            raise ValueError(f"unknown bias correction {bias_correction!r}; choose one of {list(BIAS_CORRECTIONS)}")
        defaults = {
            "rule": rule,
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "tau": tau,
            "initial_v": initial_v,
            "bias_correction": bias_correction,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """One server step on every parameter that has a gradient (the pseudo-gradient)."""
        for group in self.param_groups:
            beta1, beta2 = group["beta1"], group["beta2"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                delta = -param.grad
                state = self.state[param]
                if not state:
                    state.update(step=0, m=torch.zeros_like(param), v=torch.full_like(param, group["initial_v"]))
                state["step"] += 1
                state["m"].mul_(beta1).add_(delta, alpha=1 - beta1)
                SECOND_MOMENT_RULES[group["rule"]](state["v"], delta * delta, beta2)
                param.addcdiv_(state["m"], state["v"].sqrt().add_(group["tau"]), value=step_lr(group, state["step"]))


def step_lr(group: Mapping[str, Any], steps: int) -> float:
    """``eta_t`` of a :class:`ReddiAdaptive` param group (or its ``state_dict()`` entry) at its
    ``steps``-th step: ``eta``, times ``sqrt(1 - beta2^t) / (1 - beta1^t)`` with a bias correction."""
    if group["bias_correction"] == "none":
        return float(group["lr"])
    t = steps if group["bias_correction"] == "adam" else group["server-round"] + 1
    return float(group["lr"] * math.sqrt(1 - group["beta2"] ** t) / (1 - group["beta1"] ** t))


# --- run-config sections -------------------------------------------------------------------


def _server_lr(default: float) -> Any:
    return setting(default, "a number in (0, 100] (server learning rate eta)", lambda v: 0 < v <= 100)


def _decay(default: float, what: str) -> Any:
    return setting(default, f"a number in [0, 1) ({what})", lambda v: 0 <= v < 1)


def _tau() -> Any:
    return setting(1e-3, "a number > 0 (adaptivity tau, added to sqrt(v))", lambda v: v > 0)


def _initial_v() -> Any:
    return setting(0.0, "a number >= 0 (initial second moment; Reddi et al. take >= tau^2)", lambda v: v >= 0)


def _torch_optimizer(name: str) -> bool:
    candidate = getattr(torch.optim, name, None)
    return isinstance(candidate, type) and issubclass(candidate, torch.optim.Optimizer) and name != "Optimizer"


def _finite_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite_json(item) for item in value)
    return True


def _json_object(text: str) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and _finite_json(value)


@dataclass(frozen=True)
class FedAvgMSettings:
    """``[fedavgm]``: server SGD with momentum on the pseudo-gradient."""

    SECTION: ClassVar[str] = "fedavgm"

    server_lr: float = _server_lr(1.0)
    momentum: float = _decay(0.9, "server momentum beta")
    nesterov: bool = setting(False, "true or false (Nesterov momentum; needs momentum > 0)")


@dataclass(frozen=True)
class AdaptiveSettings:
    """The keys FedAdam and FedYogi share."""

    server_lr: float = _server_lr(0.01)
    beta1: float = _decay(0.9, "first-moment decay beta1")
    beta2: float = _decay(0.99, "second-moment decay beta2")
    tau: float = _tau()
    initial_v: float = _initial_v()


@dataclass(frozen=True)
class FedAdamSettings(AdaptiveSettings):
    """``[fedadam]``: Reddi's FedAdam; ``bias-correction`` scales eta as Adam ('adam') or Flower's
    FedAdam ('flower') does."""

    SECTION: ClassVar[str] = "fedadam"

    bias_correction: str = setting(
        "none",
        "one of 'none' (Reddi's Algorithm 2), 'adam' (t = server steps taken), 'flower' (t = round + 1, as Flower)",
        lambda v: v in BIAS_CORRECTIONS,
    )


@dataclass(frozen=True)
class FedYogiSettings(AdaptiveSettings):
    """``[fedyogi]``: Reddi's FedYogi."""

    SECTION: ClassVar[str] = "fedyogi"


@dataclass(frozen=True)
class FedAdagradSettings:
    """``[fedadagrad]``: Reddi's FedAdagrad (``beta1 = 0``: no momentum, as Flower and Keras)."""

    SECTION: ClassVar[str] = "fedadagrad"

    server_lr: float = _server_lr(0.003162)
    beta1: float = _decay(0.0, "first-moment decay beta1")
    tau: float = _tau()
    initial_v: float = _initial_v()


@dataclass(frozen=True)
class TorchOptimSettings:
    """``[fedopt]``: any ``torch.optim`` optimizer over the global weights."""

    SECTION: ClassVar[str] = "fedopt"

    optimizer: str = setting("SGD", "the name of a torch.optim optimizer (SGD, Adam, RMSprop, ...)", _torch_optimizer)
    server_lr: float = _server_lr(1.0)
    options: str = setting(
        '{"momentum": 0.9, "nesterov": true}',
        "a JSON object of the optimizer's other keyword arguments (finite numbers)",
        _json_object,
    )
