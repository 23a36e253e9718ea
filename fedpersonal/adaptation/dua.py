"""DUA's run-config section and the experts of a run (shared by DUA's server and client halves).

Section ``dua`` (``[tool.flwr.app.config.dua]``): the client reads ``importance``,
``omega-batch-size`` and ``omega-adabn`` (how it computes Omega on its unlabelled data); the server reads
``omega-norm`` and the expert settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO
from typing import ClassVar, cast

from flwr.common import log

from fedpersonal.adaptation.adabn import batchnorm_layers
from fedpersonal.adaptation.experts import ExpertSet, ServerDomains, load_experts, train_experts
from fedpersonal.adaptation.imm import OMEGA_NORMS
from fedpersonal.adaptation.importance import IMPORTANCE
from fedpersonal.config import ConfigError, RunConfig, setting
from fedpersonal.tasks import get_task


@dataclass(frozen=True)
class DUASettings:
    """Run-config section ``dua``: the user prior (Omega), the IMM merge, the server's experts."""

    SECTION: ClassVar[str] = "dua"

    importance: str = setting("mas", f"one of {list(IMPORTANCE)}", lambda v: v in IMPORTANCE)
    omega_norm: str = setting(
        "none",
        f"one of {list(OMEGA_NORMS)} ('max': each expert's Omega divided by its largest entry)",
        lambda v: v in OMEGA_NORMS,
    )
    omega_batch_size: int = setting(32, "an integer >= 1 (batch of the client's Omega computation)", lambda v: v >= 1)
    omega_adabn: bool = setting(
        False, "true (AdaBN of each expert on the client's data before its Omega; needs BatchNorm) or false"
    )
    experts_path: str = setting("", "'' (train the experts on the server) or a file of experts.save_experts")
    server_samples: int = setting(1500, "an integer >= 10 (labelled server samples per domain)", lambda v: v >= 10)
    generic_epochs: int = setting(12, "an integer >= 1 (epochs of the generic model)", lambda v: v >= 1)
    expert_epochs: int = setting(4, "an integer >= 1 (fine-tuning epochs of each expert)", lambda v: v >= 1)


def experts_for(cfg: RunConfig) -> ExpertSet:
    """The run's experts: loaded from ``dua.experts-path``, or trained on the task's labelled server data."""
    settings = cfg.section(DUASettings)
    task = get_task(cfg.task, cfg)
    if settings.importance == "fisher" and not task.predicts_classes:
        raise ConfigError(
            f"run config key 'dua.importance' = 'fisher' needs class probabilities; task '{cfg.task}' is a "
            "regression, expected 'mas'"
        )
    if settings.omega_adabn and not batchnorm_layers(task.build_model()):
        raise ConfigError(
            f"run config key 'dua.omega-adabn' = true re-estimates BatchNorm statistics, but the model of task "
            f"'{cfg.task}' has no BatchNorm layer; expected false"
        )
    if settings.experts_path:
        try:
            return load_experts(settings.experts_path, task.build_model())
        except (OSError, ValueError) as error:
            raise ConfigError(f"run config key 'dua.experts-path' = {settings.experts_path!r}: {error}") from error
    if not hasattr(task, "server_data"):
        raise ConfigError(
            f"strategy 'dua' trains its experts on labelled server data, which task '{cfg.task}' does not provide; "
            "expected task 'classify' or a file in 'dua.experts-path'"
        )
    start = time.monotonic()
    # A task with server data (ClassifyTask) also has the expert domains: the ServerDomains protocol.
    experts = train_experts(
        cast(ServerDomains, task), cfg, settings.server_samples, settings.generic_epochs, settings.expert_epochs
    )
    log(
        INFO,
        "dua: trained a generic model and %d experts (%s) in %.1f s",
        len(experts.experts),
        ", ".join(experts.domains),
        time.monotonic() - start,
    )
    return experts
