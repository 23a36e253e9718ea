"""Why DUA's Omega-weighted merge does what it does: per-user diagnostics of the experts.

For one user's unlabelled data and every expert k (:func:`diagnose_user`):

* ``share``: expert k's share of the total Omega, sum over every weighed entry of Omega_k divided by
  the same sum over all experts (the shares of a user sum to 1);
* ``weight``: expert k's mean merge weight, the mean over every weighed entry of
  Omega_k / sum_j Omega_j, which is what mode-IMM multiplies the expert's parameters by (a share
  counts large entries more; the weight counts every entry once);
* ``output_norm``: mean L2 norm of the expert's outputs (logits) on the data with the expert's own
  BN statistics, and ``output_norm_adabn`` after AdaBN on the data (MAS's Omega grows with it:
  d||F||^2/dtheta = 2 F dF/dtheta);
* ``bn_variance``: mean BN running variance over every BN channel after AdaBN on the data;
* ``zeroed`` (one number per user): the fraction of weighed entries that no expert finds important
  at all (Omega sums to exactly 0), which the merge sets to 0; the weights sum to 1 minus it.

:func:`dominance` says which expert has the largest share for each user, and whether one expert
has it for every user.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedpersonal.adaptation.adabn import Forward, adabn, batchnorm_layers
from fedpersonal.adaptation.imm import FLOOR
from fedpersonal.adaptation.importance import importance
from fedpersonal.training import Tensors, iterate_batches

State = Mapping[str, torch.Tensor]


def omega_shares(omegas: Sequence[State]) -> list[float]:
    """Each expert's share of the total Omega (sums over every entry); they sum to 1."""
    totals = [sum(float(value.double().sum()) for value in omega.values()) for omega in omegas]
    total = sum(totals)
    if not total > 0:
        raise ValueError(f"the experts' Omegas sum to {total}; a share needs a positive total")
    return [value / total for value in totals]


def merge_weights(omegas: Sequence[State], floor: float = FLOOR) -> list[float]:
    """Each expert's mean merge weight Omega_k / sum_j Omega_j over every weighed entry (the sum
    floored where it is exactly 0, as :func:`~fedpersonal.adaptation.imm.imm_merge` does, so such
    entries weigh 0 for every expert)."""
    sums = [0.0] * len(omegas)
    entries = 0
    for name in omegas[0]:
        weights = torch.stack([omega[name].double() for omega in omegas])
        total = weights.sum(dim=0)
        total = torch.where(total == 0, torch.full_like(total, floor), total)
        for k, value in enumerate(weights / total):
            sums[k] += float(value.sum())
        entries += total.numel()
    return [value / max(entries, 1) for value in sums]


def zeroed_fraction(omegas: Sequence[State]) -> float:
    """The fraction of weighed entries whose Omega is exactly 0 for every expert."""
    zero = sum(int((torch.stack([omega[name] for omega in omegas]).sum(dim=0) == 0).sum()) for name in omegas[0])
    return zero / max(sum(value.numel() for value in omegas[0].values()), 1)


def output_norm(model: nn.Module, forward: Forward, inputs: Tensors, batch_size: int) -> float:
    """Mean L2 norm of the model's outputs on ``inputs``, in evaluation mode."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in iterate_batches(inputs, batch_size):
            out = forward(model, batch)
            total += float(out.flatten(1).norm(dim=1).sum())
            count += len(out)
    return total / max(count, 1)


def bn_variance(model: nn.Module) -> float:
    """Mean running variance over every BN channel of ``model``."""
    variances = [layer.running_var for layer in batchnorm_layers(model) if layer.running_var is not None]
    if not variances:
        raise ValueError(f"the model ({type(model).__name__}) has no BatchNorm running variance")
    return float(torch.cat([v.flatten() for v in variances]).mean())


@dataclass(frozen=True)
class UserDiagnostics:
    """One user's view of the experts (one value per expert, in the experts' order)."""

    share: tuple[float, ...]
    weight: tuple[float, ...]
    output_norm: tuple[float, ...]
    output_norm_adabn: tuple[float, ...]
    bn_variance: tuple[float, ...]
    zeroed: float

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (for JSON)."""
        return {
            key: list(value) if isinstance(value := getattr(self, key), tuple) else value
            for key in self.__dataclass_fields__
        }


def diagnose_user(
    experts: Sequence[State],
    build_model: Callable[[], nn.Module],
    forward: Forward,
    inputs: Tensors,
    method: str,
    batch_size: int,
    generator: torch.Generator,
    adabn_first: bool = False,
) -> tuple[UserDiagnostics, list[dict[str, torch.Tensor]]]:
    """The diagnostics of every expert on one user's ``inputs`` and the Omegas they come from
    (``method``; with ``adabn_first`` Omega is computed after AdaBN, as ``dua.omega-adabn``)."""
    omegas, norms, adapted_norms, variances = [], [], [], []
    for state in experts:
        model = build_model()
        model.load_state_dict(state)
        norms.append(output_norm(model, forward, inputs, batch_size))
        adapted = adabn(copy.deepcopy(model), forward, inputs, batch_size)
        adapted_norms.append(output_norm(adapted, forward, inputs, batch_size))
        variances.append(bn_variance(adapted))
        omegas.append(importance(method, adapted if adabn_first else model, forward, inputs, batch_size, generator))
    diagnostics = UserDiagnostics(
        tuple(omega_shares(omegas)),
        tuple(merge_weights(omegas)),
        tuple(norms),
        tuple(adapted_norms),
        tuple(variances),
        zeroed_fraction(omegas),
    )
    return diagnostics, omegas


def dominance(shares_by_user: Sequence[Sequence[float]], names: Sequence[str]) -> dict[str, Any]:
    """Which expert has the largest Omega share for each user (``top``, by name), how many users
    each expert tops, and ``dominates_all``: the one expert that tops every user, or ``None``."""
    top = [names[max(range(len(shares)), key=lambda k: shares[k])] for shares in shares_by_user]
    counts = {name: top.count(name) for name in names if name in top}
    return {"top": top, "counts": counts, "dominates_all": top[0] if len(set(top)) == 1 else None}
