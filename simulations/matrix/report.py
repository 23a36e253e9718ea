"""The matrix report: one row per scenario x algorithm x metric, as CSV and Markdown.

A row is :func:`simulations.reporting.benchmark_row` (the format of docs/results.md) plus ``scenario``:
``mean`` / ``std`` (population std, ddof 0) over seeds of the final global metric (the
example-weighted mean over clients that the strategy aggregates), ``worst_client`` and
``worst10_mean`` of the final per-client values, each averaged over seeds.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.matrix.collect import CellResult
from simulations.reporting import benchmark_row, markdown_table

CSV_COLUMNS = (
    "scenario",
    "algorithm",
    "metric",
    "better",
    "mean",
    "std",
    "worst_client",
    "worst10_mean",
    "seeds",
    "per_seed",
)
ERROR_LINES = 12  # last lines of a failed cell's error (traceback) shown in summary.md


def summary_rows(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Rows in the order the (scenario, algorithm, metric) groups first appear in ``results``."""
    groups: dict[tuple[str, str, str], list[CellResult]] = {}
    for result in results:
        for metric in result.metrics:
            groups.setdefault((result.cell.scenario, result.cell.algorithm, metric), []).append(result)
    rows = []
    for (scenario, algorithm, metric), members in groups.items():
        values = {r.cell.seed: r.metrics[metric] for r in members}
        per_client = {seed: list(v.clients) for seed, v in values.items() if v.clients}
        better = next(iter(values.values())).better
        row = benchmark_row(
            algorithm, metric, {seed: v.final for seed, v in values.items()}, better, per_client or None
        )
        rows.append({"scenario": scenario, **row})
    return rows


def write_csv(rows: Sequence[dict[str, Any]], target: Path) -> None:
    """``summary.csv``: one line per row; ``seeds`` space-separated, ``per_seed`` as ``seed=value``."""
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **{key: row.get(key, "") for key in CSV_COLUMNS},
                    "seeds": " ".join(str(seed) for seed in row["seeds"]),
                    "per_seed": " ".join(f"{seed}={value!r}" for seed, value in row["per_seed"].items()),
                }
            )


def failures_section(failures: Sequence[tuple[str, str]]) -> str:
    """Markdown listing failed cells with the end of their error."""
    if not failures:
        return ""
    parts = [f"## Cells without results ({len(failures)})\n"]
    for name, error in failures:
        lines = error.strip().splitlines() or ["(no error text)"]
        shown = "\n".join((["..."] if len(lines) > ERROR_LINES else []) + lines[-ERROR_LINES:])
        parts.append(f"**{name}**\n\n```\n{shown}\n```\n")
    return "\n".join(parts)


def write_markdown(
    rows: Sequence[dict[str, Any]],
    target: Path,
    plots: Sequence[Path],
    failures: Sequence[tuple[str, str]] = (),
    command: str = "",
) -> None:
    """``summary.md``: the table, how to read it, the plots and the cells that have no result."""
    text = [f"# Matrix report: {target.parent.name}\n"]
    if command:
        text.append(f"`{command}`\n")
    text.append(markdown_table(rows) + "\n")
    text.append(
        "mean ± std: over seeds, of the final round's global metric (clients' values weighted by their "
        "test examples); ↓ lower is better, ↑ higher is better. worst client / worst 10%: the worst "
        "client's final value and the mean of the worst 10% of clients (at least one), averaged over seeds. "
        "Per-seed values are in summary.csv; each cell's run directory is under this folder.\n"
    )
    text.extend(f"![{plot.stem}]({plot.name})\n" for plot in plots)
    text.append(failures_section(failures))
    target.write_text("\n".join(part for part in text if part))
