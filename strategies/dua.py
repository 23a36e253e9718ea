"""DUA (De Lange et al., CVPR 2020): a user-specific model merged from experts by the user's prior.

Server half. The experts come from ``dua.experts-path`` or are trained when the strategy is built
(:func:`fedpersonal.adaptation.experts.train_experts`: a generic model on clean labelled server
data, one fine-tuned expert per domain of the task). Rounds:

* train (round 1; later rounds only for nodes that have no merged model yet): every sampled node
  receives all experts (one ArrayRecord, keys ``"<k>/<name>"``) and the importance method in its
  config, and replies with Omega_k of each expert on its unlabelled data (parameter-shaped arrays,
  same keys, no head) and ``num-examples``. :meth:`DUA.aggregate_train` merges one model per node
  by mode-IMM (:func:`fedpersonal.adaptation.imm.imm_merge`) and keeps it for that node alone; the
  run's "global" model is the generic model.
* evaluate: each node receives its own merged model (the generic model before it has one, e.g.
  in round 0); the client's ``adapt`` section (AdaBN, TENT, ...) adds the local adaptation step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpersonal.adaptation.experts import ExpertSet, load_experts, pack_states, train_experts, unpack_states
from fedpersonal.adaptation.imm import OMEGA_NORMS, imm_merge
from fedpersonal.adaptation.importance import IMPORTANCE
from fedpersonal.config import ConfigError, RunConfig, setting
from fedpersonal.tasks import get_task
from strategies.common import sampling_kwargs


@dataclass(frozen=True)
class DUASettings:
    """Run-config section ``dua`` (``[tool.flwr.app.config.dua]``)."""

    importance: str = setting("mas", f"one of {list(IMPORTANCE)}", lambda v: v in IMPORTANCE)
    omega_norm: str = setting(
        "none", f"one of {list(OMEGA_NORMS)} ('max': each expert's Omega divided by its largest entry)",
        lambda v: v in OMEGA_NORMS,
    )
    omega_batch_size: int = setting(32, "an integer >= 1 (batch of the client's Omega computation)", lambda v: v >= 1)
    experts_path: str = setting("", "'' (train the experts on the server) or a file of experts.save_experts")
    server_samples: int = setting(1500, "an integer >= 10 (labelled server samples per domain)", lambda v: v >= 10)
    generic_epochs: int = setting(12, "an integer >= 1 (epochs of the generic model)", lambda v: v >= 1)
    expert_epochs: int = setting(4, "an integer >= 1 (fine-tuning epochs of each expert)", lambda v: v >= 1)


class DUA(FedAvg):
    """Per-node messages: all experts out, Omega back, each node's merged model out to it alone."""

    def __init__(self, experts: ExpertSet, settings: DUASettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.experts, self.settings = experts, settings
        self.generic = ArrayRecord(experts.generic)
        self.packed_experts = pack_states(experts.experts)  # the same every round: packed once
        self.personal: dict[int, ArrayRecord] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Ask the sampled nodes without a merged model for Omega of every expert."""
        config["importance"] = self.settings.importance
        config["omega-batch-size"] = self.settings.omega_batch_size
        messages = super().configure_train(server_round, self.packed_experts, config, grid)
        return [msg for msg in messages if msg.metadata.dst_node_id not in self.personal]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Merge a model for every node that replied; the global arrays stay the generic model."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        normalize = OMEGA_NORMS[self.settings.omega_norm]
        for msg in valid:
            omegas = [normalize(omega) for omega in unpack_states(msg.content.array_records["arrays"])]
            merged = imm_merge(self.experts.experts, omegas)
            self.personal[msg.metadata.src_node_id] = ArrayRecord(merged)
        if not valid:
            return None, None
        return self.generic, self.train_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Send every sampled node its own merged model (the generic one until it has one)."""
        sampled = super().configure_evaluate(server_round, self.generic, config, grid)
        messages = []
        for msg in sampled:
            node = msg.metadata.dst_node_id
            content = RecordDict({"arrays": self.personal.get(node, self.generic), "config": msg.content.config_records["config"]})
            messages.append(Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node))
        return messages


def experts_for(cfg: RunConfig, settings: DUASettings) -> ExpertSet:
    """The experts: loaded from ``dua.experts-path``, or trained on the task's labelled server data."""
    task = get_task(cfg.task, cfg)
    if settings.importance == "fisher" and not task.predicts_classes:
        raise ConfigError(f"run config key 'dua.importance' = 'fisher' needs class probabilities; task '{cfg.task}' is a regression, expected 'mas'")
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
    experts = train_experts(task, cfg, settings.server_samples, settings.generic_epochs, settings.expert_epochs)
    log(INFO, "dua: trained a generic model and %d experts (%s) in %.1f s", len(experts.experts), ", ".join(experts.domains), time.monotonic() - start)
    return experts


def build(cfg: RunConfig) -> DUA:
    """DUA with the run's sampling settings and section ``dua``."""
    settings: DUASettings = cfg.section("dua")
    return DUA(experts_for(cfg, settings), settings, **sampling_kwargs(cfg))
