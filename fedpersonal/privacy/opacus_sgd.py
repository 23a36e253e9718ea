"""DP-SGD local training with Opacus (section ``dpsgd``; needs the optional extra ``opacus``).

A client's local epochs become DP-SGD epochs (Abadi et al., CCS 2016):

* **sampling**: each step draws a Poisson sample of the training split (every example independently
  with probability ``q = batch-size / n``; Opacus's ``UniformWithReplacementSampler``, seeded by the
  round's generator), ``int(1 / q)`` steps an epoch; an empty sample is still a (noise-only) step;
* **per-example gradients**: Opacus's :class:`~opacus.grad_sample.GradSampleModule` (hooks) around the
  client's model, for the task's own loss (a mean over the batch);
* **clipping and noise**: Opacus's :class:`~opacus.optimizers.DPOptimizer` around the client's SGD: each
  example's gradient clipped to L2 norm ``max-grad-norm`` (``C``), Gaussian noise of std ``z C`` added to
  their sum, divided by the expected batch size ``q n``; the SGD step (momentum, weight decay) is
  post-processing. The run's ``grad-clip`` does not apply (``C`` bounds every example instead);
* **accounting**: Opacus's accountant (``dpsgd.accountant``: RDP or PRV) composes one sampled Gaussian
  step per optimizer step through the optimizer's step hook; its history is kept in the client's
  personal state (:class:`fedpersonal.privacy.dpsgd.AccountantHistory`) and loaded back the next round,
  so the epsilon a client reports covers every step it ever took.

The model object is the client's own (a per-process pooled model): the hooks and every attribute
Opacus adds to its parameters are removed when training ends, even on an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
from flwr.app import RecordDict
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.privacy.dpsgd import (
    STATE_RECORD,
    AccountantHistory,
    DPSGDSettings,
    planned_steps,
    sample_rate,
    steps_per_epoch,
)

Tensors = tuple[torch.Tensor, ...]
_SEED_BOUND = 2**62


@contextmanager
def private_sgd(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    noise_generator: torch.Generator | None = None,
) -> Iterator[tuple[GradSampleModule, DPOptimizer]]:
    """``model`` with per-example gradients and ``optimizer`` as a DP optimizer, for the ``with`` block;
    afterwards ``model`` is as before (no hooks, no per-example gradients on its parameters)."""
    wrapped = GradSampleModule(model, loss_reduction="mean", strict=True)
    try:
        private = DPOptimizer(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
            generator=noise_generator,
        )
        yield wrapped, private
    finally:
        wrapped.cleanup()
        for parameter in model.parameters():
            if hasattr(parameter, "summed_grad"):
                delattr(parameter, "summed_grad")


@lru_cache(maxsize=64)
def noise_for_target(target_epsilon: float, delta: float, rate: float, steps: int, accountant: str) -> float:
    """Opacus's noise multiplier whose epsilon at ``delta`` after ``steps`` steps at sampling rate
    ``rate`` is at most ``target_epsilon`` (to Opacus's tolerance of 0.01)."""
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon, target_delta=delta, sample_rate=rate, steps=steps, accountant=accountant
            )
        )
    except ValueError as error:
        raise ConfigError(
            f"run config key 'dpsgd.target-epsilon' = {target_epsilon!r} cannot be met at delta {delta:g} after "
            f"{steps} steps at sampling rate {rate:.4g}: {error}; expected a larger epsilon or delta, or fewer steps"
        ) from error


def client_noise_multiplier(cfg: RunConfig, examples: int) -> float:
    """The noise multiplier of a client with ``examples`` training examples: ``dpsgd.noise-multiplier``,
    or the one meeting ``dpsgd.target-epsilon`` after its planned steps (every round trained)."""
    s = cfg.section(DPSGDSettings)
    if s.target_epsilon <= 0:
        return s.noise_multiplier
    rate = sample_rate(examples, cfg.batch_size)
    return noise_for_target(s.target_epsilon, s.delta, rate, planned_steps(cfg, examples), s.accountant)


def epsilon_of(history: AccountantHistory, delta: float) -> float:
    """Epsilon at ``delta`` of ``history`` by Opacus's accountant of its mechanism."""
    accountant = create_accountant(mechanism=history.mechanism)
    accountant.history = list(history.entries)
    return float(accountant.get_epsilon(delta)) if history.entries else 0.0


def train_private(
    model: nn.Module,
    tensors: Tensors,
    loss_fn: Callable[[nn.Module, Tensors], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    generator: torch.Generator,
    cfg: RunConfig,
    state: RecordDict,
) -> float:
    """``epochs`` DP-SGD epochs of ``model`` on ``tensors`` (the module docstring); returns the
    sample-weighted mean training loss. The client's accountant history is read from ``state`` and
    written back with the epsilon it amounts to (:func:`fedpersonal.privacy.dpsgd.state_metrics`)."""
    s = cfg.section(DPSGDSettings)
    examples = len(tensors[0])
    rate = sample_rate(examples, cfg.batch_size)
    z = client_noise_multiplier(cfg, examples)
    history = AccountantHistory.from_state(state, s.accountant)
    accountant = create_accountant(mechanism=s.accountant)
    accountant.history = list(history.entries)
    device = tensors[0].device
    seed = int(torch.randint(_SEED_BOUND, (1,), generator=generator))
    noise_generator = torch.Generator(device=device).manual_seed(seed)
    sampler = UniformWithReplacementSampler(
        num_samples=examples, sample_rate=rate, generator=generator, steps=steps_per_epoch(rate)
    )
    model.train()
    total, seen = 0.0, 0
    with private_sgd(model, optimizer, z, s.max_grad_norm, max(round(rate * examples), 1), noise_generator) as (
        private_model,
        private_optimizer,
    ):
        private_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=rate))
        for _ in range(epochs):
            for indices in sampler:
                index = torch.tensor(indices, dtype=torch.long, device=device)
                batch = tuple(t[index] for t in tensors)
                private_optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(private_model, batch)
                loss.backward()
                private_optimizer.step()
                if indices:  # an empty sample's mean loss is nan: it only adds noise
                    total += float(loss.detach()) * len(indices)
                    seen += len(indices)
    spent = AccountantHistory(s.accountant, tuple((float(z_), float(q), int(k)) for z_, q, k in accountant.history))
    state[STATE_RECORD] = spent.to_record(epsilon_of(spent, s.delta), s.delta)
    return total / max(seen, 1)
