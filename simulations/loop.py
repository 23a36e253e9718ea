"""The round loop: round-0 evaluation, then train/aggregate/evaluate per round, logged as it goes.

It drives any Flower Strategy through its four hooks (configure/aggregate train/evaluate),
records every client reply (so a run directory holds per-client metrics next to the aggregates),
tolerates failed and late clients (a round aggregates the replies that came in time, if at least
``min_train_replies`` did; otherwise it keeps the previous model), and writes a checkpoint after
every round. Every train and evaluate message carries a config record with ``server-round`` and
:attr:`LoopSettings.message_config` (the ServerApp sends ``lr``, ``local-epochs``, ``batch-size``),
so a ClientApp written like Flower's quickstart examples trains under this loop. A run in which
no round aggregated anything, or no evaluation succeeded, raises :class:`RunFailedError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpersonal.checkpoint import save_checkpoint
from fedpersonal.evaluation import round_key
from fedpersonal.metrics.fairness import fairness_summary
from fedpersonal.results import RunDirectory
from simulations.replies import check_replies

RUN_NAME = "run-name"  # message config: the run directory's name (clients choose where their state lives)
AGGREGATED, GOOD_EVALUATIONS = "aggregated-rounds", "good-evaluations"  # checkpointed counts of the run
STATE_ROUND = "state-round"  # reply info: the client saved its personal state after this round ...
STATE_LOCATION = "state-location"  # ... in its run directory ("run-dir") or a place it was configured with


class RunFailedError(RuntimeError):
    """The run learned nothing: no round aggregated replies, or every evaluation failed."""


def client_rows(
    server_round: int, phase: str, replies: Iterable[Message], rejected: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """One row per reply: its metrics and info (e.g. the Ray node), its error, or why it was rejected."""
    rows = []
    for msg in replies:
        node = msg.metadata.src_node_id
        row: dict[str, Any] = {"round": server_round, "phase": phase, "node-id": node}
        if msg.has_error():
            row["error"] = msg.error.reason
        elif rejected and node in rejected:
            row["rejected"] = rejected[node]
        else:
            row.update(dict(msg.content.metric_records["metrics"]))
            if "info" in msg.content.config_records:
                row.update(dict(msg.content.config_records["info"]))
        rows.append(row)
    return rows


def keep_dtypes(aggregated: ArrayRecord, sent: ArrayRecord) -> ArrayRecord:
    """``aggregated`` with every array the server sent back in its sent dtype: Flower's averaging
    turns integer buffers (BatchNorm ``num_batches_tracked``) into float64; they are rounded back."""
    if all(key not in sent or array.dtype == sent[key].dtype for key, array in aggregated.items()):
        return aggregated  # the usual case: nothing to convert
    before = sent.to_torch_state_dict()
    state = aggregated.to_torch_state_dict()
    changed = {
        key: (value.round() if not before[key].is_floating_point() else value).to(before[key].dtype)
        for key, value in state.items()
        if key in before and value.dtype != before[key].dtype
    }
    return ArrayRecord({**state, **changed})


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The strategy's own state (e.g. server-optimizer moments), if it keeps any."""
    state_dict = getattr(strategy, "state_dict", None)
    return state_dict() if callable(state_dict) else {}


@dataclass(frozen=True)
class LoopSettings:
    """How the loop talks to clients and what it measures."""

    metric: str
    better: str
    round_timeout_s: float = 3600.0
    min_train_replies: int = 1
    resume_round: int = 0
    message_config: Mapping[str, int | float | str | bool] = field(default_factory=dict)
    max_examples: float = math.inf  # the most samples a client can hold: larger num-examples are rejected
    fingerprint: Mapping[str, Any] = field(default_factory=dict)  # saved in every checkpoint
    client_states: Mapping[int, int] = field(default_factory=dict)  # partition -> round of its saved state
    learned: Mapping[str, int] = field(default_factory=dict)  # what earlier sessions of a resumed run achieved


@dataclass(frozen=True)
class Exchange:
    """One round's traffic: the checked replies to aggregate, a row per reply, what was lost."""

    accepted: list[Message]
    rows: list[dict[str, Any]]
    missing: int  # sent, but no reply within the round timeout
    rejected: int  # replies that failed the checks of simulations.replies


def _phase(train: bool) -> str:
    return "train" if train else "evaluate"


class RoundLoop:
    """Runs rounds of ``strategy`` on ``grid`` and writes them to ``run_dir``."""

    def __init__(self, strategy: Strategy, grid: Grid, run_dir: RunDirectory, settings: LoopSettings) -> None:
        self.strategy, self.grid, self.run_dir, self.settings = strategy, grid, run_dir, settings
        self.aggregated_rounds = settings.learned.get(AGGREGATED, 0)  # rounds of the run that aggregated replies
        self.good_evaluations = settings.learned.get(GOOD_EVALUATIONS, 0)  # evaluations with a good reply
        self.evaluations = 0  # evaluations of this session
        self.first_error = ""  # the first client error of this session
        self.client_states = dict(settings.client_states)

    def _config(self, server_round: int) -> ConfigRecord:
        return ConfigRecord(
            {
                **self.settings.message_config,
                "server-round": server_round,
                RUN_NAME: self.run_dir.path.name,
                "resume-round": self.settings.resume_round,
            }
        )

    def _note_errors(self, rows: list[dict[str, Any]]) -> None:
        if not self.first_error:
            self.first_error = next((f"node {row['node-id']}: {row['error']}" for row in rows if "error" in row), "")

    def _exchange(self, server_round: int, messages: Iterable[Message], train: bool) -> Exchange:
        """Replies that arrived within the round timeout, how many did not, and the checked ones."""
        sent = list(messages)
        replies = list(self.grid.send_and_receive(messages=sent, timeout=self.settings.round_timeout_s))
        custom = getattr(self.strategy, "check_reply", None) if train else None
        accepted, rejected = check_replies(sent, replies, self.settings.max_examples, train, custom)
        for node, reason in sorted(rejected.items()):
            log(WARNING, "round %d: rejected the %s reply of node %d: %s", server_round, _phase(train), node, reason)
        rows = client_rows(server_round, _phase(train), replies, rejected)
        self._note_errors(rows)
        return Exchange(accepted, rows, len(sent) - len(replies), len(rejected))

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Federated evaluation of ``arrays``: aggregated metrics and per-client rows."""
        messages = self.strategy.configure_evaluate(server_round, arrays, self._config(server_round), self.grid)
        exchange = self._exchange(server_round, messages, train=False)
        rows = exchange.rows
        aggregated = self.strategy.aggregate_evaluate(server_round, exchange.accepted) if exchange.accepted else None
        self.evaluations += 1
        self.good_evaluations += bool(exchange.accepted)
        summary: dict[str, Any] = {round_key(k): v for k, v in dict(aggregated or {}).items()}
        summary["evaluate-timeouts"] = exchange.missing
        summary["evaluate-rejected"] = exchange.rejected
        for metric in (self.settings.metric, f"personalized-{self.settings.metric}"):
            values = [row[metric] for row in rows if metric in row]
            if values:
                fairness = fairness_summary(values, self.settings.better)
                summary[f"std-{metric}"] = fairness["std"]
                summary[f"worst-client-{metric}"] = fairness["worst"]
                summary[f"worst10-{metric}"] = fairness["worst10_mean"]
        return summary, rows

    def train(self, server_round: int, arrays: ArrayRecord) -> tuple[ArrayRecord, dict[str, Any], list[dict[str, Any]]]:
        """One training round: new global arrays, aggregated train metrics, per-client rows.

        With fewer than ``min_train_replies`` good replies the round keeps ``arrays``.
        """
        messages = self.strategy.configure_train(server_round, arrays, self._config(server_round), self.grid)
        exchange = self._exchange(server_round, messages, train=True)
        rows = exchange.rows
        failures = sum(1 for row in rows if "error" in row)
        for row in rows:  # states inside the run directory are checked when the run is resumed
            if row.get(STATE_LOCATION) == "run-dir" and "partition-id" in row:
                self.client_states[int(row["partition-id"])] = int(row[STATE_ROUND])
        summary: dict[str, Any] = {
            "failures": failures,
            "rejected": exchange.rejected,
            "timeouts": exchange.missing,
            "skipped": False,
        }
        if len(exchange.accepted) < self.settings.min_train_replies:
            log(
                WARNING,
                "round %d: %d good replies < min-train-replies=%d; keeping the previous model",
                server_round,
                len(exchange.accepted),
                self.settings.min_train_replies,
            )
            summary["skipped"] = True
            return arrays, summary, rows
        new_arrays, metrics = self.strategy.aggregate_train(server_round, exchange.accepted)
        if new_arrays is None:
            summary["skipped"] = True
            return arrays, summary, rows
        new_arrays = keep_dtypes(new_arrays, arrays)
        summary.update(dict(metrics or {}))
        self.aggregated_rounds += 1
        return new_arrays, summary, rows

    def run(self, arrays: ArrayRecord, num_rounds: int, first_round: int = 1) -> ArrayRecord:
        """Round 0 evaluates ``arrays`` (fresh runs only); rounds first_round..num_rounds train then
        evaluate, each followed by a checkpoint. Raises :class:`RunFailedError` (after recording
        every round) when no round aggregated anything or no evaluation succeeded."""
        start = time.monotonic()
        if first_round == 1:
            evaluation, rows = self.evaluate(0, arrays)
            self._record(0, start, {}, evaluation, rows, num_rounds)
        for server_round in range(first_round, num_rounds + 1):
            arrays, train_summary, train_rows = self.train(server_round, arrays)
            evaluation, eval_rows = self.evaluate(server_round, arrays)
            self._record(server_round, start, train_summary, evaluation, train_rows + eval_rows, num_rounds)
            extra = {
                "fingerprint": dict(self.settings.fingerprint),
                "client-states": dict(self.client_states),
                "learned": {AGGREGATED: self.aggregated_rounds, GOOD_EVALUATIONS: self.good_evaluations},
            }
            state = strategy_state(self.strategy)
            save_checkpoint(self.run_dir.path, server_round, arrays.to_torch_state_dict(), state, extra)
        self._check_learned(num_rounds)
        return arrays

    def _check_learned(self, rounds: int) -> None:
        cause = f"; first client error: {self.first_error}" if self.first_error else ""
        if rounds > 0 and self.aggregated_rounds == 0:
            raise RunFailedError(f"no round of {rounds} aggregated any client reply{cause}")
        if self.evaluations > 0 and self.good_evaluations == 0:
            raise RunFailedError(f"every evaluation failed{cause}")

    def _record(
        self,
        server_round: int,
        start: float,
        train: dict[str, Any],
        evaluation: dict[str, Any],
        rows: list[dict[str, Any]],
        num_rounds: int,
    ) -> None:
        elapsed = time.monotonic() - start
        row = {"round": server_round, "time-s": round(elapsed, 3), **train, **evaluation}
        self.run_dir.append_rows("clients.jsonl", rows)
        self.run_dir.append_rows("rounds.jsonl", [row])
        log(INFO, progress_line(row, num_rounds, self.settings.metric))


def progress_line(row: dict[str, Any], num_rounds: int, metric: str) -> str:
    """``round 3/10 | 12.3 s | train loss 0.0123 | global angular-error 7.85 (worst client 11.20)``
    (the personalized metric for an algorithm without a global model)."""
    loss = row.get("train-loss")
    parts = [
        f"round {row['round']}/{num_rounds}",
        f"{row['time-s']:.1f} s",
        f"train loss {loss:.4f}" if loss is not None else "train loss -",
    ]
    for name in (metric, f"personalized-{metric}"):
        value = row.get(round_key(name))
        if value is not None:
            worst = row.get(f"worst-client-{name}")
            label = name.replace("-", " ", 1) if name != metric else f"global {metric}"
            parts.append(f"{label} {value:.3f}" + (f" (worst client {worst:.3f})" if worst is not None else ""))
            break
    dropped = row.get("failures", 0) + row.get("timeouts", 0) + row.get("rejected", 0)
    if dropped:
        parts.append(f"{dropped} client(s) dropped" + (", round skipped" if row.get("skipped") else ""))
    return " | ".join(parts)
