"""Robust aggregation: Flower's Byzantine-robust strategies, configured from run-config section ``robust``.

``fedmedian`` (coordinate-wise median, Yin et al., 2018), ``fedtrimmedavg`` (coordinate-wise mean of the
middle ``1 - 2 beta`` of the values, Yin et al., 2018), ``krum`` and ``multikrum`` (Blanchard et al.,
2017: the update(s) closest to their ``n - f - 2`` nearest neighbours) and ``bulyan`` (El Mhamdi et al.,
2018: Multi-Krum selection, then a trimmed mean; needs n >= 4f + 3 replies). The strategies are
Flower's own (``flwr.serverapp.strategy``), built with this project's sampling arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedpersonal.config import setting


@dataclass(frozen=True)
class RobustSettings:
    """Run-config section ``robust``."""

    SECTION: ClassVar[str] = "robust"

    num_malicious_nodes: int = setting(
        0, "an integer >= 0 (f: the attackers Krum, Multi-Krum and Bulyan assume)", lambda v: v >= 0
    )
    num_nodes_to_select: int = setting(1, "an integer >= 1 (Multi-Krum: updates averaged)", lambda v: v >= 1)
    beta: float = setting(0.2, "a fraction in [0, 0.5) (trimmed mean: cut from each end)", lambda v: 0 <= v < 0.5)
