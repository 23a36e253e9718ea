"""Personalization baselines under one evaluation protocol, on digits, shapes and gaze.

    python -m benchmarks.classify_pfl [--seeds 0 1 2] [--scenarios ...] [--algorithms ...] [--jobs 2] [--report-only]

Every registered personalization baseline plus FedAvg, local-only and centralized references, on six
scenarios, through the resumable matrix runner (:mod:`simulations.matrix`; cells kept under
``--out``, default ``runs/benchmarks/classify_pfl``; rerunning skips finished cells):

* ``digits-dir0.1`` / ``digits-dir0.5`` / ``digits-dir5``: scikit-learn's digits split into disjoint
  clients by a Dirichlet(alpha) label partition, 20 training clients (+ 4 unseen ones);
* ``shapes-category``: procedural shapes, each client holding one group of classes (category shift);
* ``shapes-corruption``: procedural shapes, each client with its own corruption (covariate shift);
* ``gaze-kappa``: synthetic eyes, every user with a personal kappa (the angle between optical and
  visual axis), a per-user offset of the label that a personal head can learn.

FedAvg's personalized view is its global model (no adaptation), so the paired table compares every
algorithm's own model with FedAvg's global one, seed by seed (95% Student-t intervals).
Each cell reports the three views of :mod:`fedpersonal.evaluation`: global (when the algorithm has
a global model), personalized and unseen clients. For gaze the script also measures each user's
*systematic* error (the norm of the mean residual over the user's test split, in degrees) for the
global and the personalized models: a personal head that learned the user's kappa removes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedpersonal.checkpoint import client_state_file, read_client_state  # noqa: E402
from fedpersonal.data.synthetic.eyes import sample_user  # noqa: E402
from fedpersonal.figures import save_figure  # noqa: E402
from fedpersonal.metrics.angular import angular_error_deg  # noqa: E402
from fedpersonal.params import load_arrays  # noqa: E402
from fedpersonal.results import RunDirectory  # noqa: E402
from fedpersonal.tasks import get_task  # noqa: E402
from simulations.matrix import Variant, plan_cells  # noqa: E402
from simulations.matrix.benchmark import matrix_parser, run_or_report  # noqa: E402
from simulations.reporting import MATRIX_DIR, RESULTS_DIR, invocation, paired_table, write_benchmark  # noqa: E402
from simulations.server_app import parse_run_config  # noqa: E402

CLIENTS, UNSEEN = 20, 4
COMMON = {"num-clients": CLIENTS, "evaluate.unseen-clients": UNSEEN, "evaluate.unseen-steps": 20}
DIGITS = {**COMMON, "task": "classify", "dataset": "digits", "classify.user-shift": "none",
          "partition.name": "dirichlet", "partition.min-size": 8, "num-rounds": 30, "batch-size": 16}  # fmt: skip
SHAPES = {**COMMON, "task": "classify", "dataset": "shapes", "samples-per-client": 120, "num-rounds": 20,
          "batch-size": 16}  # fmt: skip
GAZE = {**COMMON, "task": "gaze", "samples-per-client": 120, "num-rounds": 10, "batch-size": 16}
ALPHAS = (0.1, 0.5, 5.0)
SCENARIOS: dict[str, dict[str, Any]] = {
    **{f"digits-dir{alpha:g}": {**DIGITS, "partition.alpha": alpha} for alpha in ALPHAS},
    # At alpha 0.1 the Dirichlet partitioner cannot give all 24 clients 8 samples for seeds 1 and 2
    # (flwr-datasets gives up after 10 draws); 4 is the largest of (8, 6, 4) that splits every seed.
    "digits-dir0.1": {**DIGITS, "partition.alpha": 0.1, "partition.min-size": 4},
    "shapes-category": {**SHAPES, "classify.user-shift": "category"},
    "shapes-corruption": {**SHAPES, "classify.user-shift": "corruption"},
    "gaze-kappa": GAZE,
}
ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fedper", "fedrep", "fedbabu", "lg-fedavg", "fedbn", "ditto", "apfl",
              "perfedavg", "pfedme", "local", "centralized")  # fmt: skip
HEAD_METHODS = ("fedper", "fedrep", "lg-fedavg", "fedbabu")  # the personal-head family of the published trend
NAME = "classify_pfl"


def cells(seeds: Sequence[int], scenarios: Sequence[str], algorithms: Sequence[str]) -> list:
    """The matrix: every scenario x algorithm x seed."""
    return plan_cells(
        [Variant(name, SCENARIOS[name]) for name in scenarios],
        [Variant(name, {"strategy": name}) for name in algorithms],
        list(seeds),
    )


def row_value(
    rows: Sequence[Mapping[str, Any]], scenario: str, algorithm: str, metric: str
) -> Mapping[str, Any] | None:
    """The report row of (scenario, algorithm, metric), if measured."""
    return next(
        (r for r in rows if (r["scenario"], r["algorithm"], r["metric"]) == (scenario, algorithm, metric)), None
    )


def best_view(
    rows: Sequence[Mapping[str, Any]], scenario: str, algorithm: str, metric: str
) -> Mapping[str, Any] | None:
    """The personalized row of an algorithm (FedAvg-like algorithms: the same as global)."""
    return row_value(rows, scenario, algorithm, f"personalized-{metric}")


def trend_notes(rows: Sequence[Mapping[str, Any]]) -> str:
    """The published trend checked: personal-head methods vs FedAvg's global model, by alpha."""
    lines = ["## The published trend (personal heads vs FedAvg, by Dirichlet alpha)", "",
             "| alpha | FedAvg global | best personal-head method | its personalized accuracy | difference |",
             "|---|---|---|---|---|"]  # fmt: skip
    for alpha in ALPHAS:
        scenario = f"digits-dir{alpha:g}"
        fedavg = row_value(rows, scenario, "fedavg", "accuracy")
        heads = [(name, best_view(rows, scenario, name, "accuracy")) for name in HEAD_METHODS]
        heads = [(name, row) for name, row in heads if row is not None]
        if fedavg is None or not heads:
            continue
        name, best = max(heads, key=lambda item: item[1]["mean"])
        lines.append(
            f"| {alpha:g} | {fedavg['mean']:.3f} ± {fedavg['std']:.3f} | {name} | "
            f"{best['mean']:.3f} ± {best['std']:.3f} | {best['mean'] - fedavg['mean']:+.3f} |"
        )
    return "\n".join(lines)


def systematic_error(model: torch.nn.Module, task: Any, tensors: Any) -> float:
    """The norm (degrees) of a user's mean residual: the part of its error a per-user offset explains."""
    predicted = task.predict(model, tensors)
    target = tensors[2].numpy()
    residual = np.degrees(predicted - target).mean(axis=0)
    return float(np.linalg.norm(residual))


def gaze_offsets(runs: Mapping[tuple[str, str, int], RunDirectory], seeds: Sequence[int]) -> dict[str, list[float]]:
    """Mean over users and seeds of the systematic error (deg) of the global and the personalized
    models of FedAvg and the personal-head methods on ``gaze-kappa`` (from each cell's final model
    and the clients' saved personal states)."""
    found: dict[str, list[float]] = {}
    for algorithm in ("fedavg", "fedper", "fedrep", "lg-fedavg", "local"):
        for seed in seeds:
            run_dir = runs.get(("gaze-kappa", algorithm, seed))
            if run_dir is None:
                continue
            cfg = parse_run_config({**GAZE, "strategy": algorithm, "seed": seed, "results-dir": str(run_dir.path)})
            task = get_task("gaze", cfg)
            rounds = cfg.num_rounds
            final = torch.load(run_dir.path / "model.pt", weights_only=True)
            errors, angular = [], []
            for user in range(cfg.num_clients):
                model = task.build_model()
                model.load_state_dict(final, strict=False)
                path = client_state_file(run_dir.path, user, rounds)
                if algorithm != "fedavg" and path.is_file():
                    load_arrays(model, read_client_state(path)["personal"], strict=False)
                data = task.client_data(user).test
                errors.append(systematic_error(model, task, data))
                angular.append(float(angular_error_deg(task.predict(model, data), data[2].numpy()).mean()))
            label = "FedAvg (global model)" if algorithm == "fedavg" else f"{algorithm} (personal model)"
            found.setdefault(label, []).extend(errors)
            found.setdefault(f"{label} angular", []).extend(angular)
    return found


def kappa_notes(runs: Mapping[tuple[str, str, int], RunDirectory], seeds: Sequence[int]) -> str:
    """The gaze question: does a personal head learn the user's kappa?"""
    offsets = gaze_offsets(runs, seeds)
    kappas = []
    for seed in seeds:
        cfg = parse_run_config({**GAZE, "seed": seed})
        users = [sample_user(user, cfg.seed, cfg.heterogeneity) for user in range(CLIENTS)]
        kappas += [float(np.degrees(np.hypot(*user.kappa))) for user in users]
    lines = ["## Gaze: does a personal head learn the user's kappa?", "",
             f"Users' kappa norm: mean {np.mean(kappas):.2f} deg (the offset a global model cannot know).", "",
             "| model | systematic error per user (deg) | angular error (deg) |", "|---|---|---|"]  # fmt: skip
    for label, values in offsets.items():
        if label.endswith(" angular"):
            continue
        lines.append(f"| {label} | {np.mean(values):.2f} | {np.mean(offsets[label + ' angular']):.2f} |")
    return "\n".join(lines)


def plot(rows: Sequence[Mapping[str, Any]], scenarios: Sequence[str], algorithms: Sequence[str]) -> list[Path]:
    """Personalized (and global) accuracy per algorithm for each scenario, and the alpha trend."""
    paths = []
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(11, 2.6 * len(scenarios)), squeeze=False)
    for ax, scenario in zip(axes[:, 0], scenarios, strict=True):
        metric = "angular-error" if scenario.startswith("gaze") else "accuracy"
        x = np.arange(len(algorithms))
        for offset, (view, color) in enumerate(
            (("", "tab:gray"), ("personalized-", "tab:blue"), ("unseen-", "tab:green"))
        ):
            found = [row_value(rows, scenario, name, view + metric) for name in algorithms]
            means = [r["mean"] if r else np.nan for r in found]
            stds = [r["std"] if r else 0 for r in found]
            ax.bar(x + (offset - 1) * 0.27, means, 0.27, yerr=stds, color=color, label=(view or "global ").strip("-"))
        ax.set_xticks(x, algorithms, rotation=30, fontsize=8)
        ax.set_title(f"{scenario}: {metric}", fontsize=9)
        ax.legend(fontsize=7, ncol=3)
    paths.append(save_figure(fig, RESULTS_DIR / f"{NAME}.png", dpi=90))

    fig, ax = plt.subplots(figsize=(7, 4))
    for index, name in enumerate(algorithms):
        found = [best_view(rows, f"digits-dir{alpha:g}", name, "accuracy") for alpha in ALPHAS]
        if all(found):
            style = "-" if name in HEAD_METHODS else ":"
            ax.plot(ALPHAS, [r["mean"] for r in found], style, marker="o", color=plt.cm.tab20(index),
                    label=f"{name} (personalized)")  # fmt: skip
    fedavg = [row_value(rows, f"digits-dir{alpha:g}", "fedavg", "accuracy") for alpha in ALPHAS]
    if all(fedavg):
        ax.plot(ALPHAS, [r["mean"] for r in fedavg], "k--", marker="s", label="fedavg (global)")
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet alpha (larger = closer to IID)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=6, ncol=2)
    paths.append(save_figure(fig, RESULTS_DIR / f"{NAME}_alpha.png", dpi=90))
    return paths


def main(argv: list[str] | None = None) -> None:
    """Run (or finish) the matrix; write the results, the notes and the plots."""
    parser = matrix_parser(__doc__.splitlines()[0], MATRIX_DIR / NAME)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    args = parser.parse_args(argv)
    report = run_or_report(cells(args.seeds, args.scenarios, args.algorithms), args)
    runs = report.runs()
    personalized = [row for row in report.rows if row["metric"].startswith("personalized-")]
    notes = [trend_notes(report.rows), "## Paired per-seed differences to FedAvg (personalized view)\n\n"
             + paired_table(personalized, "fedavg")]  # fmt: skip
    if "gaze-kappa" in args.scenarios:
        notes.append(kappa_notes(runs, args.seeds))
    plots = plot(report.rows, args.scenarios, args.algorithms)
    notes.append("Plots: " + ", ".join(f"`{path.name}`" for path in plots))
    write_benchmark(NAME, invocation(), report.config, report.rows, "\n\n".join(notes))


if __name__ == "__main__":
    main()
