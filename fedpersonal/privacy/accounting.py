"""Privacy accounting of client-level DP: epsilon after R rounds, and the noise for a target epsilon.

Every aggregation of a DP run is one sampled Gaussian release: ``m`` of the ``N`` clients are sampled
and the mean of their clipped updates gets Gaussian noise of ``z * C / m``. The accountant is
Flower's :class:`flwr.serverapp.RdpAccountant`, which wraps Google's ``dp-accounting`` (Renyi DP,
Mironov 2017, with the RDP-to-(epsilon, delta) conversion of Balle et al. 2020). The neighbouring
relation follows how clients are sampled:

* ``m < N`` with ``dp.sampling = 'auto'``: ``m`` clients drawn uniformly without replacement, which
  is how Flower samples, amplifies privacy (*replace-one* neighbours: one client's data changed);
* ``m == N`` or ``dp.sampling = 'no-amplification'``: no amplification (*add-or-remove-one*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.privacy.settings import DPSettings

_NOISE_RANGE = (1e-3, 1e4)  # the noise multipliers a target epsilon is searched in


def sampled_clients(cfg: RunConfig) -> int:
    """How many clients a round samples (Flower's FedAvg: ``int(N * fraction-train)``, at least 1)."""
    return max(int(cfg.num_clients * cfg.fraction_train), 1)


@dataclass(frozen=True)
class ReleasePlan:
    """How each round's private release is sampled, and at which delta epsilon is reported."""

    population: int  # N: every client of the run
    sample_size: int  # m: clients sampled per round
    delta: float
    amplify: bool  # whether sampling m < N without replacement amplifies privacy

    def config(self) -> PrivacyConfig:
        """Flower's accounting model of this plan."""
        if self.amplify and self.sample_size < self.population:
            method, relation = SamplingMethod.WITHOUT_REPLACEMENT, NeighboringRelation.REPLACE_ONE
        else:
            method, relation = SamplingMethod.NO_AMPLIFICATION, NeighboringRelation.ADD_OR_REMOVE_ONE
        return PrivacyConfig(
            target_delta=self.delta,
            population_size=self.population,
            neighboring_relation=relation,
            sampling_method=method,
        )

    def accountant(self) -> RdpAccountant:
        """A fresh accountant (nothing released yet)."""
        return RdpAccountant(self.config())

    def event(self, noise_multiplier: float) -> GaussianPrivacyEvent:
        """One round's release with noise multiplier ``noise_multiplier``."""
        return GaussianPrivacyEvent(noise_multiplier, self.sample_size, self.population)

    def epsilon(self, noise_multiplier: float, rounds: int) -> float:
        """Epsilon at :attr:`delta` after ``rounds`` releases with ``noise_multiplier``."""
        accountant = self.accountant()
        accountant.compose(self.event(noise_multiplier), count=rounds)
        return float(accountant.get_epsilon(self.delta))

    def noise_multiplier_for(self, target_epsilon: float, rounds: int) -> float:
        """The smallest noise multiplier (to 0.1 %) whose epsilon after ``rounds`` is <= the target."""
        low, high = _NOISE_RANGE
        if self.epsilon(high, rounds) > target_epsilon:
            raise ValueError(
                f"epsilon {target_epsilon:g} at delta {self.delta:g} after {rounds} rounds needs a noise multiplier "
                f"above {high:g}"
            )
        if self.epsilon(low, rounds) <= target_epsilon:
            return low
        while high / low > 1.001:  # epsilon falls as the noise grows: bisect in log space
            middle = math.sqrt(low * high)
            low, high = (low, middle) if self.epsilon(middle, rounds) <= target_epsilon else (middle, high)
        return high


def release_plan(cfg: RunConfig) -> ReleasePlan:
    """The release plan of a DP run."""
    dp = cfg.section(DPSettings)
    return ReleasePlan(cfg.num_clients, sampled_clients(cfg), dp.delta, dp.sampling == "auto")


def noise_multiplier(cfg: RunConfig) -> float:
    """The run's noise multiplier: ``dp.noise-multiplier``, or the one that meets ``dp.target-epsilon``
    after ``num-rounds`` rounds."""
    dp = cfg.section(DPSettings)
    if dp.target_epsilon <= 0:
        return dp.noise_multiplier
    try:
        return release_plan(cfg).noise_multiplier_for(dp.target_epsilon, cfg.num_rounds)
    except ValueError as error:
        raise ConfigError(
            f"run config key 'dp.target-epsilon' = {dp.target_epsilon!r} cannot be met: {error}; "
            "expected a larger epsilon, delta, or fewer rounds"
        ) from error
