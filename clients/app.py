"""The Flower ClientApp: dispatches each message to the client half of the run's algorithm.

Around every call it restores the client's personal state when a resumed run starts, applies the
simulated device faults (section ``faults``) to training, persists the personal state to the run
directory after training, and tags the reply with the Ray node that executed it (when running on Ray).
"""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from clients import CLIENT_ALGORITHMS, ClientAlgorithm
from clients.base import parse_client_config
from fedpersonal.checkpoint import load_client_state, save_client_state
from fedpersonal.config import require_choice
from fedpersonal.faults import apply_faults

app = ClientApp()


def client_for(context: Context) -> ClientAlgorithm:
    """The client half of the algorithm named by run-config key ``strategy``."""
    name = parse_client_config(context).strategy
    require_choice("strategy", name, CLIENT_ALGORITHMS)
    return CLIENT_ALGORITHMS[name](context)


def ray_node_id() -> str:
    """The Ray node executing this call ('' outside Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def _restore_state(context: Context, config: ConfigRecord, partition_id: int) -> None:
    resume_round = int(config.get("resume-round", 0))
    if resume_round > 0 and not context.state and config.get("run-dir"):
        saved = load_client_state(Path(str(config["run-dir"])), partition_id, resume_round)
        if saved is not None:
            for key, record in saved.items():
                context.state[key] = record


def _handle(kind: str, msg: Message, context: Context) -> Message:
    client = client_for(context)
    config = msg.content.config_records.get("config", ConfigRecord())
    server_round = int(config.get("server-round", 0))
    _restore_state(context, config, client.partition_id)
    if kind == "train":
        apply_faults(client.cfg.section("faults"), client.cfg.seed, client.partition_id, server_round)
    reply = client.train(msg) if kind == "train" else client.evaluate(msg)
    # Algorithms change their personal state only while training; evaluation would rewrite it unchanged.
    if kind == "train" and context.state and config.get("run-dir"):
        save_client_state(Path(str(config["run-dir"])), client.partition_id, server_round, context.state)
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
