"""Benchmark results in the project's format (docs/results.md): JSON + Markdown under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flwr
import numpy as np
import torch

from fedpersonal.metrics.fairness import fairness_summary

RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# Where benchmark scripts keep their matrices (cells' run directories): rerunning a script skips the
# finished cells and resumes an interrupted one.
MATRIX_DIR = Path(__file__).resolve().parents[1] / "runs" / "benchmarks"


def invocation() -> str:
    """How this script was run: ``python -m <module> <args>`` for a module of the repository,
    ``python <script> <args>`` otherwise."""
    script = Path(sys.argv[0]).resolve()
    try:
        module = script.relative_to(RESULTS_DIR.parents[1]).with_suffix("")
    except ValueError:
        return " ".join(["python", str(script), *sys.argv[1:]])
    return " ".join(["python", "-m", ".".join(module.parts), *sys.argv[1:]])


def machine_info() -> dict[str, Any]:
    """Cores, memory, GPU (its name; '' without CUDA) and library versions of this machine."""
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(pages * page_size / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr.__version__,
        "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    }


def benchmark_row(
    algorithm: str,
    metric: str,
    per_seed: Mapping[int, float],
    better: str,
    per_client: Mapping[int, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """One (algorithm, metric) row: mean/std over seeds and, with per-client values, the
    worst client and the mean of the worst 10% (each averaged over seeds)."""
    values = np.array([per_seed[seed] for seed in sorted(per_seed)], dtype=float)
    row: dict[str, Any] = {
        "algorithm": algorithm,
        "metric": metric,
        "better": better,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "seeds": sorted(per_seed),
        "per_seed": {str(seed): float(per_seed[seed]) for seed in sorted(per_seed)},
    }
    if per_client:
        summaries = [fairness_summary(per_client[seed], better) for seed in sorted(per_client)]
        row["worst_client"] = float(np.mean([s["worst"] for s in summaries]))
        row["worst10_mean"] = float(np.mean([s["worst10_mean"] for s in summaries]))
    return row


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table: algorithm, metric, mean ± std over seeds, worst client, worst 10%
    (led by a scenario column when the rows carry a ``scenario``)."""
    scenario = any("scenario" in row for row in rows)
    lines = [
        ("| scenario " if scenario else "") + "| algorithm | metric | mean ± std | worst client | worst 10% | seeds |",
        ("|---" if scenario else "") + "|---|---|---|---|---|---|",
    ]
    for row in rows:
        arrow = "↓" if row["better"] == "lower" else "↑"
        worst = f"{row['worst_client']:.3f}" if "worst_client" in row else "-"
        worst10 = f"{row['worst10_mean']:.3f}" if "worst10_mean" in row else "-"
        lines.append(
            (f"| {row.get('scenario', '-')} " if scenario else "")
            + f"| {row['algorithm']} | {row['metric']} {arrow} | {row['mean']:.3f} ± {row['std']:.3f} "
            f"| {worst} | {worst10} | {len(row['seeds'])} |"
        )
    return "\n".join(lines)


def write_benchmark(
    name: str,
    command: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    notes: str = "",
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write ``<name>.json`` (rows as docs/results.md describes) and ``<name>.md``; returns the JSON path."""
    payload = result_payload(name, command=command, config=dict(config), rows=list(rows), notes=notes)
    return write_json_result(name, payload, f"{markdown_table(rows)}\n\n{notes}", results_dir)


def result_payload(name: str, **fields: Any) -> dict[str, Any]:
    """A benchmark's JSON payload: ``name``, the ``command`` that ran it (this process's invocation
    unless given), the ``machine``, when it was ``created``, then ``fields``."""
    return {
        "name": name,
        "command": invocation(),
        "machine": machine_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }


def write_json_result(name: str, payload: Mapping[str, Any], body: str, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` (with ``command``, ``machine``, ``created``) as ``<name>.json`` and a
    ``<name>.md`` holding ``body`` and where it was measured; returns the JSON path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"{name}.json"
    target.write_text(json.dumps(payload, indent=2) + "\n")
    machine = payload["machine"]
    (results_dir / f"{name}.md").write_text(
        f"# {name}\n\n`{payload['command']}`\n\n{body}\n\n"
        f"Machine: {machine['cores']} cores, {machine['ram_gib']} GiB, torch {machine['torch']}, "
        f"flwr {machine['flwr']}; created {payload['created']}.\n"
    )
    return target


def paired_difference(
    values: Mapping[int, float], reference: Mapping[int, float], level: float = 0.95
) -> dict[str, Any]:
    """The per-seed difference ``values - reference`` over the seeds both have: its mean, the
    two-sided Student-t confidence interval at ``level`` and whether that interval contains 0
    (an interval needs at least 2 seeds; with fewer its bounds are NaN and ``contains_zero`` None)."""
    from scipy import stats

    seeds = sorted(set(values) & set(reference))
    differences = np.array([values[seed] - reference[seed] for seed in seeds], dtype=float)
    mean = float(differences.mean()) if len(seeds) else float("nan")
    if len(seeds) < 2:
        low = high = float("nan")
    else:
        half = float(stats.t.ppf(0.5 + level / 2, len(seeds) - 1) * differences.std(ddof=1) / np.sqrt(len(seeds)))
        low, high = mean - half, mean + half
    contains_zero = None if len(seeds) < 2 else bool(low <= 0 <= high)
    return {"seeds": seeds, "mean": mean, "low": low, "high": high, "contains_zero": contains_zero}


def paired_table(rows: Sequence[Mapping[str, Any]], reference: str, level: float = 0.95) -> str:
    """Markdown: every row's paired per-seed difference to ``reference``'s row of the same scenario
    and metric, with its confidence interval, saying plainly when the interval contains zero."""
    lines = [
        f"| scenario | algorithm | metric | difference to {reference} | {level:.0%} CI | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    index = {(row.get("scenario"), row["algorithm"], row["metric"]): row for row in rows}
    for row in rows:
        base = index.get((row.get("scenario"), reference, row["metric"]))
        if base is None or row["algorithm"] == reference:
            continue
        values = {int(seed): value for seed, value in row["per_seed"].items()}
        paired = paired_difference(values, {int(seed): value for seed, value in base["per_seed"].items()}, level)
        verdict = {None: "fewer than 2 seeds: no interval", True: "interval contains 0: no difference shown",
                   False: "different"}[paired["contains_zero"]]  # fmt: skip
        lines.append(
            f"| {row.get('scenario', '-')} | {row['algorithm']} | {row['metric']} | {paired['mean']:+.3f} | "
            f"[{paired['low']:+.3f}, {paired['high']:+.3f}] | {len(paired['seeds'])} | {verdict} |"
        )
    return "\n".join(lines)
