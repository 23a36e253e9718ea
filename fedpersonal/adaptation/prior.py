"""Omega of every expert: DUA's user prior (on the user's data) and mode-IMM's server prior.

* :func:`expert_omegas`: Omega_k of each expert on one data set. The DUA client calls it on its
  unlabelled training split; with ``adabn_first`` each expert's BatchNorm running statistics are
  first re-estimated on that data (AdaBN, ``dua.omega-adabn``), so Omega is measured at the
  operating point the expert would have on the user's data rather than with the server's
  statistics.
* :func:`server_omegas`: Omega_k of expert k on the labelled server data of *its own* domain,
  labels unused, as DUA's reference code does for its user-agnostic baseline mode-IMM (FIM-IMM or
  MAS-IMM): one prior, hence one merged model, for every user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedpersonal.adaptation.adabn import Forward, adabn
from fedpersonal.adaptation.importance import importance
from fedpersonal.training import Tensors

State = Mapping[str, torch.Tensor]


def expert_omegas(
    experts: Sequence[State],
    build_model: Callable[[], nn.Module],
    forward: Forward,
    inputs: Tensors,
    method: str,
    batch_size: int,
    generator: torch.Generator,
    adabn_first: bool = False,
    device: torch.device | str = "cpu",
) -> list[dict[str, torch.Tensor]]:
    """Omega (``method``, a key of :data:`~fedpersonal.adaptation.importance.IMPORTANCE`) of every
    expert on ``inputs``; with ``adabn_first`` each expert's BN statistics are re-estimated on
    ``inputs`` first (batches of ``batch_size``). The experts' states are not changed."""
    omegas = []
    for state in experts:
        model = build_model().to(device)
        model.load_state_dict(state)
        if adabn_first:
            adabn(model, forward, inputs, batch_size)
        omegas.append(importance(method, model, forward, inputs, batch_size, generator))
    return omegas


def server_omegas(
    experts: Sequence[State],
    domains: Sequence[Any],
    server_data: Callable[[Any, int], Tensors],
    samples: int,
    build_model: Callable[[], nn.Module],
    forward: Forward,
    inputs_of: Callable[[Tensors], Tensors],
    method: str,
    batch_size: int,
    generator: torch.Generator,
) -> list[dict[str, torch.Tensor]]:
    """Omega of expert k on ``samples`` labelled server samples of ``domains[k]`` (its own domain),
    labels dropped by ``inputs_of``: the prior of the reference's mode-IMM, the same for every user."""
    if len(experts) != len(domains):
        raise ValueError(f"expected one domain per expert, got {len(domains)} for {len(experts)} experts")
    return [
        expert_omegas(
            [state], build_model, forward, inputs_of(server_data(domain, samples)), method, batch_size, generator
        )[0]
        for state, domain in zip(experts, domains)
    ]
