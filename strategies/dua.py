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

The merged models are kept by partition id (from the replies' ``partition-id``) and are part of
:meth:`DUA.state_dict`, so a checkpoint holds them; the node of each partition is learned from
every reply. Flower gives nodes new ids in a new run: after a resume under ``flwr run`` a node is
asked for Omega once more before it gets its merged model again (the in-process runner keeps ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpersonal.adaptation.experts import ExpertSet, pack_states, unpack_states
from fedpersonal.adaptation.imm import OMEGA_NORMS, imm_merge


class DUA(FedAvg):
    """Per-node messages: all experts out, Omega back, each node's merged model out to it alone.

    ``experts``: the generic model and the experts (:mod:`fedpersonal.adaptation.experts`);
    ``omega_norm``: a key of :data:`fedpersonal.adaptation.imm.OMEGA_NORMS`; ``device``: where the
    experts are kept and merged with each node's Omega; the other keyword arguments are FedAvg's.
    Clients compute Omega as their run config's section ``dua`` says.
    """

    def __init__(
        self, experts: ExpertSet, omega_norm: str = "none", device: torch.device | str = "cpu", **fedavg_kwargs: Any
    ) -> None:
        if omega_norm not in OMEGA_NORMS:
            raise ValueError(f"DUA: omega_norm {omega_norm!r} is unknown; choose one of {list(OMEGA_NORMS)}")
        super().__init__(**fedavg_kwargs)
        self.experts, self.omega_norm, self.device = experts, omega_norm, torch.device(device)
        self.expert_states = [self._on_device(state) for state in experts.experts]
        self.generic = ArrayRecord(experts.generic)
        self.packed_experts = pack_states(experts.experts)  # the same every round: packed once
        self.personal: dict[int, ArrayRecord] = {}  # partition id -> its merged model
        self.partition_of: dict[int, int] = {}  # node id -> partition id, learned from replies

    def check_reply(self, sent: Message, reply: Message) -> str | None:
        """DUA's contract beyond the common checks: a train reply says which partition it is."""
        if "partition-id" not in reply.content.metric_records.get("metrics", {}):
            return "no 'partition-id' metric: DUA keeps each merged model by partition"
        return None

    def _on_device(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: value.to(self.device) for name, value in state.items()}

    def _merged_for(self, node: int) -> ArrayRecord | None:
        partition = self.partition_of.get(node)
        return None if partition is None else self.personal.get(partition)

    def _learn_partitions(self, replies: Iterable[Message]) -> None:
        for msg in replies:
            if not msg.has_error() and "partition-id" in msg.content.metric_records.get("metrics", {}):
                partition = int(msg.content.metric_records["metrics"]["partition-id"])  # type: ignore[arg-type]
                self.partition_of[msg.metadata.src_node_id] = partition

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the sampled nodes without a merged model for Omega of every expert."""
        messages = super().configure_train(server_round, self.packed_experts, config, grid)
        return [msg for msg in messages if self._merged_for(msg.metadata.dst_node_id) is None]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Merge a model for every node that replied; the global arrays stay the generic model."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        self._learn_partitions(valid)
        normalize = OMEGA_NORMS[self.omega_norm]
        for msg in valid:
            partition = self.partition_of.get(msg.metadata.src_node_id)
            if partition is None:  # a client that does not say its partition (see check_reply)
                log(WARNING, "dua: node %d sent no 'partition-id'; no merged model kept", msg.metadata.src_node_id)
                continue
            omegas = [normalize(self._on_device(omega)) for omega in unpack_states(msg.content.array_records["arrays"])]
            merged = imm_merge(self.expert_states, omegas)
            self.personal[partition] = ArrayRecord({name: value.cpu() for name, value in merged.items()})
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
            arrays = self._merged_for(node) or self.generic
            content = RecordDict({"arrays": arrays, "config": msg.content.config_records["config"]})
            messages.append(Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """FedAvg's aggregate; every reply also tells which partition its node holds."""
        replies = list(replies)
        self._learn_partitions(replies)
        return super().aggregate_evaluate(server_round, replies)

    def state_dict(self) -> dict[str, Any]:
        """The merged models by partition and the node of each partition (for a checkpoint)."""
        return {
            "personal": {partition: record.to_torch_state_dict() for partition, record in self.personal.items()},
            "partition-of": dict(self.partition_of),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.personal = {int(partition): ArrayRecord(model) for partition, model in state.get("personal", {}).items()}
        self.partition_of = {int(node): int(partition) for node, partition in state.get("partition-of", {}).items()}
