"""Read a finished cell back from its run directory: metric per round and final per-client values.

Sources: ``config.json`` (the task's primary ``metric`` and whether lower or higher is
``better``), ``rounds.jsonl`` (``global-<metric>`` per round), ``clients.jsonl`` (per-client
evaluation rows of the last round) and ``summary.json`` (the final round).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    """The primary metric of ``run_dir`` plus the ``extra`` metrics (name -> better) it logged."""
    files = RunDirectory(run_dir)
    facts = files.read_json("config.json")
    summary = files.read_json("summary.json")
    rounds = files.read_rows("rounds.jsonl")
    last = summary["final"]["round"]
    evaluated = [row for row in files.read_rows("clients.jsonl") if row["round"] == last and row["phase"] == "evaluate"]
    wanted = {facts["metric"]: facts["better"], **{k: v for k, v in (extra or {}).items() if k != facts["metric"]}}
    metrics = {}
    for name, better in wanted.items():
        key = f"global-{name}"
        if key not in summary["final"]:
            continue
        metrics[name] = MetricValues(
            better=better,
            curve={row["round"]: float(row[key]) for row in rounds if key in row},
            final=float(summary["final"][key]),
            clients=tuple(float(row[name]) for row in evaluated if name in row),
        )
    return CellResult(cell, Path(run_dir), facts["metric"], metrics)
