"""Run-config section ``secagg``: secure aggregation of the model updates with Flower's SecAgg+.

The protocol is Flower's (``flwr.server.workflow.SecAggPlusWorkflow`` on the server,
``flwr.client.mod.secaggplus_mod`` on the clients); :mod:`simulations.secagg` wires it into the
round loop and the ClientApp. This module holds the settings, their checks against the rest of the
run config, and the bound on what quantisation changes in the aggregate (:func:`error_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fedpersonal.config import ConfigError, RunConfig, setting, settings_dict
from fedpersonal.privacy.accounting import sampled_clients
from fedpersonal.privacy.settings import DPSettings

MAX_MODULUS = 2**32  # Flower's masks and sums are int64; its quantized values int32


def _count_or_share(value: float) -> bool:
    return 0 < value <= 1 or (value > 1 and value == int(value))


@dataclass(frozen=True)
class SecAggSettings:
    """Run-config section ``secagg``.

    Each sampled client's update ``reply - sent`` is weighted (by ``num-examples``; uniformly under
    differential privacy), clipped to ``[-clipping-range, clipping-range]``, quantized to integers in
    ``[0, quantization-range)`` and masked modulo ``modulus-range``; the server only learns the
    sum. ``num-shares`` and ``reconstruction-threshold`` follow Flower's SecAgg+ workflow: a number in
    (0, 1] is a share (of the sampled clients, of ``num-shares``), a larger integer a count.
    """

    SECTION: ClassVar[str] = "secagg"

    enabled: bool = setting(False, "true or false (SecAgg+ for the train step of averaging strategies)")
    num_shares: float = setting(
        1.0,
        "a share in (0, 1] of the sampled clients, or an integer count >= 3: the neighbours each client "
        "secret-shares its keys with",
        _count_or_share,
    )
    reconstruction_threshold: float = setting(
        0.67,
        "a share in (0, 1] of num-shares, or an integer count >= 2: the shares needed to rebuild a key",
        _count_or_share,
    )
    clipping_range: float = setting(
        8.0, "a number > 0 (each weighted update entry is clipped to +-it)", lambda v: v > 0
    )
    quantization_range: int = setting(
        4194304, "an integer in [2, 2**31) (quantization levels of an entry)", lambda v: 2 <= v < 2**31
    )
    modulus_range: int = setting(
        4294967296,
        "a power of 2 in (quantization-range, 2**32] (masks and sums are taken modulo it)",
        lambda v: 2 <= v <= MAX_MODULUS and v & (v - 1) == 0,
    )
    max_weight: float = setting(
        0.0,
        "a number >= 0 (the largest weight of a client's update; 0: the task's largest possible "
        "num-examples, or 1 under differential privacy's uniform weights)",
        lambda v: v >= 0,
    )
    timeout: float = setting(
        0.0, "a number >= 0 (seconds each SecAgg+ stage waits for replies; 0: round-timeout-s)", lambda v: v >= 0
    )

    @property
    def shares(self) -> int | float:
        """``num-shares`` as Flower's workflow takes it: a float share or an int count."""
        return _flower_number(self.num_shares)

    @property
    def threshold(self) -> int | float:
        """``reconstruction-threshold`` as Flower's workflow takes it."""
        return _flower_number(self.reconstruction_threshold)


def _flower_number(value: float) -> int | float:
    return float(value) if value <= 1 else int(value)


def uniform_weights(cfg: RunConfig) -> bool:
    """Whether the server's mean weights every update alike (differential privacy) rather than by
    ``num-examples``."""
    return cfg.section(DPSettings).enabled


def effective_max_weight(cfg: RunConfig, max_examples: float) -> float:
    """``max-weight``, or its automatic value: 1 for uniform weights, else ``max_examples``."""
    chosen = cfg.section(SecAggSettings).max_weight
    if chosen > 0:
        return chosen
    return 1.0 if uniform_weights(cfg) else float(max_examples)


def check_secagg(cfg: RunConfig, averaging: bool, averaging_strategies: Sequence[str]) -> None:
    """ConfigError unless section ``secagg`` is off or fits the run: ``averaging`` (the strategy's
    server half is a mean of the replies), no server-side clipping of differential privacy, at
    least 2 sampled clients, settings Flower's workflow accepts, and sums that cannot overflow."""
    s = cfg.section(SecAggSettings)
    if not s.enabled:
        return
    if not averaging:
        raise ConfigError(
            f"run config key 'secagg.enabled' = True is invalid with strategy {cfg.strategy!r}, whose server "
            f"does not average the updates; secure aggregation applies to {sorted(averaging_strategies)}"
        )
    dp = cfg.section(DPSettings)
    if dp.enabled and not dp.client_side:
        raise ConfigError(
            f"run config key 'secagg.enabled' = True is invalid with dp.mode = {dp.mode!r}: the server cannot "
            "clip updates it never sees; expected dp.mode 'client-fixed' or 'client-adaptive' (clipping on "
            "the device) or 'none'"
        )
    sampled = sampled_clients(cfg)
    if sampled < 2:
        raise ConfigError(
            f"run config key 'secagg.enabled' = True needs at least 2 clients per round; num-clients = "
            f"{cfg.num_clients} and fraction-train = {cfg.fraction_train} sample {sampled}"
        )
    if isinstance(s.shares, int) and s.shares > sampled:
        raise ConfigError(
            f"run config key 'secagg.num-shares' = {s.num_shares:g} is invalid: a round samples {sampled} clients; "
            f"expected a count of at most {sampled} or a share in (0, 1]"
        )
    if sampled * s.quantization_range >= s.modulus_range:
        raise ConfigError(
            f"run config keys 'secagg.quantization-range' = {s.quantization_range} and 'secagg.modulus-range' = "
            f"{s.modulus_range}: the sum of {sampled} clients' quantized values could overflow; expected "
            f"{sampled} * quantization-range < modulus-range"
        )
    from flwr.server.workflow import SecAggPlusWorkflow  # Flower's own checks of the settings

    try:
        SecAggPlusWorkflow(
            s.shares,
            s.threshold,
            clipping_range=s.clipping_range,
            quantization_range=s.quantization_range,
            modulus_range=s.modulus_range,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"run config section 'secagg' {settings_dict(s)} rejected by Flower's SecAgg+: {error}"
        ) from error


def quantized_weights(weights: Sequence[float], max_weight: float, quantization_range: int) -> list[float]:
    """The weights SecAgg+ applies: ``round(w / max-weight * Q) / Q`` (Flower's secaggplus_mod)."""
    return [round(w / max_weight * quantization_range) / quantization_range for w in weights]


def error_bound(s: SecAggSettings, weights: Sequence[float], max_weight: float, largest_update: float) -> float:
    """The largest difference, per entry, between SecAgg+'s aggregate and the exact weighted mean of
    updates whose entries are at most ``largest_update`` in absolute value (and, weighted, within
    ``clipping-range``).

    Client i sends ``v_i = d_i u_i`` with ``d_i`` its quantized weight (:func:`quantized_weights`),
    stochastically rounded to a grid of step ``2 c / Q``: an error below one step. The server
    divides the sum by ``D = sum d_i``, so quantisation moves the mean by less than
    ``n 2 c / (Q D)``; using ``d_i`` for ``w_i / max-weight`` (off by at most ``1 / (2 Q)`` each)
    moves it by at most ``sum |d_i - r_i| max |u_i - mean| / D <= n largest_update / (Q D)``.
    """
    n = len(weights)
    total = sum(quantized_weights(weights, max_weight, s.quantization_range))
    if n == 0 or total <= 0:
        return math.inf
    return n * (2 * s.clipping_range + largest_update) / (s.quantization_range * total)
