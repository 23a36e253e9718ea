"""The Flower ServerApp: the composition root of a fedpersonal run.

Order of work: validate the whole run config, build the task and strategy, wait for the clients,
then create the run directory and run the rounds. A config error stops the run before any
training, with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import flwr
import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedpersonal.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    client_state_file,
    load_checkpoint,
    read_client_state,
    restore_rng_states,
)
from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.evaluation import VIEWS, view_metric
from fedpersonal.metrics.fairness import fairness_summary
from fedpersonal.model_pool import seeded_model
from fedpersonal.params import to_arrays
from fedpersonal.results import RunDirectory, RunFileError
from fedpersonal.storage import DirectoryLock, DirectoryLockedError
from fedpersonal.tasks import Task, get_task
from simulations.loop import LoopSettings, RoundLoop, RunFailedError
from simulations.registry import build_strategy, parse_run_config, unused_keys
from simulations.secagg import SecAggPlusGrid
from simulations.unseen import UNSEEN_PHASE, evaluate_unseen

app = ServerApp()

__all__ = ["app", "parse_run_config", "run"]


def wait_for_clients(grid: Grid, cfg: RunConfig) -> int:
    """Wait until ``num-clients`` nodes are connected; a ConfigError if the count differs."""
    deadline = time.monotonic() + cfg.node_wait_s
    while True:
        count = len(list(grid.get_node_ids()))
        if count > cfg.num_clients or (count < cfg.num_clients and time.monotonic() > deadline):
            raise ConfigError(
                f"run config key 'num-clients' = {cfg.num_clients} but {count} supernodes are "
                f"connected; expected them equal (run with --federation-config "
                f'"num-supernodes={cfg.num_clients}" or set --run-config "num-clients={count}")'
            )
        if count == cfg.num_clients:
            return count
        time.sleep(0.2)


def run_facts(cfg: RunConfig, task: Task) -> dict[str, Any]:
    """The resolved config plus the facts needed to reproduce and compare a run."""
    return {
        "config": cfg.to_dict(),
        "unused-keys": unused_keys(cfg),
        "metric": task.metric,
        "better": task.better,
        "versions": {"flwr": flwr.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def final_summary(run_dir: RunDirectory, task: Task) -> dict[str, Any]:
    """The first and last round rows and, per view of :mod:`fedpersonal.evaluation` that the run
    measured, the fairness summary of the last round's per-client values of the primary metric."""
    rounds = run_dir.read_rows("rounds.jsonl")
    last = rounds[-1]
    clients = [row for row in run_dir.read_rows("clients.jsonl") if row["round"] == last["round"]]
    views = {}
    for view in VIEWS:
        key = view_metric(view, task.metric)
        phase = UNSEEN_PHASE if view == "unseen" else "evaluate"
        values = {int(row["partition-id"]): row[key] for row in clients if row["phase"] == phase and key in row}
        if values:
            per_client = {str(partition): values[partition] for partition in sorted(values)}
            views[view] = {**fairness_summary(list(values.values()), task.better), "per-client": per_client}
    summary = {"rounds": last["round"], "final": last, "initial": rounds[0], "metric": task.metric, "views": views}
    released = [row for row in rounds if "dp-epsilon" in row]
    if released:  # differential privacy: what the last release spent in all
        summary["privacy"] = {key: value for key, value in released[-1].items() if key.startswith("dp-")}
    sample_level = [row["dpsgd-epsilon-max"] for row in rounds if "dpsgd-epsilon-max" in row]
    if sample_level:  # DP-SGD: the largest sample-level epsilon any client reported (each only grows)
        summary["sample-privacy"] = {"dpsgd-epsilon-max": max(sample_level)}
    return summary


# Keys that may change when a run is resumed; any other difference is an error (a checkpoint holds
# host tensors only: a run started on a GPU may go on on a CPU, and back). ``results-dir`` may change
# only to the folder that now holds the run (a run directory moved or copied elsewhere).
RESUMABLE_CHANGES = {
    "resume",
    "results-dir",
    "num-rounds",
    "node-wait-s",
    "round-timeout-s",
    "min-train-replies",
    "client-state",
    "device",
}


def run_directory(cfg: RunConfig) -> RunDirectory:
    """The run directory named by ``resume``, or a new one under ``results-dir``."""
    if not cfg.resume:
        try:
            return RunDirectory.create(cfg.results_dir, f"{cfg.task}-{cfg.strategy}-seed{cfg.seed}")
        except OSError as error:
            raise ConfigError(
                f"run config key 'results-dir' = {cfg.results_dir!r} is not a writable directory "
                f"({type(error).__name__}: {error}); expected a directory this process can create and write"
            ) from error
    run_dir = RunDirectory(Path(cfg.resume).expanduser())
    if not (run_dir.path / "config.json").is_file():
        raise ConfigError(f"run config key 'resume' = {cfg.resume!r}: no run directory with a config.json there")
    return run_dir


def start_fresh(cfg: RunConfig, task: Task, run_dir: RunDirectory) -> ArrayRecord:
    """The seeded initial model; writes the run's config.json."""
    random.seed(cfg.seed)  # Flower's node sampling uses the random module ...
    np.random.seed(cfg.seed)  # ... and its DP wrappers numpy's global generator
    model = task.initial_model(seeded_model(task, cfg.seed))
    run_dir.write_json("config.json", run_facts(cfg, task))
    return to_arrays(model)


def fingerprint(cfg: RunConfig, model_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the config (less the keys a resume may change)
    and the model's architecture (every key's shape and dtype)."""
    config = {key: value for key, value in cfg.to_dict().items() if key not in RESUMABLE_CHANGES}
    architecture = {key: [list(value.shape), str(value.dtype)] for key, value in model_state.items()}
    return {"config": config, "architecture": architecture}


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ; a key the saved run did not have yet (a section a later version added)
    counts only when it is set away from its default."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key, defaults.get(key)) != current.get(key))


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run continues: the checkpoint's model, its round, the clients' saved states."""

    arrays: ArrayRecord
    round: int
    client_states: dict[int, int]
    learned: dict[str, int]


def resume_from(cfg: RunConfig, strategy: Strategy, run_dir: RunDirectory, expected: dict[str, Any]) -> Resumed:
    """The last checkpoint of ``run_dir``, checked against ``expected`` (:func:`fingerprint`).

    Restores the strategy's state and the RNG states, checks every client's saved personal state,
    and drops rows written after the checkpoint (a round that crashed half-way is run again).
    """

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"run config key 'resume' = {cfg.resume!r}: {problem}")

    started = run_dir.read_json("config.json")["config"]
    defaults = parse_run_config({}).to_dict()
    changed = [key for key in _differences(started, cfg.to_dict(), defaults) if key not in RESUMABLE_CHANGES]
    if changed:
        raise refuse(
            f"the run was started with different values for {changed}; "
            f"expected the same config (only {sorted(RESUMABLE_CHANGES)} may change)"
        )
    holder = run_dir.path.expanduser().resolve().parent
    if Path(cfg.results_dir).expanduser().resolve() != holder:
        raise ConfigError(
            f"run config key 'results-dir' = {cfg.results_dir!r} does not hold the resumed run {cfg.resume!r}; "
            f"expected its parent folder '{holder}' (where the run keeps its client state)"
        )
    try:
        checkpoint = load_checkpoint(run_dir.path)
    except (OSError, CheckpointError) as error:
        raise refuse(str(error)) from error
    saved = checkpoint.get("fingerprint", {})
    for part in ("config", "architecture"):
        differing = _differences(saved.get(part, {}), expected[part], defaults if part == "config" else {})
        if part == "config":  # checkpoints of older versions kept 'results-dir' in their fingerprint
            differing = [key for key in differing if key not in RESUMABLE_CHANGES]
        if differing:
            raise refuse(
                f"the checkpoint '{run_dir.path / CHECKPOINT}' belongs to a run with a different {part} "
                f"({differing[:8]}); expected a checkpoint of this run"
            )
    client_states = {int(k): int(v) for k, v in checkpoint.get("client-states", {}).items()}
    for partition, saved_round in sorted(client_states.items()):
        path = client_state_file(run_dir.path, partition, saved_round)
        if not path.is_file():
            raise refuse(f"client {partition}'s personal state after round {saved_round} is missing: '{path}'")
        try:
            read_client_state(path)
        except CheckpointError as error:
            raise refuse(str(error)) from error
    done = int(checkpoint["round"])
    load_strategy_state = getattr(strategy, "load_state_dict", None)
    if callable(load_strategy_state):
        load_strategy_state(checkpoint["strategy"])
    restore_rng_states(checkpoint["rng"])
    try:
        for filename in ("rounds.jsonl", "clients.jsonl"):
            run_dir.drop_rows_after(filename, done)
    except RunFileError as error:
        raise refuse(str(error)) from error
    return Resumed(ArrayRecord(checkpoint["model"]), done, client_states, dict(checkpoint.get("learned", {})))


def run(grid: Grid, cfg: RunConfig) -> RunDirectory:
    """Run (or resume) a validated config on ``grid``; returns its run directory."""
    task = get_task(cfg.task, cfg)
    unused = unused_keys(cfg)
    if unused:
        log(WARNING, "fedpersonal: run config key(s) %s are set but never read by task %r, dataset %r and "
            "strategy %r", unused, cfg.task, cfg.dataset, cfg.strategy)  # fmt: skip
    strategy = build_strategy(cfg)
    task.prepare_data()  # decode, cache and check real data: bad data stops the run here
    wait_for_clients(grid, cfg)

    run_dir = run_directory(cfg)
    try:
        lock = DirectoryLock(run_dir.path).acquire()
    except DirectoryLockedError as error:
        raise ConfigError(f"run config key 'resume' = {cfg.resume!r}: {error}") from error
    try:
        return _run_locked(grid, cfg, task, strategy, run_dir)
    finally:
        lock.release()


def _run_locked(grid: Grid, cfg: RunConfig, task: Task, strategy: Strategy, run_dir: RunDirectory) -> RunDirectory:
    if cfg.resume:
        with torch.random.fork_rng():  # the architecture only; the checkpoint restores the RNG states
            expected = fingerprint(cfg, task.build_model().state_dict())
        resumed = resume_from(cfg, strategy, run_dir, expected)
    else:
        arrays = start_fresh(cfg, task, run_dir)
        expected = fingerprint(cfg, arrays.to_torch_state_dict())
        resumed = Resumed(arrays, 0, {}, {})
    arrays, done = resumed.arrays, resumed.round
    log(
        INFO,
        "fedpersonal: %s/%s, %d clients, rounds %d..%d -> %s",
        cfg.task,
        cfg.strategy,
        cfg.num_clients,
        done + 1,
        cfg.num_rounds,
        run_dir.path,
    )

    settings = LoopSettings(
        task.metric, task.better, cfg.round_timeout_s, cfg.min_train_replies, resume_round=done,
        message_config={"lr": cfg.lr, "local-epochs": cfg.local_epochs, "batch-size": cfg.batch_size},
        max_examples=task.max_examples(), fingerprint=expected, client_states=resumed.client_states,
        learned=resumed.learned,
    )  # fmt: skip
    loop_grid = SecAggPlusGrid.for_run(grid, cfg, settings.max_examples)  # section secagg: SecAgg+ train steps
    final = RoundLoop(strategy, loop_grid, run_dir, settings).run(arrays, cfg.num_rounds, first_round=done + 1)
    run_dir.save_model(final.to_torch_state_dict())
    run_dir.append_rows("clients.jsonl", evaluate_unseen(cfg, final, cfg.num_rounds))
    summary = final_summary(run_dir, task)
    run_dir.write_json("summary.json", summary)
    views = ", ".join(f"{view} {value['mean']:.3f}" for view, value in summary["views"].items())
    log(INFO, "fedpersonal: done; final %s: %s; results in %s", task.metric, views or "-", run_dir.path)
    return run_dir


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run``."""
    try:
        cfg = parse_run_config(dict(context.run_config))
        run(grid, cfg)
    except ConfigError as error:
        log(ERROR, "fedpersonal: configuration error: %s", error)
        raise
    except RunFailedError as error:
        log(ERROR, "fedpersonal: run failed: %s", error)
        raise
