"""Simulated device faults: clients that drop out of a round, and permanently slow clients.

Decisions are seeded by (seed, partition, round), so a run with faults is reproducible and a
resumed run sees the same faults as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedpersonal.config import setting


class SimulatedDropout(RuntimeError):
    """Raised by a client that the fault simulation takes offline for this round."""


def _probability(value: float) -> bool:
    return 0 <= value <= 1


@dataclass(frozen=True)
class FaultSettings:
    """Run-config section ``faults``."""

    SECTION: ClassVar[str] = "faults"

    dropout: float = setting(0.0, "a probability in [0, 1] that a client drops out of a round", _probability)
    slow_fraction: float = setting(0.0, "a fraction in [0, 1] of clients that are slow devices", _probability)
    slow_delay_s: float = setting(0.0, "a number >= 0 of seconds a slow client adds per call", lambda v: v >= 0)


def _uniform(*key: int) -> float:
    return float(np.random.default_rng(list(key)).random())


def is_slow(settings: FaultSettings, seed: int, partition_id: int) -> bool:
    """Whether this client is one of the slow devices (fixed for the whole run)."""
    return _uniform(seed, partition_id, 7001) < settings.slow_fraction


def drops_out(settings: FaultSettings, seed: int, partition_id: int, server_round: int) -> bool:
    """Whether this client drops out of this round."""
    return _uniform(seed, partition_id, server_round, 7002) < settings.dropout


def apply_faults(settings: FaultSettings, seed: int, partition_id: int, server_round: int) -> None:
    """Sleep if the client is slow; raise :class:`SimulatedDropout` if it drops out."""
    if is_slow(settings, seed, partition_id) and settings.slow_delay_s > 0:
        time.sleep(settings.slow_delay_s)
    if drops_out(settings, seed, partition_id, server_round):
        raise SimulatedDropout(f"client {partition_id} dropped out of round {server_round} (simulated)")
