"""Run-config section ``dp``: client-level differential privacy of the aggregated model updates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedpersonal.config import setting

MODES = ("none", "server-fixed", "server-adaptive", "client-fixed", "client-adaptive")
SAMPLING = ("auto", "no-amplification")


@dataclass(frozen=True)
class DPSettings:
    """Run-config section ``dp``.

    ``mode`` picks Flower's wrapper: clipping on the server or on the client, with a fixed norm or
    one adapted to the ``target-quantile`` of the update norms (Andrew et al., NeurIPS 2021). The
    Gaussian noise added to the mean update has standard deviation
    ``noise-multiplier * clipping-norm / sampled clients``; ``target-epsilon`` > 0 instead picks the
    smallest noise multiplier that keeps epsilon at ``delta`` after ``num-rounds`` rounds within it.
    """

    SECTION: ClassVar[str] = "dp"

    mode: str = setting("none", f"one of {list(MODES)}", lambda v: v in MODES)
    noise_multiplier: float = setting(1.0, "a number > 0 (noise std / clipping norm)", lambda v: v > 0)
    target_epsilon: float = setting(
        0.0, "a number >= 0 (0: use noise-multiplier; else the noise multiplier is chosen for it)", lambda v: v >= 0
    )
    delta: float = setting(1e-5, "a number in (0, 1)", lambda v: 0 < v < 1)
    clipping_norm: float = setting(
        1.0, "a number > 0 (L2 bound of a client's update; the initial bound when adaptive)", lambda v: v > 0
    )
    target_quantile: float = setting(
        0.5,
        "a number in [0, 1] (adaptive: the share of updates the norm should leave unclipped)",
        lambda v: 0 <= v <= 1,
    )
    clip_lr: float = setting(0.2, "a number > 0 (adaptive: geometric learning rate of the bound)", lambda v: v > 0)
    clipped_count_std: float = setting(
        0.0, "a number >= 0 (adaptive: noise std of the clipped count; 0: sampled clients / 20)", lambda v: v >= 0
    )
    sampling: str = setting(
        "auto",
        f"one of {list(SAMPLING)} ('auto': amplification by sampling clients without replacement when "
        "fraction-train < 1)",
        lambda v: v in SAMPLING,
    )

    @property
    def enabled(self) -> bool:
        """Whether the run adds differential privacy."""
        return self.mode != "none"

    @property
    def adaptive(self) -> bool:
        """Whether the clipping norm adapts to the update norms."""
        return self.mode.endswith("adaptive")

    @property
    def client_side(self) -> bool:
        """Whether clients clip their own updates (the server never sees an unclipped update)."""
        return self.mode.startswith("client")
