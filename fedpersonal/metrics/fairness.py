"""Fairness summary of a per-client metric: mean, std, worst client, mean of the worst 10%."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def fairness_summary(values: Sequence[float], better: str) -> dict[str, float]:
    """Summarise per-client values.

    ``better`` is ``"lower"`` (errors) or ``"higher"`` (accuracies); it decides which clients are
    the worst. The worst 10% holds ``ceil(0.1 * n)`` clients, so at least one.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    if len(values) == 0:
        raise ValueError("fairness_summary needs at least one client value")
    arr = np.asarray(values, dtype=np.float64)
    worst_first = np.sort(arr)[::-1] if better == "lower" else np.sort(arr)
    k = math.ceil(0.1 * len(arr))
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "worst": float(worst_first[0]),
        "worst10_mean": float(worst_first[:k].mean()),
        "clients": float(len(arr)),
    }
