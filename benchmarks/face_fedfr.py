"""FedFR vs FedAvg, FedAvg + local fine-tuning and local-only on the embedded faces, with ablations.

    python -m benchmarks.face_fedfr [--seeds 0 1 2 3 4] [--rounds 10] [--variants ...] [--report-only]

Every algorithm runs through the real ServerApp logic and ClientApp in one process, as one resumable
matrix (:func:`simulations.matrix.run_matrix`, one cell at a time) kept under ``--out`` (default
``runs/benchmarks/face_fedfr``; rerunning skips finished cells and resumes an interrupted one from its
last checkpoint), and starts from the same server model pretrained on the public identities (per
seed). ``face-fedavg`` and ``face-finetune`` train identically, so one ``face-finetune`` cell gives
both rows: its clients report the global model's metrics on their identities (FedAvg) and the
fine-tuned model's (FedAvg + FT). Cells (``--variants``, in this order within each seed):

* ``face-finetune``, ``face-local``: the references;
* ``fedfr``: FedFR at the paper's settings (hard-negative threshold 0.4);
* ``fedfr-nodfc`` (``fedfr.dfc-weight = 0``: no DFC branch; personalized model = local backbone) and
  ``fedfr-nohn`` (``fedfr.hard-negatives = false``: no public image in local training): the ablations;
* ``fedfr-t0.6``, ``fedfr-t0.7``: the threshold sweep;
* not by default: ``fedfr-nohn-nodfc`` and ``fedfr-nohn-nocon`` (hard negatives off and also the DFC
  branch or the contrastive term off: what the hard-negative-free variant owes to each), and
  ``fedfr-lrdecay`` (``fedfr.lr-decay``) and ``fedfr-trainpub`` (``fedfr.train-public-classifier``), the
  reference's options. They were run as ``--name face_fedfr_options`` on the same ``--out`` (which
  reuses the finished reference cells).

Reported (final round): generic metrics of the global backbone on unseen identities (server-side:
10-fold verification accuracy, TAR@FAR); personalized 1:1 TAR@FAR over pairs of each client's test
images of its own identities and 1:N TPIR@FPIR (mean over clients, worst client, worst 10%); the
hard-negative fraction (selected / public images) per round; and paired differences. A client's
data depend only on (seed, partition), so every cell of a seed has the same clients: personalized
differences are paired per client within a seed, then summarised two ways: over seeds (the mean
per-client difference of each seed; Student-t over the seeds, the interval the verdicts use) and
over all client pairs (Student-t over seeds x clients; narrower, but it treats the clients of one
federation as independent, which they are not). Generic differences are paired per seed.
``--report-only`` writes the results of the finished cells and runs nothing (safe while the matrix
runs in another process: it reads the cells' run directories only).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.figures import save_figure
from fedpersonal.results import RunDirectory
from fedpersonal.tasks.face import FaceSettings
from simulations.matrix import Cell, Variant, plan_cells, run_matrix
from simulations.matrix.runner import next_step
from simulations.reporting import (
    MATRIX_DIR,
    RESULTS_DIR,
    benchmark_row,
    invocation,
    paired_difference,
    write_benchmark,
)
from simulations.server_app import parse_run_config

ROOT = Path(__file__).resolve().parents[1]

NAME = "face_fedfr"
VARIANTS: dict[str, dict[str, Any]] = {
    "face-finetune": {"strategy": "face-finetune"},
    "face-local": {"strategy": "face-local"},
    "fedfr": {"strategy": "fedfr"},
    "fedfr-nodfc": {"strategy": "fedfr", "fedfr.dfc-weight": 0.0},
    "fedfr-nohn": {"strategy": "fedfr", "fedfr.hard-negatives": False},
    "fedfr-t0.6": {"strategy": "fedfr", "fedfr.hard-negative-threshold": 0.6},
    "fedfr-t0.7": {"strategy": "fedfr", "fedfr.hard-negative-threshold": 0.7},
    "fedfr-nohn-nodfc": {"strategy": "fedfr", "fedfr.hard-negatives": False, "fedfr.dfc-weight": 0.0},
    "fedfr-nohn-nocon": {"strategy": "fedfr", "fedfr.hard-negatives": False, "fedfr.contrastive-weight": 0.0},
    "fedfr-lrdecay": {"strategy": "fedfr", "fedfr.lr-decay": True},
    "fedfr-trainpub": {"strategy": "fedfr", "fedfr.train-public-classifier": True},
}
DEFAULT_VARIANTS = ("face-finetune", "face-local", "fedfr", "fedfr-nodfc", "fedfr-nohn", "fedfr-t0.6", "fedfr-t0.7")
# Table rows: (algorithm, cell, key prefix of its personalized metrics in the clients' replies).
ALGORITHMS = (
    ("pretrained (round 0)", "fedfr", ""),
    ("FedAvg", "face-finetune", ""),
    ("FedAvg + FT", "face-finetune", "personalized-"),
    ("local only", "face-local", "personalized-"),
    ("FedFR", "fedfr", "personalized-"),
    ("FedFR, no DFC", "fedfr-nodfc", "personalized-"),
    ("FedFR, no hard negatives", "fedfr-nohn", "personalized-"),
    ("FedFR, threshold 0.6", "fedfr-t0.6", "personalized-"),
    ("FedFR, threshold 0.7", "fedfr-t0.7", "personalized-"),
    ("FedFR, no hard negatives, no DFC", "fedfr-nohn-nodfc", "personalized-"),
    ("FedFR, no hard negatives, no contrastive", "fedfr-nohn-nocon", "personalized-"),
    ("FedFR, lr decay", "fedfr-lrdecay", "personalized-"),
    ("FedFR, trainable public rows", "fedfr-trainpub", "personalized-"),
)
FEDFR_ROWS = tuple(row for row, cell, _ in ALGORITHMS if cell.startswith("fedfr") and row.startswith("FedFR"))
PERSONAL = ("tar@far=0.01", "tar@far=0.1", "tpir@fpir=0.1")
GENERIC = ("verification-accuracy", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001")
PRIMARY = "personalized tar@far=0.01 (own identities)"
# Paired comparisons: (row, reference row); personalized ones per client, generic ones per seed.
REFERENCES = ("FedAvg + FT", "local only", "FedAvg")
ABLATIONS = (
    ("FedFR, no DFC", "FedFR"),
    ("FedFR, no hard negatives", "FedFR"),
    ("FedFR, threshold 0.6", "FedFR"),
    ("FedFR, threshold 0.7", "FedFR"),
    ("FedFR, no hard negatives, no DFC", "FedFR, no hard negatives"),
    ("FedFR, no hard negatives, no contrastive", "FedFR, no hard negatives"),
    ("FedFR, lr decay", "FedFR"),
    ("FedFR, trainable public rows", "FedFR"),
)

PerClient = dict[str, dict[int, dict[int, float]]]  # metric -> seed -> partition -> value


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The run config shared by every algorithm (Flower keys)."""
    return {
        "task": "face",
        "num-clients": args.clients,
        "num-rounds": args.rounds,
        "lr": args.lr,
        "momentum": 0.9,
        "weight-decay": 5e-4,
        "batch-size": 32,
        "grad-clip": 0.0,
        "test-fraction": 0.3,
        "heterogeneity": 1.0,
        "face.identities-min": 8,
        "face.identities-max": 12,
        "face.images-per-identity": 15,
        "face.first-epochs": args.first_epochs,
        "face.epoch-decrease": 2,
        "face.min-epochs": args.min_epochs,
    }


def cells(args: argparse.Namespace) -> list[Cell]:
    """Seeds outermost, then ``--variants`` in order (so early cells compare the algorithms)."""
    return plan_cells([Variant("face", scenario(args))], [Variant(v, VARIANTS[v]) for v in args.variants], args.seeds)


def finished_runs(planned: Sequence[Cell], out: Path) -> dict[tuple[str, int], RunDirectory]:
    """The run directories of the planned cells that finished with their config, by (cell, seed)."""
    found = {}
    for cell in planned:
        step, run_dir = next_step(cell, out / cell.name)
        if step == "skip" and run_dir is not None:
            found[(cell.algorithm, cell.seed)] = RunDirectory(run_dir)
    return found


def phase_rows(run_dir: RunDirectory, phase: str, server_round: int | None = None) -> list[dict[str, Any]]:
    """The clients' rows of one phase (of one round)."""
    rows = [row for row in run_dir.read_rows("clients.jsonl") if row["phase"] == phase]
    return rows if server_round is None else [row for row in rows if row["round"] == server_round]


class Collected:
    """Final values of every table row, per seed (generic) and per seed and client (personalized)."""

    def __init__(self) -> None:
        self.generic: dict[str, dict[str, dict[int, float]]] = {}  # row -> metric -> seed -> value
        self.personal: dict[str, PerClient] = {}  # row -> metric -> seed -> partition -> value
        self.curves: dict[tuple[str, str], list[list[float]]] = {}
        self.fractions: dict[str, dict[int, list[list[float]]]] = {}  # cell -> seed -> round -> clients
        self.seconds: dict[str, dict[int, float]] = {}  # cell -> seed -> wall time of its rounds

    def add(self, runs: Mapping[tuple[str, int], RunDirectory], seed: int) -> None:
        """Every row whose cell of ``seed`` finished."""
        for algorithm, cell, prefix in ALGORITHMS:
            run_dir = runs.get((cell, seed))
            if algorithm.startswith("pretrained") and run_dir is None:
                run_dir = next((runs[(c, s)] for c, s in runs if s == seed), None)  # every cell starts there
            if run_dir is None:
                continue
            rounds = run_dir.read_rows("rounds.jsonl")
            final = 0 if algorithm.startswith("pretrained") else rounds[-1]["round"]
            if cell in VARIANTS and (cell, seed) in runs:
                self.seconds.setdefault(cell, {})[seed] = float(rounds[-1]["time-s"])
            for key in GENERIC:
                metric = f"generic {key} (unseen)"
                self.generic.setdefault(algorithm, {}).setdefault(metric, {})[seed] = rounds[final][
                    f"global-unseen-{key}"
                ]
            evaluations = phase_rows(run_dir, "evaluate")
            for key in PERSONAL:
                metric = f"personalized {key} (own identities)"
                self.personal.setdefault(algorithm, {}).setdefault(metric, {})[seed] = {
                    int(row["partition-id"]): float(row[prefix + key]) for row in evaluations if row["round"] == final
                }
            if not algorithm.startswith("pretrained"):
                self.curves.setdefault((algorithm, "personal"), []).append(
                    [
                        float(np.mean([r[prefix + "tar@far=0.01"] for r in evaluations if r["round"] == row["round"]]))
                        for row in rounds
                    ]
                )
                self.curves.setdefault((algorithm, "generic"), []).append(
                    [row["global-unseen-tar@far=0.001"] for row in rounds]
                )
            if cell.startswith("fedfr") and algorithm.startswith("FedFR"):
                trained = phase_rows(run_dir, "train")
                self.fractions.setdefault(cell, {})[seed] = [
                    [float(r["hard-negative-fraction"]) for r in trained if r["round"] == row["round"]]
                    for row in rounds[1:]
                ]

    def benchmark_rows(self) -> list[dict[str, Any]]:
        """docs/results.md rows: mean ± std over seeds, worst client and worst 10%."""
        rows = []
        for algorithm, _, _ in ALGORITHMS:
            for metric, seeds in self.generic.get(algorithm, {}).items():
                rows.append(benchmark_row(algorithm, metric, seeds, "higher"))
            for metric, clients in self.personal.get(algorithm, {}).items():
                per_seed = {seed: float(np.mean(list(values.values()))) for seed, values in clients.items()}
                per_client = {seed: list(values.values()) for seed, values in clients.items()}
                rows.append(benchmark_row(algorithm, metric, per_seed, "higher", per_client))
        return rows


def summary_table(data: Collected) -> str:
    """Markdown: the headline metrics of every row, mean ± std over seeds (worst client averaged
    over seeds in brackets)."""
    columns = (
        ("generic", "generic verification-accuracy (unseen)", "generic verification accuracy"),
        ("generic", "generic tar@far=0.001 (unseen)", "generic TAR@FAR=1e-3"),
        ("personal", PRIMARY, "personalized TAR@FAR=1e-2"),
        ("personal", "personalized tpir@fpir=0.1 (own identities)", "personalized TPIR@FPIR=0.1"),
    )
    lines = [
        "## Summary (final round; mean ± std over seeds, worst client in brackets)",
        "",
        "| algorithm | " + " | ".join(title for _, _, title in columns) + " | seeds |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    rows = {(row["algorithm"], row["metric"]): row for row in data.benchmark_rows()}
    for algorithm, _, _ in ALGORITHMS:
        cells = []
        for _, metric, _ in columns:
            row = rows.get((algorithm, metric))
            if row is None:
                cells.append("-")
                continue
            worst = f" ({row['worst_client']:.3f})" if "worst_client" in row else ""
            cells.append(f"{row['mean']:.3f} ± {row['std']:.3f}{worst}")
        seeds = max((len(row["seeds"]) for (a, _), row in rows.items() if a == algorithm), default=0)
        if seeds:
            lines.append(f"| {algorithm} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def paired_clients(
    values: Mapping[int, Mapping[int, float]], reference: Mapping[int, Mapping[int, float]], level: float = 0.95
) -> dict[str, Any]:
    """Per-client differences ``values - reference`` within each seed (the clients both have),
    summarised over seeds (each seed's mean difference; Student-t over seeds) and over all client
    pairs (Student-t over seeds x clients), with how many pairs favour ``values``."""
    seeds = sorted(set(values) & set(reference))
    pairs = {
        (seed, client): values[seed][client] - reference[seed][client]
        for seed in seeds
        for client in sorted(set(values[seed]) & set(reference[seed]))
    }
    seed_means = {
        seed: float(np.mean([d for (s, _), d in pairs.items() if s == seed]))
        for seed in seeds
        if any(s == seed for s, _ in pairs)
    }
    over_seeds = paired_difference(seed_means, dict.fromkeys(seed_means, 0.0), level)
    index = {pair: number for number, pair in enumerate(sorted(pairs))}
    over_clients = paired_difference({index[p]: d for p, d in pairs.items()}, dict.fromkeys(index.values(), 0.0), level)
    differences = np.array(list(pairs.values()))
    return {
        "over_seeds": over_seeds,
        "over_clients": over_clients,
        "pairs": len(pairs),
        "better": int((differences > 0).sum()),
        "worse": int((differences < 0).sum()),
    }


def interval(paired: Mapping[str, Any]) -> str:
    """``+0.012 [-0.004, +0.028]`` (no interval with fewer than 2 samples)."""
    if paired["contains_zero"] is None:
        return f"{paired['mean']:+.3f} (n = {len(paired['seeds'])}, no interval)"
    return f"{paired['mean']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]"


def verdict(paired: Mapping[str, Any]) -> str:
    """What the over-seeds interval says."""
    if paired["contains_zero"] is None:
        return "too few seeds"
    if paired["contains_zero"]:
        return "no difference shown"
    return "higher" if paired["mean"] > 0 else "lower"


def personal_table(data: Collected, comparisons: Sequence[tuple[str, str]], title: str) -> str:
    """Markdown: paired per-client differences of the personalized metrics."""
    lines = [
        title,
        "",
        "| comparison | metric | difference, 95% CI over seeds | seeds | 95% CI over client pairs | "
        "pairs (better / worse) | verdict (over seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, reference in comparisons:
        if row not in data.personal or reference not in data.personal:
            continue
        for key in PERSONAL:
            metric = f"personalized {key} (own identities)"
            paired = paired_clients(data.personal[row][metric], data.personal[reference][metric])
            if not paired["pairs"]:
                continue
            seeds = paired["over_seeds"]
            lines.append(
                f"| {row} − {reference} | {key} | {interval(seeds)} | {len(seeds['seeds'])} | "
                f"{interval(paired['over_clients'])} | {paired['pairs']} ({paired['better']} / {paired['worse']}) | "
                f"{verdict(seeds)} |"
            )
    return "\n".join(lines)


def generic_table(data: Collected, comparisons: Sequence[tuple[str, str]]) -> str:
    """Markdown: paired per-seed differences of the generic metrics."""
    lines = [
        "## Generic model: paired per-seed differences (unseen identities)",
        "",
        "| comparison | metric | difference, 95% CI over seeds | seeds | verdict |",
        "|---|---|---|---|---|",
    ]
    for row, reference in comparisons:
        if row not in data.generic or reference not in data.generic:
            continue
        for key in ("verification-accuracy", "tar@far=0.001"):
            metric = f"generic {key} (unseen)"
            paired = paired_difference(data.generic[row][metric], data.generic[reference][metric])
            if not paired["seeds"]:
                continue
            lines.append(
                f"| {row} − {reference} | {key} | {interval(paired)} | {len(paired['seeds'])} | {verdict(paired)} |"
            )
    return "\n".join(lines)


def fraction_table(data: Collected, public_images: int) -> str:
    """Markdown: the hard-negative fraction (selected / public images) by threshold, per round."""
    lines = [
        f"## Hard negatives: selected / {public_images} public images, per client and round",
        "",
        "| cell | round 1 mean [min, max] | last round mean [min, max] | mean over rounds | seeds |",
        "|---|---|---|---|---|",
    ]
    for cell in VARIANTS:
        seeds = data.fractions.get(cell)
        if not seeds:
            continue
        first = [v for rounds in seeds.values() for v in rounds[0]]
        last = [v for rounds in seeds.values() for v in rounds[-1]]
        every = [v for rounds in seeds.values() for values in rounds for v in values]
        lines.append(
            f"| {cell} | {np.mean(first):.3f} [{min(first):.3f}, {max(first):.3f}] | "
            f"{np.mean(last):.3f} [{min(last):.3f}, {max(last):.3f}] | {np.mean(every):.3f} | {len(seeds)} |"
        )
    return "\n".join(lines)


def plot(data: Collected, path: Path) -> None:
    """Per-round personalized TAR@FAR=0.01 and generic TAR@FAR=0.001 (mean over seeds), and
    the per-client FedFR-variant − FedAvg + FT differences of the primary metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    shown = [a for a, _, _ in ALGORITHMS[1:] if (a, "personal") in data.curves]
    for index, algorithm in enumerate(shown):
        style = {"marker": "o", "markersize": 3, "color": f"C{index}"}
        curves = data.curves[(algorithm, "personal")]
        length = min(len(c) for c in curves)
        axes[0].plot(range(length), np.mean([c[:length] for c in curves], axis=0), label=algorithm, **style)
        if algorithm != "FedAvg + FT":  # the same global model as FedAvg
            curves = data.curves[(algorithm, "generic")]
            length = min(len(c) for c in curves)
            axes[1].plot(range(length), np.mean([c[:length] for c in curves], axis=0), label=algorithm, **style)
    axes[0].set(title="personalized TAR@FAR=0.01 (own identities)", xlabel="round")
    axes[1].set(title="generic TAR@FAR=1e-3 (unseen identities)", xlabel="round")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    reference = data.personal.get("FedAvg + FT", {}).get(PRIMARY, {})
    labels, differences = [], []
    for row in FEDFR_ROWS:
        values = data.personal.get(row, {}).get(PRIMARY, {})
        diffs = [
            values[s][c] - reference[s][c]
            for s in set(values) & set(reference)
            for c in set(values[s]) & set(reference[s])
        ]
        if diffs:
            labels.append(row.replace("FedFR, ", "").replace("FedFR", "FedFR (0.4)"))
            differences.append(diffs)
    if differences:
        axes[2].boxplot(differences, showmeans=True)
        axes[2].set_xticks(range(1, len(labels) + 1), labels, rotation=25, fontsize=7)
    axes[2].axhline(0, color="gray", linewidth=0.8)
    axes[2].set(title="per-client personalized TAR@FAR=0.01 − FedAvg + FT")
    save_figure(figure, path, dpi=100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the scenario of simulations/scenarios/face_fedfr.toml)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--first-epochs", type=int, default=6)
    parser.add_argument("--min-epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--name", default=NAME, help="results file name (benchmarks/results/<name>.json/.md/.png)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="matrix folder (default runs/benchmarks/<name>); finished cells there are reused",
    )
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (worker processes)")
    parser.add_argument("--report-only", action="store_true", help="report the finished cells; run nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # two threads contend badly on a shared 2-core machine
    config = scenario(args)
    out = (args.out or MATRIX_DIR / args.name).expanduser().resolve()
    planned = cells(args)
    if args.report_only:
        runs = finished_runs(planned, out)
        failures: list[str] = []
    else:
        report = run_matrix(planned, out, command=invocation(), jobs=args.jobs)
        finished = [o for o in report.outcomes if o.status != "failed" and o.run_dir is not None]
        runs = {(o.cell.algorithm, o.cell.seed): RunDirectory(o.run_dir) for o in finished}
        failures = [o.cell.name for o in report.outcomes if o.status == "failed"]
    data = Collected()
    for seed in args.seeds:
        data.add(runs, seed)
    public = parse_run_config({**config, "strategy": "fedfr"}).section(FaceSettings)
    public_images = public.public_identities * public.public_images_per_identity
    versus = [(row, reference) for reference in REFERENCES for row in FEDFR_ROWS]
    done = sorted(f"{cell}@{seed}" for cell, seed in runs)
    timing = ", ".join(f"{c} {np.mean(list(s.values())):.0f} s" for c, s in data.seconds.items()) or "-"
    notes = [
        f"Cells finished: {len(runs)} of {len(planned)} ({', '.join(done) or 'none'})."
        + (f" Failed: {', '.join(failures)}." if failures else ""),
        summary_table(data),
        personal_table(
            data,
            versus,
            "## Personalized: paired per-client differences (final round; verdict from the interval over seeds)",
        ),
        personal_table(data, ABLATIONS, "## Ablations and threshold sweep vs FedFR (paired per client)"),
        generic_table(data, [(row, "FedAvg") for row in FEDFR_ROWS] + list(ABLATIONS)),
        fraction_table(data, public_images),
        f"Wall time of a cell's rounds (mean over seeds; 2 shared cores, excluding server pretraining): {timing}. "
        f"Plot: {args.name}.png.",
    ]
    plot(data, RESULTS_DIR / f"{args.name}.png")
    write_benchmark(
        args.name,
        invocation(),
        {**config, "cells": [c.name for c in planned]},
        data.benchmark_rows(),
        "\n\n".join(notes),
    )
    print((RESULTS_DIR / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
