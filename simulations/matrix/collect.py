"""Read a finished cell back from its run directory: metric per round and final per-client values.

Sources: ``config.json`` (the task's primary ``metric`` and whether lower or higher is
``better``), ``rounds.jsonl`` (``global-<metric>`` and ``personalized-<metric>`` per round),
``clients.jsonl`` (per-client evaluation and unseen-client rows of the last round) and
``summary.json`` (the final round).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpersonal.evaluation import VIEWS, round_key, view_metric, view_of
from fedpersonal.results import RunDirectory
from simulations.matrix.plan import Cell


@dataclass(frozen=True)
class MetricValues:
    """One metric of one finished cell."""

    better: str  # "lower" or "higher"
    curve: Mapping[int, float]  # round -> global (example-weighted) value, rounds where it was measured
    final: float  # global value after the last round
    clients: tuple[float, ...]  # each client's value after the last round


@dataclass(frozen=True)
class CellResult:
    """A finished cell and its metrics (the task's primary metric first)."""

    cell: Cell
    run_dir: Path
    primary: str
    metrics: Mapping[str, MetricValues]


def read_cell(cell: Cell, run_dir: Path, extra: Mapping[str, str] | None = None) -> CellResult:
    """The primary metric of ``run_dir`` in each view it measured (global, ``personalized-``,
    ``unseen-``; :mod:`fedpersonal.evaluation`) plus the ``extra`` metrics (name -> better) it logged.
    Global and personalized values are the example-weighted means of ``rounds.jsonl``; an unseen
    value, measured once after the last round, is the plain mean over the unseen clients."""
    files = RunDirectory(run_dir)
    facts = files.read_json("config.json")
    summary = files.read_json("summary.json")
    rounds = files.read_rows("rounds.jsonl")
    last = summary["final"]["round"]
    final_rows = [row for row in files.read_rows("clients.jsonl") if row["round"] == last]
    primary = facts["metric"]
    wanted = {view_metric(view, primary): facts["better"] for view in VIEWS}
    wanted.update({k: v for k, v in (extra or {}).items() if k not in wanted})
    metrics = {}
    for name, better in wanted.items():
        phase = "unseen" if view_of(name) == "unseen" else "evaluate"
        clients = tuple(float(row[name]) for row in final_rows if row["phase"] == phase and name in row)
        key = round_key(name)
        if key in summary["final"]:
            curve = {row["round"]: float(row[key]) for row in rounds if key in row}
            final = float(summary["final"][key])
        elif phase == "unseen" and clients:
            final = float(np.mean(clients))
            curve = {last: final}
        else:
            continue
        metrics[name] = MetricValues(better=better, curve=curve, final=final, clients=clients)
    return CellResult(cell, Path(run_dir), primary, metrics)


@dataclass(frozen=True)
class CellProgress:
    """What a cell has logged so far, finished or not (a long cell read while it runs)."""

    curve: Mapping[int, float]  # round -> global (example-weighted) value of the metric
    clients: Mapping[int, tuple[float, ...]]  # round -> each client's value (evaluate phase)


def read_progress(run_dir: Path, metric: str) -> CellProgress:
    """``metric`` in every round ``run_dir`` has logged, from ``rounds.jsonl`` and ``clients.jsonl``
    alone (no ``summary.json`` needed), so an unfinished cell can be reported while it runs."""
    files = RunDirectory(run_dir)
    key = round_key(metric)
    curve = {row["round"]: float(row[key]) for row in files.read_rows("rounds.jsonl") if key in row}
    clients: dict[int, list[float]] = {}
    for row in files.read_rows("clients.jsonl"):
        if row.get("phase") == "evaluate" and metric in row:
            clients.setdefault(row["round"], []).append(float(row[metric]))
    return CellProgress(curve=curve, clients={r: tuple(v) for r, v in clients.items()})
