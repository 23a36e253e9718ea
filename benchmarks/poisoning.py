"""Poisoning against robust aggregation: final accuracy against the share of attackers.

    python -m benchmarks.poisoning [--seeds 0 1 2] [--attacks sign-flip label-flip] [--jobs 2] [--report-only]

Digits split IID over 20 clients (30 rounds, every client every round). A share of 0, 10, 20 or 30 %
of them attack (section ``poison``): ``sign-flip`` sends ``-10x`` its honest update, ``label-flip``
trains honestly on flipped labels. Aggregators: FedAvg and Flower's FedMedian, FedTrimmedAvg
(beta 0.2), Krum, Multi-Krum (averaging the ``n - f`` best) and Bulyan, each told the true number of
attackers ``f`` (Bulyan can assume at most ``f = 4`` of 20, as it needs ``n >= 4f + 3``). Cells run
through the resumable matrix runner under ``runs/benchmarks/poisoning``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedpersonal.figures import save_figure  # noqa: E402
from simulations.matrix import Variant, plan_cells  # noqa: E402
from simulations.matrix.benchmark import matrix_parser, run_or_report  # noqa: E402
from simulations.reporting import MATRIX_DIR, RESULTS_DIR, invocation, paired_table, write_benchmark  # noqa: E402

NAME = "poisoning"
CLIENTS = 20
BASE = {"task": "classify", "dataset": "digits", "classify.user-shift": "none", "partition.name": "iid",
        "num-clients": CLIENTS, "num-rounds": 30}  # fmt: skip
SHARES = (0.0, 0.1, 0.2, 0.3)
ATTACKS = ("sign-flip", "label-flip")
AGGREGATORS = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")


def robust_keys(aggregator: str, attackers: int) -> dict[str, Any]:
    """The ``robust`` section of an aggregator told that ``attackers`` clients attack."""
    if aggregator in ("krum", "multikrum"):
        keys: dict[str, Any] = {"robust.num-malicious-nodes": attackers}
        if aggregator == "multikrum":
            keys["robust.num-nodes-to-select"] = CLIENTS - attackers
        return keys
    if aggregator == "bulyan":
        return {"robust.num-malicious-nodes": min(attackers, (CLIENTS - 3) // 4)}
    return {}


def scenario_name(attack: str, share: float) -> str:
    """``sign-flip-20pct``, ``none-0pct``."""
    return f"{attack}-{round(share * 100)}pct"


def cells(seeds: Sequence[int], attacks: Sequence[str]) -> list:
    """Every attack x share x aggregator x seed (share 0 once, as ``none-0pct``)."""
    planned = []
    for attack, share in [("none", 0.0)] + [(a, s) for a in attacks for s in SHARES if s > 0]:
        attackers = round(share * CLIENTS)
        keys = {**BASE, "poison.attack": attack, "poison.share": share} if attack != "none" else dict(BASE)
        aggregators = [Variant(name, {"strategy": name, **robust_keys(name, attackers)}) for name in AGGREGATORS]
        planned += plan_cells([Variant(scenario_name(attack, share), keys)], aggregators, list(seeds))
    return planned


def accuracy(rows: Sequence[Mapping[str, Any]], scenario: str, aggregator: str) -> Mapping[str, Any] | None:
    """The final global accuracy row of (scenario, aggregator)."""
    return next((r for r in rows if (r["scenario"], r["algorithm"]) == (scenario, aggregator)), None)


def curve_table(rows: Sequence[Mapping[str, Any]], attacks: Sequence[str]) -> str:
    """Accuracy (mean ± std over seeds) per attack, aggregator and share of attackers."""
    lines = []
    for attack in attacks:
        header = " | ".join(f"{round(s * 100)} %" for s in SHARES)
        lines += [f"## {attack}: final accuracy against the share of attackers", "",
                  f"| aggregator | {header} |", "|---|" + "---|" * len(SHARES)]  # fmt: skip
        for aggregator in AGGREGATORS:
            cells_ = []
            for share in SHARES:
                row = accuracy(rows, scenario_name("none" if share == 0 else attack, share), aggregator)
                cells_.append(f"{row['mean']:.3f} ± {row['std']:.3f}" if row else "-")
            lines.append(f"| {aggregator} | " + " | ".join(cells_) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[Mapping[str, Any]], attacks: Sequence[str]) -> Path:
    """Accuracy against the share of attackers, one panel per attack, one line per aggregator."""
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks, strict=True):
        for aggregator in AGGREGATORS:
            found = [accuracy(rows, scenario_name("none" if s == 0 else attack, s), aggregator) for s in SHARES]
            shares = [100 * s for s, row in zip(SHARES, found, strict=True) if row]
            ax.errorbar(shares, [r["mean"] for r in found if r], yerr=[r["std"] for r in found if r],
                        marker="o", label=aggregator)  # fmt: skip
        ax.set_title(attack)
        ax.set_xlabel("attackers (% of clients)")
        ax.set_ylabel("final global accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    return save_figure(fig, RESULTS_DIR / f"{NAME}.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    """Run (or finish) the grid; write the results, the tables and the plot."""
    parser = matrix_parser(__doc__.splitlines()[0], MATRIX_DIR / NAME)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    args = parser.parse_args(argv)
    report = run_or_report(cells(args.seeds, args.attacks), args)
    rows = [row for row in report.rows if row["metric"] == "accuracy"]
    paired = "## Paired per-seed differences to FedAvg\n\n" + paired_table(rows, "fedavg")
    notes = [curve_table(rows, args.attacks), paired, f"Plot: `{plot(rows, args.attacks).name}`"]
    write_benchmark(NAME, invocation(), report.config, rows, "\n\n".join(notes))


if __name__ == "__main__":
    main()
