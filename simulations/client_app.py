"""The Flower ClientApp: dispatches each message to the client half of the run's algorithm.

The run config is parsed once per run and process (cached by its contents), the algorithm is
looked up in :mod:`simulations.registry`. Around every call the app restores the client's personal
state when a resumed run starts, applies the simulated device faults (section ``faults``) to
training, persists the personal state to the run directory after training, and tags the reply
with the Ray node that executed it (when running on Ray).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from clients.base import ClientAlgorithm
from fedpersonal.checkpoint import load_client_state, save_client_state
from fedpersonal.config import RunConfig
from fedpersonal.faults import FaultSettings, apply_faults
from simulations.loop import STATE_ROUND
from simulations.registry import build_client, parse_run_config

app = ClientApp()


@lru_cache(maxsize=8)
def _parsed(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return parse_run_config(dict(items))


def run_config_of(context: Context) -> RunConfig:
    """The validated run config of ``context``'s run (parsed once per distinct run config)."""
    return _parsed(tuple(sorted(context.run_config.items())))


def client_for(context: Context) -> ClientAlgorithm:
    """The client half of the algorithm named by run-config key ``strategy``."""
    return build_client(run_config_of(context), context)


def ray_node_id() -> str:
    """The Ray node executing this call ('' outside Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def _restore_state(context: Context, config: ConfigRecord, partition_id: int) -> None:
    resume_round = int(config.get("resume-round", 0))  # type: ignore[arg-type]
    if resume_round > 0 and not context.state and config.get("run-dir"):
        saved = load_client_state(Path(str(config["run-dir"])), partition_id, resume_round)
        if saved is not None:
            for key, record in saved.items():
                context.state[key] = record


def _handle(kind: str, msg: Message, context: Context) -> Message:
    client = client_for(context)
    config = msg.content.config_records.get("config", ConfigRecord())
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]
    _restore_state(context, config, client.partition_id)
    if kind == "train":
        apply_faults(client.cfg.section(FaultSettings), client.cfg.seed, client.partition_id, server_round)
    reply = client.train(msg) if kind == "train" else client.evaluate(msg)
    # Algorithms change their personal state only while training; evaluation would rewrite it unchanged.
    if kind == "train" and context.state and config.get("run-dir") and not reply.has_error():
        save_client_state(Path(str(config["run-dir"])), client.partition_id, server_round, context.state)
        reply.content.metric_records["metrics"][STATE_ROUND] = server_round  # the server checks it on resume
    node = ray_node_id()
    if node and not reply.has_error():
        reply.content["info"] = ConfigRecord({"ray-node-id": node})
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training."""
    return _handle("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation of the received model."""
    return _handle("evaluate", msg, context)
