"""Differential privacy on gaze: epsilon against angular error, per noise level and population.

    python -m benchmarks.gaze_privacy [--seeds 0 1 2] [--jobs 2] [--report-only]

FedAvg on the synthetic gaze task with client-level DP (section ``dp``, server-side fixed clipping at
norm ``C``): one row per noise multiplier, next to the non-private reference, for two populations
holding the same 3,000 training images:

* ``15-clients``: 15 users x 200 samples, all 15 sampled every round (no amplification);
* ``60-clients``: 60 users x 50 samples, 15 sampled per round (amplification by sampling).

``C`` = 0.3 is about the median update norm of the non-private run's first rounds (0.41, 0.25, 0.19
in rounds 1-3), so clipping alone changes little. Epsilon is at delta = 1e-5 after 10 rounds, from
the run's own accountant (summary.json ``privacy``). Cells run through the resumable matrix runner
under ``runs/benchmarks/gaze_privacy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedpersonal.figures import save_figure  # noqa: E402
from simulations.matrix import Variant, plan_cells  # noqa: E402
from simulations.matrix.benchmark import matrix_parser, run_or_report  # noqa: E402
from simulations.reporting import MATRIX_DIR, RESULTS_DIR, invocation, paired_table, write_benchmark  # noqa: E402

NAME = "gaze_privacy"
CLIPPING_NORM = 0.3
COMMON = {"task": "gaze", "strategy": "fedavg", "num-rounds": 10, "dp.delta": 1e-5}
POPULATIONS = {
    "15-clients": {**COMMON, "num-clients": 15, "samples-per-client": 200},
    "60-clients": {**COMMON, "num-clients": 60, "samples-per-client": 50, "fraction-train": 0.25},
}
NOISE = {"15-clients": (0.001, 0.03, 0.1, 0.3, 0.5, 1.0), "60-clients": (0.1, 0.3, 0.5, 1.0)}
REFERENCE = "non-private"


def variant_name(noise: float) -> str:
    """The row name of a noise multiplier (``clip-only`` for the smallest, which adds almost none)."""
    return "clip-only" if noise < 0.01 else f"z{noise:g}"


def cells(seeds: Sequence[int]) -> list:
    """Every population x (reference + its noise levels) x seed."""
    planned = []
    for population, keys in POPULATIONS.items():
        variants = [Variant(REFERENCE, {})] + [
            Variant(
                variant_name(z),
                {"dp.mode": "server-fixed", "dp.noise-multiplier": z, "dp.clipping-norm": CLIPPING_NORM},
            )  # fmt: skip
            for z in NOISE[population]
        ]
        planned += plan_cells([Variant(population, keys)], variants, list(seeds))
    return planned


def privacy_of(runs: Mapping[tuple[str, str, int], Any]) -> dict[tuple[str, str], float]:
    """Epsilon per (population, variant), from the cells' summary.json (equal across seeds)."""
    found: dict[tuple[str, str], float] = {}
    for (population, variant, _seed), run_dir in runs.items():
        privacy = run_dir.read_json("summary.json").get("privacy")
        if privacy:
            found[(population, variant)] = float(privacy["dp-epsilon"])
    return found


def table(rows: Sequence[Mapping[str, Any]], epsilons: Mapping[tuple[str, str], float]) -> str:
    """Epsilon against the final global angular error, per population and noise level."""
    lines = ["## Privacy against accuracy", "",
             "| population | noise multiplier | epsilon (delta 1e-5, 10 rounds) | angular error (deg) | worst client | "
             "cost vs non-private |", "|---|---|---|---|---|---|"]  # fmt: skip
    for population in POPULATIONS:
        reference = next((r for r in rows if (r["scenario"], r["algorithm"], r["metric"]) ==
                          (population, REFERENCE, "angular-error")), None)  # fmt: skip
        for row in rows:
            if row["scenario"] != population or row["metric"] != "angular-error":
                continue
            epsilon = epsilons.get((population, row["algorithm"]))
            shown = "∞ (no DP)" if epsilon is None else f"{epsilon:,.1f}"
            cost = f"{row['mean'] - reference['mean']:+.2f}" if reference else "-"
            lines.append(f"| {population} | {row['algorithm']} | {shown} | {row['mean']:.2f} ± {row['std']:.2f} | "
                         f"{row.get('worst_client', float('nan')):.2f} | {cost} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: Sequence[Mapping[str, Any]], epsilons: Mapping[tuple[str, str], float]) -> Path:
    """Angular error against epsilon (log scale), one line per population; references dashed."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for color, population in zip(("tab:blue", "tab:orange"), POPULATIONS, strict=True):
        points = sorted(
            (epsilons[(population, r["algorithm"])], r["mean"], r["std"])
            for r in rows
            if r["scenario"] == population
            and r["metric"] == "angular-error"
            and (population, r["algorithm"]) in epsilons
        )
        if points:
            eps, mean, std = map(np.array, zip(*points, strict=True))
            ax.errorbar(eps, mean, yerr=std, marker="o", color=color, label=f"{population}, DP")
        reference = [r for r in rows if (r["scenario"], r["algorithm"], r["metric"]) ==
                     (population, REFERENCE, "angular-error")]  # fmt: skip
        if reference:
            ax.axhline(reference[0]["mean"], color=color, linestyle="--", label=f"{population}, non-private")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon at delta 1e-5 after 10 rounds (log)")
    ax.set_ylabel("global angular error (deg)")
    ax.legend(fontsize=8)
    return save_figure(fig, RESULTS_DIR / f"{NAME}.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    """Run (or finish) the grid; write the results, the table and the plot."""
    args = matrix_parser(__doc__.splitlines()[0], MATRIX_DIR / NAME).parse_args(argv)
    report = run_or_report(cells(args.seeds), args)
    rows = [row for row in report.rows if row["metric"] == "angular-error"]
    epsilons = privacy_of(report.runs())
    notes = [table(rows, epsilons), "## Paired per-seed cost of privacy\n\n" + paired_table(rows, REFERENCE),
             f"Plot: `{plot(rows, epsilons).name}`"]  # fmt: skip
    write_benchmark(NAME, invocation(), report.config, rows, "\n\n".join(notes))


if __name__ == "__main__":
    main()
