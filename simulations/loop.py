"""The round loop: round-0 evaluation, then train/aggregate/evaluate per round, logged as it goes.

It drives any Flower Strategy through its four hooks (configure/aggregate train/evaluate) and
records every client reply, so a run directory holds per-client metrics next to the aggregates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpersonal.metrics.fairness import fairness_summary
from fedpersonal.results import RunDirectory


def client_rows(server_round: int, phase: str, replies: Iterable[Message]) -> list[dict[str, Any]]:
    """One row per reply: its metrics, or its error."""
    rows = []
    for msg in replies:
        row: dict[str, Any] = {"round": server_round, "phase": phase, "node-id": msg.metadata.src_node_id}
        if msg.has_error():
            row["error"] = msg.error.reason
        else:
            row.update(dict(msg.content.metric_records["metrics"]))
        rows.append(row)
    return rows


class RoundLoop:
    """Runs ``num_rounds`` rounds of ``strategy`` and writes them to ``run_dir``."""

    def __init__(
        self, strategy: Strategy, grid: Grid, run_dir: RunDirectory, metric: str, better: str, timeout: float = 3600.0
    ) -> None:
        self.strategy, self.grid, self.run_dir = strategy, grid, run_dir
        self.metric, self.better, self.timeout = metric, better, timeout

    def _exchange(self, messages: Iterable[Message]) -> list[Message]:
        return list(self.grid.send_and_receive(messages=messages, timeout=self.timeout))

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Federated evaluation of ``arrays``: aggregated metrics and per-client rows."""
        replies = self._exchange(self.strategy.configure_evaluate(server_round, arrays, ConfigRecord(), self.grid))
        rows = client_rows(server_round, "evaluate", replies)
        aggregated = self.strategy.aggregate_evaluate(server_round, replies)
        summary: dict[str, Any] = {f"global-{k}": v for k, v in dict(aggregated or {}).items()}
        values = [row[self.metric] for row in rows if self.metric in row]
        if values:
            fairness = fairness_summary(values, self.better)
            summary[f"worst-client-{self.metric}"] = fairness["worst"]
            summary[f"worst10-{self.metric}"] = fairness["worst10_mean"]
        return summary, rows

    def train(self, server_round: int, arrays: ArrayRecord) -> tuple[ArrayRecord, dict[str, Any], list[dict[str, Any]]]:
        """One training round: new global arrays, aggregated train metrics, per-client rows."""
        replies = self._exchange(self.strategy.configure_train(server_round, arrays, ConfigRecord(), self.grid))
        rows = client_rows(server_round, "train", replies)
        new_arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if new_arrays is None:
            errors = [row.get("error", "") for row in rows]
            raise RuntimeError(f"round {server_round}: no client returned a model (errors: {errors})")
        summary = {k: v for k, v in dict(metrics or {}).items()}
        summary["failures"] = sum(1 for row in rows if "error" in row)
        return new_arrays, summary, rows

    def run(self, initial: ArrayRecord, num_rounds: int) -> ArrayRecord:
        """Round 0 evaluates ``initial``; rounds 1..num_rounds train then evaluate."""
        start = time.monotonic()
        evaluation, rows = self.evaluate(0, initial)
        self._record(0, start, {}, evaluation, rows, num_rounds)
        arrays = initial
        for server_round in range(1, num_rounds + 1):
            arrays, train_summary, train_rows = self.train(server_round, arrays)
            evaluation, eval_rows = self.evaluate(server_round, arrays)
            self._record(server_round, start, train_summary, evaluation, train_rows + eval_rows, num_rounds)
        return arrays

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
        log(INFO, progress_line(row, num_rounds, self.metric))


def progress_line(row: dict[str, Any], num_rounds: int, metric: str) -> str:
    """``round 3/10 | 12.3 s | train loss 0.0123 | global angular-error 7.85 (worst 11.20)``."""
    loss = row.get("train-loss")
    parts = [
        f"round {row['round']}/{num_rounds}",
        f"{row['time-s']:.1f} s",
        f"train loss {loss:.4f}" if loss is not None else "train loss -",
    ]
    value = row.get(f"global-{metric}")
    if value is not None:
        worst = row.get(f"worst-client-{metric}")
        parts.append(f"global {metric} {value:.3f}" + (f" (worst client {worst:.3f})" if worst is not None else ""))
    return " | ".join(parts)
