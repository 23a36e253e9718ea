"""DUA (De Lange et al., CVPR 2020): a user-specific model merged from experts by the user's prior.

Server half. The experts come from ``dua.experts-path`` or are trained before the strategy is
built (:func:`fedpersonal.adaptation.dua.experts_for`: a generic model on clean labelled server
data, one fine-tuned expert per domain of the task). Rounds:

* train (round 1; later rounds only for nodes that have no merged model yet): every sampled node
  receives all experts (one ArrayRecord, keys ``"<k>/<name>"``) and replies with Omega_k of each
  expert on its unlabelled data (parameter-shaped arrays, same keys, no head) and ``num-examples``.
  :meth:`DUA.aggregate_train` merges one model per node by mode-IMM
  (:func:`fedpersonal.adaptation.imm.imm_merge`) and keeps it for that node alone; the run's
  "global" model is the generic model.
* evaluate: each node receives its own merged model (the generic model before it has one, e.g.
  in round 0); the client's ``adapt`` section (AdaBN, TENT, ...) adds the local adaptation step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpersonal.adaptation.experts import ExpertSet, pack_states, unpack_states
from fedpersonal.adaptation.imm import OMEGA_NORMS, imm_merge


class DUA(FedAvg):
    """Per-node messages: all experts out, Omega back, each node's merged model out to it alone.

    ``experts``: the generic model and the experts (:mod:`fedpersonal.adaptation.experts`);
    ``omega_norm``: a key of :data:`fedpersonal.adaptation.imm.OMEGA_NORMS`; the other keyword
    arguments are FedAvg's. Clients compute Omega as their run config's section ``dua`` says.
    """

    def __init__(self, experts: ExpertSet, omega_norm: str = "none", **fedavg_kwargs: Any) -> None:
        if omega_norm not in OMEGA_NORMS:
            raise ValueError(f"DUA: omega_norm {omega_norm!r} is unknown; choose one of {list(OMEGA_NORMS)}")
        super().__init__(**fedavg_kwargs)
        self.experts, self.omega_norm = experts, omega_norm
        self.generic = ArrayRecord(experts.generic)
        self.packed_experts = pack_states(experts.experts)  # the same every round: packed once
        self.personal: dict[int, ArrayRecord] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the sampled nodes without a merged model for Omega of every expert."""
        messages = super().configure_train(server_round, self.packed_experts, config, grid)
        return [msg for msg in messages if msg.metadata.dst_node_id not in self.personal]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Merge a model for every node that replied; the global arrays stay the generic model."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        normalize = OMEGA_NORMS[self.omega_norm]
        for msg in valid:
            omegas = [normalize(omega) for omega in unpack_states(msg.content.array_records["arrays"])]
            merged = imm_merge(self.experts.experts, omegas)
            self.personal[msg.metadata.src_node_id] = ArrayRecord(merged)
        if not valid:
            return None, None
        return self.generic, self.train_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every sampled node its own merged model (the generic one until it has one)."""
        sampled = super().configure_evaluate(server_round, self.generic, config, grid)
        messages = []
        for msg in sampled:
            node = msg.metadata.dst_node_id
            content = RecordDict(
                {"arrays": self.personal.get(node, self.generic), "config": msg.content.config_records["config"]}
            )
            messages.append(Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node))
        return messages
