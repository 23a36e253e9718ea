"""Client-level differential privacy around our strategies, with Flower's DP wrappers.

:class:`PrivateAggregation` holds one of Flower's DP wrappers
(``DifferentialPrivacyClientSide{Fixed,Adaptive}Clipping``) around an averaging strategy
(FedAvg or FedProx built with ``weighted_by_key=DP_WEIGHT``), and adds what composing them with our
algorithms needs:

* **uniform weights**: the wrappers' noise, ``z * C / m``, assumes the plain mean of ``m`` clipped
  updates; every reply is given the weight ``DP_WEIGHT = 1`` (example-weighted means would let a large
  client move the mean by more than ``C / m``);
* **clipping by key**: a personalized client sends only its shared keys, and a client may send its
  model back unchanged; clipping (:func:`fedpersonal.privacy.clipping.clip_update`, Flower's clipping
  primitive) takes ``reply - sent`` key by key and leaves a zero update alone (Flower's server-side
  wrappers pair arrays by position and divide by the update's norm). It runs on the device
  (``client-*`` modes, :mod:`simulations.client_app`) or here (``server-*``), so the wrapper is always
  Flower's client-side one, which sends the norm, adds the noise and adapts the norm;
* **counters**: integer arrays (``num_batches_tracked``) are not released (:mod:`fedpersonal.privacy.clipping`);
  the server keeps the ones it sent;
* **accounting**: after every aggregation one sampled Gaussian release is composed into the RDP
  accountant (:mod:`fedpersonal.privacy.accounting`), with the effective noise multiplier
  ``z * k / m`` when only ``k < m`` replies arrived; the train metrics of the round carry
  ``dp-epsilon``, ``dp-delta``, ``dp-noise-multiplier``, ``dp-clipping-norm`` and ``dp-noise-std``;
* **the adaptive rule's direction**: replies report the *unclipped* bit (:func:`unclipped_bit`), so
  the norm tracks the ``dp.target-quantile`` of the update norms as in Andrew et al.;
* **noise of the norm used**: Flower's adaptive wrapper calibrates the noise to the norm it has just
  adapted for the next round; when that is smaller than the norm this round's updates were clipped
  to, the missing variance is added (:meth:`PrivateAggregation._noise_for`);
* **checkpoints**: :meth:`PrivateAggregation.state_dict` holds the accountant's releases and the
  adaptive clipping norm.

A server optimizer (FedOpt family) steps on the output of a :class:`PrivateAggregation`, never the
other way round: the noise is added to the mean update, and the optimizer step is post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    Strategy,
)
from flwr.serverapp.strategy.dp_adaptive_clipping import DifferentialPrivacyAdaptiveBase
from flwr.serverapp.strategy.dp_fixed_clipping import DifferentialPrivacyFixedClippingBase
from flwr.supercore.differential_privacy import KEY_NORM_BIT, add_gaussian_noise_inplace, compute_stdv

from fedpersonal.privacy.accounting import ReleasePlan
from fedpersonal.privacy.clipping import clip_update, counters_unchanged, is_counter, unclipped_bit
from fedpersonal.privacy.settings import DPSettings

DP_WEIGHT = "dp-weight"  # the weight of a train reply under DP: 1 (uniform mean)
NUM_EXAMPLES = "num-examples"
DPWrapper = DifferentialPrivacyFixedClippingBase | DifferentialPrivacyAdaptiveBase


def flower_wrapper(averaging: Strategy, dp: DPSettings, noise_multiplier: float, sample_size: int) -> DPWrapper:
    """Flower's wrapper that adds the noise (and adapts the norm) for ``dp.mode`` around ``averaging``
    (ValueError on settings it rejects). Clipping is :func:`fedpersonal.privacy.clipping.clip_update`,
    on the device or, server-side, in :class:`PrivateAggregation`; so the wrapper is Flower's
    client-side one, which sends the clipping norm and expects clipped replies."""
    if dp.adaptive:
        return DifferentialPrivacyClientSideAdaptiveClipping(
            averaging,
            noise_multiplier,
            sample_size,
            initial_clipping_norm=dp.clipping_norm,
            target_clipped_quantile=dp.target_quantile,
            clip_norm_lr=dp.clip_lr,
            clipped_count_stddev=dp.clipped_count_std or None,
        )
    return DifferentialPrivacyClientSideFixedClipping(averaging, noise_multiplier, dp.clipping_norm, sample_size)


class PrivateAggregation(Strategy):
    """Differentially private mean of the clients' updates: one of Flower's DP wrappers, made to
    compose with personalized clients, BatchNorm counters and checkpoints, and accounted."""

    def __init__(self, wrapper: DPWrapper, plan: ReleasePlan, noise_multiplier: float, clip_here: bool) -> None:
        self.wrapper = wrapper
        self.clip_here = clip_here  # server-side clipping: the raw updates reach the server, which clips them
        self.plan = plan
        self.noise_multiplier = noise_multiplier  # z of the whole mechanism (adaptive: updates + count)
        self.accountant = plan.accountant()
        self.sent = ArrayRecord()

    def summary(self) -> None:
        """Log the wrapper's and the inner strategy's settings."""
        self.wrapper.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the sent arrays; the wrapper samples (and, client-side, sends the clipping norm)."""
        self.sent = arrays
        return self.wrapper.configure_train(server_round, arrays, config, grid)

    def _prepared(self, replies: list[Message], clipping_norm: float) -> list[Message]:
        keys = list(replies[0].content.array_records["arrays"].keys())
        for reply in replies:
            arrays = reply.content.array_records["arrays"]
            if list(arrays.keys()) != keys:
                raise AggregationError("differential privacy needs every reply of a round to hold the same keys")
            metrics = reply.content.metric_records["metrics"]
            if self.clip_here:
                arrays, clipped = clip_update(self.sent, arrays, clipping_norm)
                metrics[KEY_NORM_BIT] = unclipped_bit(clipped)
            reply.content["arrays"] = counters_unchanged(arrays, self.sent, as_float=True)
            metrics[DP_WEIGHT] = 1.0
        return replies

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapper's noisy mean of the clipped updates, its counters as sent, and the privacy
        spent so far in the metrics."""
        replies = list(replies)
        if not replies:
            return None, None
        clipping_norm = float(self.wrapper.clipping_norm)  # the bound used in this round
        aggregated, metrics = self.wrapper.aggregate_train(server_round, self._prepared(replies, clipping_norm))
        if aggregated is None:
            return None, metrics
        noise_std = self._noise_for(clipping_norm, aggregated)
        arrays = {key: self.sent[key] if is_counter(self.sent[key]) else array for key, array in aggregated.items()}
        effective = self.noise_multiplier * len(replies) / self.plan.sample_size
        self.accountant.compose(self.plan.event(effective))
        spent = {
            "dp-epsilon": float(self.accountant.get_epsilon(self.plan.delta)),
            "dp-delta": self.plan.delta,
            "dp-noise-multiplier": effective,
            "dp-clipping-norm": clipping_norm,
            "dp-noise-std": noise_std,
        }
        merged = {key: value for key, value in dict(metrics or {}).items() if key != DP_WEIGHT}
        return ArrayRecord(arrays), MetricRecord({**merged, **spent})

    def _noise_for(self, clipping_norm: float, aggregated: ArrayRecord) -> float:
        """Make the noise of this round match the norm its updates were clipped to; its std.

        Flower's adaptive wrapper adapts the norm before it adds the noise, so the noise follows the
        *next* round's norm; when that norm is smaller, the missing variance is added here
        (independent Gaussians add up), so no round is under-noised."""
        z = float(self.wrapper.noise_multiplier)
        needed = compute_stdv(z, clipping_norm, self.plan.sample_size)
        added = compute_stdv(z, float(self.wrapper.clipping_norm), self.plan.sample_size)
        if added < needed:
            floats = [key for key, array in aggregated.items() if not is_counter(self.sent[key])]
            values = [aggregated[key].numpy() for key in floats]
            add_gaussian_noise_inplace(values, math.sqrt(needed**2 - added**2))
            for key, value in zip(floats, values, strict=True):
                aggregated[key] = Array(value)
        return max(needed, added)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation is not private: the inner strategy's."""
        return self.wrapper.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's example-weighted mean of the evaluation metrics (not private)."""
        replies = list(replies)
        for reply in replies:
            metrics = reply.content.metric_records["metrics"]
            metrics[DP_WEIGHT] = metrics[NUM_EXAMPLES]
        aggregated = self.wrapper.aggregate_evaluate(server_round, replies)
        if aggregated is None:
            return None
        merged = dict(aggregated)
        merged[NUM_EXAMPLES] = merged.pop(DP_WEIGHT)
        return MetricRecord(merged)

    def state_dict(self) -> dict[str, Any]:
        """The releases composed so far and the current clipping norm (it adapts)."""
        return {
            "accountant": self.accountant.state_dict(),
            "clipping-norm": float(self.wrapper.clipping_norm),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            self.accountant.load_state_dict(state["accountant"])
            self.wrapper.clipping_norm = float(state["clipping-norm"])
