"""Simulated poisoning: a share of the clients are attackers that send crafted updates.

Run-config section ``poison``: ``share`` of the training clients (a fixed, seeded set of partitions,
``round(share * num-clients)`` of them) attack in every round they are sampled, with

* ``scale``: the honest update Delta = trained - received multiplied by ``factor``;
* ``sign-flip``: the update reversed and multiplied by ``factor`` (received - factor * Delta);
* ``random``: Gaussian noise in place of the update, each array's noise with ``factor`` times the norm
  of its honest update;
* ``label-flip``: honest training on flipped labels (classification: ``C - 1 - y``; gaze: the gaze
  direction negated).

Only floating-point arrays are changed (integer buffers stay honest). Decisions and noise are seeded
by (seed, partition, round): a poisoned run is reproducible and a resumed one sees the same attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedpersonal.config import setting

ATTACKS = ("none", "scale", "sign-flip", "random", "label-flip")


@dataclass(frozen=True)
class PoisonSettings:
    """Run-config section ``poison``."""

    SECTION: ClassVar[str] = "poison"

    share: float = setting(0.0, "a fraction in [0, 0.5) of the training clients that attack", lambda v: 0 <= v < 0.5)
    attack: str = setting("none", f"one of {list(ATTACKS)}", lambda v: v in ATTACKS)
    factor: float = setting(10.0, "a number > 0 (how much the crafted update is scaled)", lambda v: v > 0)


def attackers(settings: PoisonSettings, seed: int, num_clients: int) -> frozenset[int]:
    """The partitions that attack: ``round(share * num_clients)`` of them, chosen by ``seed``."""
    if settings.attack == "none":
        return frozenset()
    count = int(round(settings.share * num_clients))
    chosen = np.random.default_rng([seed, 7101]).choice(num_clients, size=count, replace=False)
    return frozenset(int(partition) for partition in chosen)


def poisoned_update(
    received: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], settings: PoisonSettings, rng: torch.Generator
) -> dict[str, torch.Tensor]:
    """The arrays an attacker sends instead of ``trained`` (update attacks; ``label-flip`` and
    ``none`` send ``trained`` as it is)."""
    if settings.attack not in ("scale", "sign-flip", "random"):
        return trained
    crafted = {}
    for key, value in trained.items():
        base = received.get(key)
        if base is None or not value.is_floating_point():
            crafted[key] = value
            continue
        delta = value - base
        if settings.attack == "scale":
            crafted[key] = base + settings.factor * delta
        elif settings.attack == "sign-flip":
            crafted[key] = base - settings.factor * delta
        else:
            noise = torch.randn(value.shape, generator=rng, dtype=value.dtype)
            norm = float(noise.norm())
            crafted[key] = base + noise * (settings.factor * float(delta.norm()) / norm if norm > 0 else 0.0)
    return crafted
