"""PNG plots of a matrix (matplotlib, Agg): one figure per metric and kind, one panel per scenario.

* ``curves-<metric>.png``   global metric vs round per algorithm: mean over seeds, std shaded
* ``clients-<metric>.png``  each client's final value per algorithm (box plot + one dot per client
  and seed)
* ``fairness-<metric>.png`` the per-client final values sorted from the worst client to the best
  (all seeds pooled) against the client percentile; the worst-10% clients lie left of the dotted
  line, the dashed lines are the algorithms' client means
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedpersonal.figures import save_figure
from simulations.matrix.collect import CellResult

PANEL_COLUMNS = 3


def safe_name(metric: str) -> str:
    """``tar@far=0.01`` -> ``tar_far_0.01`` (for file names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_")


def grouped(results: Sequence[CellResult], metric: str) -> dict[str, dict[str, list[CellResult]]]:
    """scenario -> algorithm -> the results that measured ``metric`` (first-seen order)."""
    groups: dict[str, dict[str, list[CellResult]]] = {}
    for result in results:
        if metric in result.metrics:
            groups.setdefault(result.cell.scenario, {}).setdefault(result.cell.algorithm, []).append(result)
    return groups


def _curves(axes, runs: dict[str, list[CellResult]], metric: str) -> None:
    for index, (name, members) in enumerate(runs.items()):
        rounds = sorted(set.intersection(*(set(r.metrics[metric].curve) for r in members)))
        values = np.array([[r.metrics[metric].curve[k] for k in rounds] for r in members])
        mean, std = values.mean(0), values.std(0)
        color = f"C{index}"
        axes.plot(rounds, mean, marker="o", markersize=3, color=color, label=f"{name} ({len(members)} seeds)")
        axes.fill_between(rounds, mean - std, mean + std, color=color, alpha=0.2)
    axes.set(xlabel="round", ylabel=f"global {metric}")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize="small")


def _clients(axes, runs: dict[str, list[CellResult]], metric: str) -> None:
    jitter = np.random.default_rng(0)
    values = [[v for r in members for v in r.metrics[metric].clients] for members in runs.values()]
    axes.boxplot(values, showfliers=False, medianprops={"color": "black"})
    for position, points in enumerate(values, start=1):
        axes.scatter(
            position + jitter.uniform(-0.15, 0.15, len(points)), points, s=8, alpha=0.5, color=f"C{position - 1}"
        )
    axes.set_xticks(range(1, len(values) + 1), list(runs), rotation=20)
    axes.set(ylabel=f"final {metric} per client")


def _fairness(axes, runs: dict[str, list[CellResult]], metric: str) -> None:
    for index, (name, members) in enumerate(runs.items()):
        points = np.array([v for r in members for v in r.metrics[metric].clients])
        if not len(points):
            continue
        lower_better = members[0].metrics[metric].better == "lower"
        ordered = np.sort(points)[::-1] if lower_better else np.sort(points)
        percentile = (np.arange(len(ordered)) + 0.5) / len(ordered) * 100
        axes.plot(percentile, ordered, color=f"C{index}", label=name)
        axes.axhline(points.mean(), color=f"C{index}", linestyle="--", linewidth=0.8)
    axes.axvline(10, color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="client percentile (worst first)", ylabel=f"final {metric} per client")
    axes.legend(fontsize="small")


KINDS: dict[str, Callable[..., None]] = {"curves": _curves, "clients": _clients, "fairness": _fairness}


def _figure(kind: str, groups: dict[str, dict[str, list[CellResult]]], metric: str, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(PANEL_COLUMNS, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure, panels = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    for panel, (scenario, runs) in zip(panels.flat, groups.items()):
        KINDS[kind](panel, runs, metric)
        panel.set_title(scenario)
        panel.grid(alpha=0.3)
    for panel in list(panels.flat)[len(groups) :]:
        panel.set_visible(False)
    save_figure(figure, target, dpi=110)


def plot_matrix(results: Sequence[CellResult], directory: Path, prefix: str = "") -> list[Path]:
    """Write every plot of every metric in ``results`` to ``directory``; returns the paths."""
    metrics = list(dict.fromkeys(metric for result in results for metric in result.metrics))
    paths = []
    for metric in metrics:
        groups = grouped(results, metric)
        for kind in KINDS:
            if kind != "curves" and not any(
                r.metrics[metric].clients for runs in groups.values() for m in runs.values() for r in m
            ):
                continue
            target = Path(directory) / f"{prefix}{kind}-{safe_name(metric)}.png"
            _figure(kind, groups, metric, target)
            paths.append(target)
    return paths
