"""Unseen clients (section ``evaluate``): clients held out of training, evaluated after the last round.

Each is the run's client half on partition ``num-clients + i`` (a fresh Flower ``Context``, no
personal state), fine-tuning the final model's personal part as
:meth:`clients.base.ClientAlgorithm.unseen_evaluation` says. This runs where the ServerApp runs,
as part of the simulation's evaluation protocol: the server's process reads the held-out clients'
data, which no training client ever sees.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, Context, RecordDict

from fedpersonal.config import RunConfig
from fedpersonal.evaluation import EvaluationSettings
from simulations.registry import build_client

UNSEEN_PHASE = "unseen"  # clients.jsonl phase of an unseen client's row


def evaluate_unseen(cfg: RunConfig, arrays: ArrayRecord, server_round: int) -> list[dict[str, Any]]:
    """One ``clients.jsonl`` row per unseen client: its ``unseen-<metric>`` values after ``server_round``."""
    settings = cfg.section(EvaluationSettings)
    rows = []
    for index in range(settings.unseen_clients):
        partition = cfg.num_clients + index
        context = Context(
            run_id=0,
            node_id=0,
            node_config={"partition-id": partition, "num-partitions": cfg.num_clients},
            state=RecordDict(),
            run_config={},
        )
        client = build_client(cfg, context)
        metrics = client.unseen_evaluation(arrays, settings.unseen_steps)
        rows.append({"round": server_round, "phase": UNSEEN_PHASE, "partition-id": partition, **metrics})
    return rows
