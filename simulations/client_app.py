"""The Flower ClientApp: dispatches each message to the client half of the run's algorithm.

The run config is parsed once per run and process (cached by its contents), the algorithm is
looked up in :mod:`simulations.registry`. Around every call the app brings back the client's
personal state (after a resume, or from disk: :mod:`simulations.client_state`), applies the
simulated device faults (section ``faults``), client-side clipping of differential privacy (section
``dp``) and attacks (section ``poison``) to training, saves the personal state to the run directory
after training, and tags the reply with the Ray node that executed it (when running on Ray).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Context, Message
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT

from clients.base import ClientAlgorithm, round_generator
from fedpersonal.checkpoint import save_client_state
from fedpersonal.config import RunConfig
from fedpersonal.faults import FaultSettings, apply_faults
from fedpersonal.poisoning import PoisonSettings, attackers, poisoned_update
from fedpersonal.privacy.clipping import clip_update, unclipped_bit
from fedpersonal.privacy.settings import DPSettings
from fedpersonal.tasks import ClientData
from simulations.client_state import on_disk, park, restore
from simulations.loop import RUN_NAME, STATE_LOCATION, STATE_ROUND
from simulations.registry import build_client, parse_run_config
from simulations.secagg import secure_aggregation_mod

app = ClientApp(mods=[secure_aggregation_mod])  # SecAgg+ train stages (section secagg); else a no-op
STATE_DIR_KEY = "state-dir"  # node config: where this client keeps personal state
STATE_DIR_ENV = "FEDPERSONAL_STATE_DIR"  # the same, from the client's environment
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def state_base(context: Context, cfg: RunConfig, config: ConfigRecord) -> tuple[Path | None, str]:
    """Where this client keeps its personal state for the run the message names, and how that place
    was chosen: ``<root>/<run-name>/client-state/``, root = node config ``state-dir``, else the
    environment's ``FEDPERSONAL_STATE_DIR`` (``custom``), else the run config's ``results-dir`` (``run-dir``:
    inside the run directory, on one machine). The message only names the run, as one plain path
    component; no path is ever taken from it. (None, '') when the message names no run."""
    name = str(config.get(RUN_NAME, ""))
    if not name:
        return None, ""
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"message config '{RUN_NAME}' = {name!r}; expected a plain directory name")
    custom = str(context.node_config.get(STATE_DIR_KEY, "") or os.environ.get(STATE_DIR_ENV, ""))
    root = Path(custom or cfg.results_dir).expanduser().resolve()
    return root / name, ("custom" if custom else "run-dir")


@dataclass(frozen=True)
class ClientCall:
    """One ClientApp call between its preparation (:func:`begin_call`) and its reply
    (:func:`end_call`): the client, the message's config and round, where the client's personal
    state lives, the round of the state it brought back, whether it attacks."""

    client: ClientAlgorithm
    config: ConfigRecord
    server_round: int
    base: Path | None
    location: str
    parked: int | None
    attacker: bool


def begin_call(kind: str, msg: Message, context: Context) -> ClientCall:
    """Everything before the client handles ``msg`` (``kind``: "train" or "evaluate"): build the
    client, bring back its personal state and, for training, apply faults and label flips."""
    client = client_for(context)
    config = msg.content.config_records.get("config", ConfigRecord())
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]
    base, location = state_base(context, client.cfg, config)
    parked = restore(context, config, base, client.partition_id)
    poison = client.cfg.section(PoisonSettings)
    attacker = client.partition_id in attackers(poison, client.cfg.seed, client.cfg.num_clients)
    if kind == "train":
        apply_faults(client.cfg.section(FaultSettings), client.cfg.seed, client.partition_id, server_round)
        if attacker and poison.attack == "label-flip":
            train = client.data.train
            client.data = ClientData((*train[:-1], client.task.flip_labels(train[-1])), client.data.test)
    return ClientCall(client, config, server_round, base, location, parked, attacker)


def end_call(kind: str, call: ClientCall, msg: Message, context: Context, reply: Message) -> Message:
    """Everything after the client replied to ``msg``: client-side DP clipping and attacks on a
    train reply, saving and parking the personal state, the reply's info record."""
    client, config, server_round, parked = call.client, call.config, call.server_round, call.parked
    if reply.has_error():
        return reply
    poison = client.cfg.section(PoisonSettings)
    clips = client.cfg.section(DPSettings).client_side and KEY_CLIPPING_NORM in config
    if kind == "train" and clips and "arrays" in reply.content.array_records:
        _clip(client, msg, reply, float(config[KEY_CLIPPING_NORM]))  # type: ignore[arg-type]
    if kind == "train" and call.attacker and "arrays" in reply.content.array_records:
        rng = round_generator(client.cfg, client.partition_id, server_round)
        received = client.received_arrays(msg).to_torch_state_dict()
        honest = reply.content.array_records["arrays"].to_torch_state_dict()
        reply.content["arrays"] = ArrayRecord(poisoned_update(received, honest, poison, rng))
    info: dict[str, ConfigRecordValues] = {}
    # Algorithms change their personal state only while training; evaluation would rewrite it unchanged.
    if kind == "train" and context.state and call.base is not None:
        save_client_state(call.base, client.partition_id, server_round, context.state)
        info.update({STATE_ROUND: server_round, STATE_LOCATION: call.location})  # the server checks it on resume
        parked = server_round
    if parked is not None and on_disk(client.cfg):
        park(context, parked)
    node = ray_node_id()
    if node:
        info["ray-node-id"] = node
    if info:
        reply.content["info"] = ConfigRecord(info)
    return reply


def _handle(kind: str, msg: Message, context: Context) -> Message:
    call = begin_call(kind, msg, context)
    reply = call.client.train(msg) if kind == "train" else call.client.evaluate(msg)
    return end_call(kind, call, msg, context, reply)


def _clip(client: ClientAlgorithm, msg: Message, reply: Message, clipping_norm: float) -> None:
    """Client-side clipping of differential privacy (section ``dp``): the update leaves the device
    with an L2 norm of at most the norm the server sent; adaptive clipping reports whether it clipped."""
    arrays, clipped = clip_update(client.received_arrays(msg), reply.content.array_records["arrays"], clipping_norm)
    reply.content["arrays"] = arrays
    if client.cfg.section(DPSettings).adaptive:
        reply.content.metric_records["metrics"][KEY_NORM_BIT] = unclipped_bit(clipped)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training."""
    return _handle("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation of the received model."""
    return _handle("evaluate", msg, context)
