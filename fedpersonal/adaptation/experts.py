"""DUA's expert models: trained on the server's labelled data, one per domain, or loaded from a file.

Training (:func:`train_experts`): a *generic* model is trained on clean labelled server data of
every class; expert ``k`` is a copy of it fine-tuned on the labelled server data of domain ``k``
(a corruption for TransPrior, a group of classes for CatPrior), with the head frozen. The experts
therefore share one ancestor (merging weights is meaningful only then) and one head (so the head,
which carries no Omega, merges exactly). The task supplies the domains and data
(:class:`ServerDomains`); the optimiser is the run's client SGD (``lr``, ``momentum``,
``weight-decay``, ``batch-size``, ``grad-clip``), on the run's ``device``; the states an
:class:`ExpertSet` holds are on the CPU (they are saved, and sent in messages).

Experts travel in one ArrayRecord whose keys are ``"<k>/<parameter name>"`` (:func:`pack_states`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from flwr.app import ArrayRecord
from torch import nn

from fedpersonal.adaptation.importance import HEAD
from fedpersonal.config import RunConfig
from fedpersonal.device import resolve_device, to_device
from fedpersonal.training import SGDSettings, Tensors, sgd_optimizer, train_epochs

State = dict[str, torch.Tensor]


class ServerDomains(Protocol):
    """What a task offers DUA's server: domains and labelled server data of each."""

    def build_model(self) -> nn.Module: ...

    def loss(self, model: nn.Module, batch: Tensors) -> torch.Tensor: ...

    def expert_domains(self) -> Sequence[Any]: ...

    def generic_domain(self) -> Any: ...

    def server_data(self, domain: Any, count: int) -> Tensors: ...


@dataclass(frozen=True)
class ExpertSet:
    """The generic model and one expert per domain (state dicts)."""

    domains: tuple[str, ...]
    generic: State
    experts: tuple[State, ...]


def _fit(
    model: nn.Module,
    task: ServerDomains,
    data: Tensors,
    params: list[nn.Parameter],
    epochs: int,
    cfg: RunConfig,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    train_epochs(
        model,
        to_device(data, resolve_device(cfg)),
        task.loss,
        sgd_optimizer(params, SGDSettings.from_config(cfg)),
        epochs,
        cfg.batch_size,
        generator,
        cfg.grad_clip,
    )


def _state(model: nn.Module) -> State:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def train_experts(
    task: ServerDomains, cfg: RunConfig, samples: int, generic_epochs: int, expert_epochs: int
) -> ExpertSet:
    """The generic model and its fine-tuned experts, seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    generic = task.build_model().to(resolve_device(cfg))
    _fit(
        generic,
        task,
        task.server_data(task.generic_domain(), samples),
        list(generic.parameters()),
        generic_epochs,
        cfg,
        cfg.seed,
    )
    names, experts = [], []
    for k, domain in enumerate(task.expert_domains()):
        expert = copy.deepcopy(generic)
        body = [p for name, p in expert.named_parameters() if not name.startswith(HEAD)]
        _fit(expert, task, task.server_data(domain, samples), body, expert_epochs, cfg, cfg.seed + 1 + k)
        names.append(domain.name)
        experts.append(_state(expert))
    return ExpertSet(tuple(names), _state(generic), tuple(experts))


def save_experts(experts: ExpertSet, path: str | Path) -> None:
    """Write ``experts`` with ``torch.save`` (a dict: domains, generic, experts)."""
    torch.save({"domains": list(experts.domains), "generic": experts.generic, "experts": list(experts.experts)}, path)


def load_experts(path: str | Path, model: nn.Module) -> ExpertSet:
    """Experts saved by :func:`save_experts`; a ValueError when they do not fit ``model``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only: nothing runs
    if not isinstance(payload, dict) or not {"domains", "generic", "experts"} <= set(payload):
        raise ValueError(f"'{path}' is not an expert file; expected a dict with domains, generic and experts")
    expected = set(model.state_dict())
    for index, state in enumerate([payload["generic"], *payload["experts"]]):
        if set(state) != expected:
            raise ValueError(
                f"'{path}': model {index} has keys {sorted(set(state) ^ expected)} the task's model does not share"
            )
    if not payload["experts"] or len(payload["experts"]) != len(payload["domains"]):
        raise ValueError(
            f"'{path}': expected one expert per domain, got {len(payload['experts'])} for {payload['domains']}"
        )
    return ExpertSet(tuple(payload["domains"]), payload["generic"], tuple(payload["experts"]))


def pack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> ArrayRecord:
    """Several state dicts in one ArrayRecord, keys ``"<index>/<name>"``."""
    return ArrayRecord(
        {f"{k}/{name}": value.detach().cpu() for k, state in enumerate(states) for name, value in state.items()}
    )


def unpack_states(record: ArrayRecord) -> list[State]:
    """The state dicts packed by :func:`pack_states`, in index order."""
    states: dict[int, State] = {}
    for key, value in record.to_torch_state_dict().items():
        index, _, name = key.partition("/")
        states.setdefault(int(index), {})[name] = value
    return [states[k] for k in sorted(states)]
