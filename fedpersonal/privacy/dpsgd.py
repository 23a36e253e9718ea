"""Run-config section ``dpsgd``: sample-level DP-SGD on the clients with Opacus (an optional extra).

Client-level DP (section ``dp``) bounds what a *client's whole data* changes in the released mean;
DP-SGD (Abadi et al., CCS 2016) bounds what *one training example* changes in everything a client
releases: every local step clips each example's gradient to ``max-grad-norm``, sums the clipped
gradients of a Poisson-sampled batch and adds Gaussian noise of std ``noise-multiplier * max-grad-norm``.
The per-sample gradients, the clipping, the noise and the accountant are Opacus's
(:mod:`fedpersonal.privacy.opacus_sgd`); this module holds the settings, their checks against the rest
of the run config (before anything trains), and the accountant's history as it is kept in a client's
personal state (``context.state``), so each client's epsilon accumulates over every round it trained.

Opacus is an optional dependency (``pip install "fedpersonal[opacus]"``); this module imports it only
when a run enables the section.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fedpersonal.config import ConfigError, RunConfig, setting

ACCOUNTANTS = ("rdp", "prv")
STATE_RECORD = "dpsgd"  # the record of context.state holding a client's accountant history
EPSILON = "dpsgd-epsilon"  # the train metric: this client's sample-level epsilon at dpsgd.delta so far
INSTALL = 'pip install "fedpersonal[opacus]"'


@dataclass(frozen=True)
class DPSGDSettings:
    """Run-config section ``dpsgd``.

    With ``enabled``, every local step of a client is a DP-SGD step: a Poisson sample of the client's
    training split (each example with probability ``batch-size / n``, ``n`` the client's examples;
    ``n / batch-size`` steps an epoch), per-example gradients clipped to L2 norm ``max-grad-norm``,
    Gaussian noise of std ``noise-multiplier * max-grad-norm`` on their sum, divided by the expected
    batch size. ``target-epsilon`` > 0 instead has Opacus pick, for each client, the noise multiplier
    whose epsilon at ``delta`` after the client's planned steps (``num-rounds`` rounds of
    ``local-epochs`` epochs) is at most the target. ``accountant``: Opacus's RDP or PRV accountant.
    """

    SECTION: ClassVar[str] = "dpsgd"

    enabled: bool = setting(False, "true or false (sample-level DP-SGD in every client's local training)")
    noise_multiplier: float = setting(
        1.0, "a number > 0 (noise std / max-grad-norm of every step)", lambda v: 0 < v <= 1e4
    )
    max_grad_norm: float = setting(1.0, "a number > 0 (L2 bound of each example's gradient)", lambda v: v > 0)
    target_epsilon: float = setting(
        0.0,
        "a number >= 0 (0: use noise-multiplier; else the noise multiplier that meets it after the planned steps)",
        lambda v: v >= 0,
    )
    delta: float = setting(1e-5, "a number in (0, 1) (below 1 / examples of a client)", lambda v: 0 < v < 1)
    accountant: str = setting("rdp", f"one of {list(ACCOUNTANTS)} (Opacus's accountant)", lambda v: v in ACCOUNTANTS)


def require_opacus() -> None:
    """Raise :class:`ConfigError` naming ``dpsgd.enabled`` when Opacus is not installed."""
    try:
        import opacus  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"run config key 'dpsgd.enabled' = True needs Opacus, which is not installed ({error}); "
            f"install the optional extra: {INSTALL}"
        ) from error


def running_statistics(model: nn.Module) -> list[str]:
    """Modules of ``model`` that mix examples of a batch (BatchNorm and other layers with running
    statistics in their buffers): one example's gradient then depends on the others'."""
    return [
        f"{name or 'model'} ({type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
    ]


def check_dpsgd(cfg: RunConfig, plain_sgd: bool, supported: Iterable[str], model: nn.Module | None) -> None:
    """Raise :class:`ConfigError` naming the key when section ``dpsgd`` cannot apply to the run:
    Opacus missing, an algorithm whose local training is not the plain SGD loop (``plain_sgd``;
    ``supported`` names those that are), or a model with BatchNorm or a layer Opacus rejects."""
    s = cfg.section(DPSGDSettings)
    if not s.enabled:
        return
    require_opacus()
    if not plain_sgd:
        raise ConfigError(
            f"run config key 'dpsgd.enabled' = True is invalid with strategy {cfg.strategy!r}, whose local training "
            f"is not the plain SGD loop on the task's loss; DP-SGD applies to {sorted(supported)}"
        )
    if model is None:
        return
    mixing = running_statistics(model)
    if mixing:
        hint = " (set gaze.batchnorm = false)" if cfg.task == "gaze" else ""
        raise ConfigError(
            f"run config key 'dpsgd.enabled' = True is invalid with task {cfg.task!r}: its model normalises over "
            f"the batch ({', '.join(mixing)}), so no example has a gradient of its own{hint}"
        )
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

    problems = [str(error) for error in ModuleValidator.validate(model.train(), strict=False)]
    problems += [str(error) for error in GradSampleModule.validate(model, strict=False)]
    if problems:
        raise ConfigError(
            f"run config key 'dpsgd.enabled' = True is invalid with task {cfg.task!r}: Opacus rejects its "
            f"model: {'; '.join(problems)}"
        )


def sample_rate(examples: int, batch_size: int) -> float:
    """Poisson sampling rate of a client with ``examples`` training examples: ``batch-size / examples``
    (at most 1)."""
    return min(1.0, batch_size / max(examples, 1))


def steps_per_epoch(rate: float) -> int:
    """Steps of one epoch at sampling rate ``rate``: ``int(1 / rate)``, as Opacus's Poisson sampler."""
    return max(int(1 / rate), 1)


def planned_steps(cfg: RunConfig, examples: int) -> int:
    """The steps a client with ``examples`` examples takes if it trains in every round."""
    return cfg.num_rounds * cfg.local_epochs * steps_per_epoch(sample_rate(examples, cfg.batch_size))


@dataclass(frozen=True)
class AccountantHistory:
    """Opacus's accountant history: (noise multiplier, sample rate, steps) per run of equal steps, and
    the mechanism it was accounted with."""

    mechanism: str
    entries: tuple[tuple[float, float, int], ...] = ()

    @property
    def steps(self) -> int:
        """Steps accounted so far."""
        return sum(entry[2] for entry in self.entries)

    def to_record(self, epsilon: float, delta: float) -> ConfigRecord:
        """The history as a ConfigRecord for ``context.state`` (with the epsilon it amounts to)."""
        values: dict[str, Any] = {"mechanism": self.mechanism, "epsilon": epsilon, "delta": delta}
        if self.entries:
            values["noise"] = [float(e[0]) for e in self.entries]
            values["rate"] = [float(e[1]) for e in self.entries]
            values["steps"] = [int(e[2]) for e in self.entries]
        return ConfigRecord(values)

    @classmethod
    def from_state(cls, state: RecordDict, mechanism: str) -> AccountantHistory:
        """The history kept in ``state`` (empty before the client's first DP-SGD round); a ConfigError
        when it was accounted with another mechanism (``dpsgd.accountant`` changed on resume)."""
        record = state.config_records.get(STATE_RECORD)
        if record is None:
            return cls(mechanism)
        saved = str(record["mechanism"])
        if saved != mechanism:
            raise ConfigError(
                f"run config key 'dpsgd.accountant' = {mechanism!r}, but this client's privacy so far was accounted "
                f"with {saved!r}; expected the accountant the run started with"
            )
        columns = [record.get(key, []) for key in ("noise", "rate", "steps")]
        entries = tuple((float(z), float(q), int(k)) for z, q, k in zip(*columns))
        return cls(mechanism, entries)


def state_metrics(state: RecordDict) -> dict[str, float]:
    """The train metrics of a client's DP-SGD state: ``dpsgd-epsilon`` (at ``dpsgd.delta``, over every
    round it trained), ``dpsgd-steps`` and the noise multiplier of its latest step (``{}`` without DP-SGD)."""
    record = state.config_records.get(STATE_RECORD)
    if record is None:
        return {}
    metrics = {
        EPSILON: float(record["epsilon"]),  # type: ignore[arg-type]
        "dpsgd-steps": float(sum(record.get("steps", []))),  # type: ignore[arg-type]
    }
    noise = record.get("noise", [])
    if noise:
        metrics["dpsgd-noise-multiplier"] = float(noise[-1])  # type: ignore[index]
    return metrics
