"""Mode-IMM merge of expert models with per-parameter importance weights (DUA's server step).

theta_user = sum_k (Omega_k / sum_j Omega_j) * theta_k, element-wise, for every parameter that has
an Omega; where the sum is exactly 0 it is replaced by the floor (1e-10), as in DUA's reference code,
so a parameter that no expert finds important at all becomes 0 there, and tiny but non-zero sums
are divided as they are. Parameters without an Omega (the head) are the plain mean of the experts
(mean-IMM). BatchNorm running statistics are taken from one model, the first expert, as the
reference does (then re-estimated on the user's data by AdaBN, ``adapt.method = "adabn"``): a
uniform mean of statistics would not match the Omega-weighted weights that feed them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch

from fedpersonal.params import is_statistic

FLOOR = 1e-10
State = Mapping[str, torch.Tensor]


def check_omegas(experts: Sequence[State], omegas: Sequence[State]) -> None:
    """A ValueError unless there is one Omega per expert, each shaped like the parameters it weighs."""
    if not experts or len(experts) != len(omegas):
        raise ValueError(f"expected one Omega per expert, got {len(omegas)} Omegas for {len(experts)} experts")
    keys = set(omegas[0])
    for k, omega in enumerate(omegas):
        if set(omega) != keys:
            raise ValueError(f"Omega {k} has keys {sorted(set(omega) ^ keys)} that Omega 0 does not share")
        for name, value in omega.items():
            if name not in experts[k]:
                raise ValueError(f"Omega {k} weighs '{name}', which the experts do not have")
            if tuple(value.shape) != tuple(experts[k][name].shape):
                raise ValueError(
                    f"Omega {k}['{name}'] has shape {tuple(value.shape)}; expected {tuple(experts[k][name].shape)}"
                )


def imm_merge(experts: Sequence[State], omegas: Sequence[State], floor: float = FLOOR) -> dict[str, torch.Tensor]:
    """The user-specific model merged from ``experts`` with the user's ``omegas`` (one per expert)."""
    check_omegas(experts, omegas)
    merged: dict[str, torch.Tensor] = {}
    for name, first in experts[0].items():
        values = [expert[name] for expert in experts]
        if name in omegas[0]:
            weights = [omega[name].to(first.dtype) for omega in omegas]
            total = torch.stack(weights).sum(dim=0)
            total = torch.where(total == 0, torch.full_like(total, floor), total)
            # At least one expert (check_omegas), so the sum is a tensor, never sum()'s start value 0.
            merged[name] = cast(torch.Tensor, sum(w / total * v for w, v in zip(weights, values)))
        elif first.is_floating_point() and not is_statistic(name):
            merged[name] = torch.stack(values).mean(dim=0)
        else:  # running statistics and integer buffers: the first expert's
            merged[name] = first.clone()
    return merged


def max_normalized(omega: State) -> dict[str, torch.Tensor]:
    """``omega`` divided by its largest entry over all parameters (DUA code's 'modelnorm'), so
    every expert's weights span [0, 1] whatever the scale of its outputs."""
    largest = max(float(value.max()) for value in omega.values())
    return {name: value / max(largest, FLOOR) for name, value in omega.items()}


OMEGA_NORMS: dict[str, Callable[[State], dict[str, torch.Tensor]]] = {"none": dict, "max": max_normalized}
