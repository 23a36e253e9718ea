"""Mode-IMM merge of expert models with per-parameter importance weights (DUA's server step).

theta_user = sum_k (Omega_k / max(sum_j Omega_j, floor)) * theta_k, element-wise, for every
parameter that has an Omega (the floor, 1e-10 as in DUA's code, keeps the division finite; a
parameter that no expert finds important at all becomes 0, as there). Entries without an Omega
(the head, BN running statistics) are the plain mean of the experts (mean-IMM); integer buffers
(BN ``num_batches_tracked``) are the first expert's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch

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
            total = torch.stack(weights).sum(dim=0).clamp_min(floor)
            # At least one expert (check_omegas), so the sum is a tensor, never sum()'s start value 0.
            merged[name] = cast(torch.Tensor, sum(w / total * v for w, v in zip(weights, values)))
        elif first.is_floating_point():
            merged[name] = torch.stack(values).mean(dim=0)
        else:
            merged[name] = first.clone()
    return merged


def max_normalized(omega: State) -> dict[str, torch.Tensor]:
    """``omega`` divided by its largest entry over all parameters (DUA code's 'modelnorm'), so
    every expert's weights span [0, 1] whatever the scale of its outputs."""
    largest = max(float(value.max()) for value in omega.values())
    return {name: value / max(largest, FLOOR) for name, value in omega.items()}


OMEGA_NORMS: dict[str, Callable[[State], dict[str, torch.Tensor]]] = {"none": dict, "max": max_normalized}
