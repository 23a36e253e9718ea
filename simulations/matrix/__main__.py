"""``python -m simulations.matrix``: run scenarios x strategies x seeds, resumably, and report them."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from fedpersonal.config import ConfigError
from simulations.matrix.plan import algorithm, parse_assignments, plan_cells, scenario
from simulations.matrix.runner import run_matrix


def metric_spec(text: str) -> tuple[str, str]:
    """``loss:lower`` -> ("loss", "lower")."""
    name, colon, better = text.rpartition(":")
    if not colon or not name or better not in ("lower", "higher"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:lower or NAME:higher, e.g. loss:lower")
    return name, better


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return int(text)


def gpu_share(text: str) -> float:
    """GPUs per client (argparse type): 0, a fraction in (0, 1], or a whole number (Ray's rule)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value == 0 or 0 < value <= 1 or (value > 1 and value.is_integer())):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0, a fraction in (0, 1] or a whole number, e.g. 0.25")
    return value


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    cli = argparse.ArgumentParser(
        prog="python -m simulations.matrix",
        description="Run every scenario x strategy x seed (skipping finished cells, resuming interrupted "
        "ones) and write summary.md, summary.csv and PNG plots to --out.",
    )
    cli.add_argument("--out", required=True, help="output folder; run the same command again to resume")
    cli.add_argument(
        "--scenarios",
        nargs="+",
        default=[],
        metavar="TOML",
        help="run-config override files, one scenario each (default: the pyproject defaults)",
    )
    cli.add_argument(
        "--strategies",
        nargs="+",
        default=[],
        metavar="NAME|TOML",
        help="registered strategy names, or TOML files setting strategy + hyperparameters "
        "(default: each scenario's own strategy)",
    )
    cli.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every cell (default: 0)")
    cli.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="run-config overrides for every cell, TOML values: num-rounds=5 dataset='mpiigaze'",
    )
    cli.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        default=[],
        type=metric_spec,
        metavar="NAME:BETTER",
        help="metrics to report besides each task's primary one, e.g. loss:lower",
    )
    cli.add_argument(
        "--backend",
        choices=["inprocess", "vectorized", "flower"],
        default="inprocess",
        help="inprocess: the ServerApp and ClientApp in this process (fast, default); vectorized: the same "
        "with each round's clients trained in lockstep (torch.func; FedAvg, FedProx, FedOpt family, FedPer; "
        "docs/performance.md); flower: a real `flwr run` per cell on a private SuperLink",
    )
    cli.add_argument("--cell-timeout-s", type=float, default=86400.0, help="flower backend: limit per cell")
    cli.add_argument(
        "--client-cpus",
        type=positive_int,
        default=1,
        help="flower backend: CPUs (and torch threads) per client (default 1: one client per core)",
    )
    cli.add_argument(
        "--client-gpus",
        type=gpu_share,
        default=0.0,
        help="flower backend: GPUs per client, Flower's client-resources-num-gpus (0.25: four clients at once "
        "per GPU; default 0: clients see no GPU, so device 'auto' trains them on the CPU)",
    )
    cli.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="cells run at once, in worker processes (torch threads divided among them; default 1)",
    )
    cli.add_argument("--quiet", action="store_true", help="hide Flower's per-round log lines")
    return cli


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; exit status 0 if every cell has a result, 1 if some failed, 2 on bad input."""
    args = parser().parse_args(argv)
    if args.quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    command = shlex.join(["python", "-m", "simulations.matrix", *(sys.argv[1:] if argv is None else argv)])
    try:
        cells = plan_cells(
            [scenario(path) for path in args.scenarios],
            [algorithm(spec) for spec in args.strategies],
            args.seeds,
            parse_assignments(args.set),
        )
        report = run_matrix(
            cells,
            args.out,
            args.backend,
            dict(args.metric),
            command=command,
            cell_timeout_s=args.cell_timeout_s,
            client_cpus=args.client_cpus,
            jobs=args.jobs,
            client_gpus=args.client_gpus,
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"report: {report.out / 'summary.md'} ({len(report.rows)} rows, {len(report.plots)} plots); "
        f"{len(report.failed)} of {len(report.outcomes)} cells failed"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
