"""FedFR vs FedAvg, FedAvg + local fine-tuning and local-only on the embedded faces.

    python -m benchmarks.face_fedfr [--seeds 0 1 2] [--clients 8] [--rounds 3]

Every algorithm runs through the real ServerApp logic and ClientApp in one process, as one
strategy-comparison matrix (:func:`simulations.matrix.run_matrix`) kept under ``--out`` (default
``runs/benchmarks/face_fedfr``; rerunning skips finished runs), and starts from the same server model pretrained on
the public identities (cached per seed). ``face-fedavg`` and ``face-finetune`` train identically,
so one ``face-finetune`` run gives both rows: its clients report the global model's metrics on
their identities (FedAvg) and the fine-tuned model's (FedAvg + FT).

Reported (final round; personalized metrics: mean over clients, worst client, worst 10%):

* generic: the global backbone on unseen identities (server-side): 10-fold verification accuracy,
  TAR@FAR;
* personalized 1:1: TAR@FAR over pairs of each client's test images of its own identities;
* personalized 1:N: TPIR@FPIR with G1/G2 galleries of the client's identities.

"Pretrained" is round 0 (the server's model before any federated round).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.tasks.face import FaceSettings
from simulations.matrix import Variant, plan_cells, run_matrix
from simulations.reporting import MATRIX_DIR, RESULTS_DIR, benchmark_row, invocation, write_benchmark
from simulations.server_app import parse_run_config

ROOT = Path(__file__).resolve().parents[1]

NAME = "face_fedfr"
RUNS = ("fedfr", "face-finetune", "face-local")
# Table rows: (algorithm, run, key prefix of its personalized metrics in the clients' replies).
ALGORITHMS = (
    ("pretrained (round 0)", "fedfr", ""),
    ("FedAvg", "face-finetune", ""),
    ("FedAvg + FT", "face-finetune", "personalized-"),
    ("local only", "face-local", "personalized-"),
    ("FedFR", "fedfr", "personalized-"),
)
PERSONAL = ("tar@far=0.1", "tar@far=0.01", "tpir@fpir=0.1")
GENERIC = ("verification-accuracy", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001")


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


def evaluations(run_dir: Any, server_round: int) -> list[dict[str, Any]]:
    """The clients' evaluation rows of one round."""
    return [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "evaluate" and r["round"] == server_round]


def collect(run_dirs: dict[str, Any], per_seed: dict, per_client: dict, curves: dict) -> None:
    """Add one seed's final values (and per-round curves) of every table row."""
    for algorithm, run, prefix in ALGORITHMS:
        rounds = run_dirs[run].read_rows("rounds.jsonl")
        final = 0 if algorithm.startswith("pretrained") else rounds[-1]["round"]
        clients = evaluations(run_dirs[run], final)
        for key in GENERIC:
            metric = f"generic {key} (unseen)"
            per_seed.setdefault((algorithm, metric), []).append(rounds[final][f"global-unseen-{key}"])
        for key in PERSONAL:
            values = [row[prefix + key] for row in clients]
            metric = f"personalized {key} (own identities)"
            per_seed.setdefault((algorithm, metric), []).append(float(np.mean(values)))
            per_client.setdefault((algorithm, metric), []).append(values)
        curves.setdefault((algorithm, "personal"), []).append(
            [np.mean([row[prefix + "tar@far=0.01"] for row in evaluations(run_dirs[run], r["round"])]) for r in rounds]
        )
        curves.setdefault((algorithm, "generic"), []).append([r["global-unseen-verification-accuracy"] for r in rounds])


def plot(curves: dict, path: Path) -> None:
    """Per-round personalized TAR@FAR=0.01 and generic verification accuracy, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for index, (algorithm, _, _) in enumerate(ALGORITHMS[1:]):
        style = {"marker": "o", "color": f"C{index}"}
        personal = np.mean(curves[(algorithm, "personal")], axis=0)
        axes[0].plot(range(len(personal)), personal, label=algorithm, **style)
        if algorithm != "FedAvg + FT":  # the same global model as FedAvg
            generic = np.mean(curves[(algorithm, "generic")], axis=0)
            label = "FedAvg, FedAvg + FT" if algorithm == "FedAvg" else algorithm
            axes[1].plot(range(len(generic)), generic, label=label, **style)
    axes[0].set(title="personalized TAR@FAR=0.01 (own identities)", xlabel="round")
    axes[1].set(title="generic verification accuracy (unseen identities)", xlabel="round")
    for axis in axes:
        axis.set_xticks(range(len(personal)))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the scenario of simulations/scenarios/face_fedfr.toml)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--first-epochs", type=int, default=6)
    parser.add_argument("--min-epochs", type=int, default=2)
    parser.add_argument("--name", default=NAME, help="results file name (benchmarks/results/<name>.json/.md/.png)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="matrix folder (default runs/benchmarks/<name>); finished runs there are reused",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # two threads contend badly on a shared 2-core machine
    config = scenario(args)

    cells = plan_cells([Variant("face", config)], [Variant(run, {"strategy": run}) for run in RUNS], args.seeds)
    report = run_matrix(cells, args.out or MATRIX_DIR / args.name, command=invocation())
    runs = report.runs()
    per_seed: dict = {}
    per_client: dict = {}
    curves: dict = {}
    hard_negatives: list[float] = []
    for seed in args.seeds:
        run_dirs = {run: runs[("face", run, seed)] for run in RUNS}
        trained = [r for r in run_dirs["fedfr"].read_rows("clients.jsonl") if r["phase"] == "train"]
        hard_negatives.append(float(np.mean([r["num-hard-negatives"] for r in trained])))
        collect(run_dirs, per_seed, per_client, curves)
    seconds: dict[str, list[float]] = {}
    for outcome in report.outcomes:
        if outcome.status != "skipped":
            seconds.setdefault(outcome.cell.algorithm, []).append(outcome.seconds)

    rows = []
    for (algorithm, metric), values in per_seed.items():
        clients = per_client.get((algorithm, metric))
        rows.append(
            benchmark_row(
                algorithm,
                metric,
                dict(zip(args.seeds, values)),
                "higher",
                dict(zip(args.seeds, clients)) if clients else None,
            )
        )
    plot(curves, RESULTS_DIR / f"{args.name}.png")
    public = parse_run_config(config).section(FaceSettings)
    timing = ", ".join(f"{run} {np.mean(s):.0f} s" for run, s in seconds.items()) or "all runs reused from --out"
    notes = (
        "Seconds per run (mean over the seeds run now, incl. server pretraining on the first run of a seed): "
        f"{timing}. "
        f"FedFR hard negatives per client and round: {np.mean(hard_negatives):.0f} of the "
        f"{public.public_identities} x {public.public_images_per_identity} public images (cos > 0.4). "
        f"Plot: {args.name}.png."
    )
    write_benchmark(args.name, invocation(), config, rows, notes=notes)
    print((RESULTS_DIR / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
