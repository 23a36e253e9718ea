"""``python -m fedpersonal.data stats --dataset NAME --path DIR [--partition NAME ...]``.

Loads a dataset (through the cache), partitions it exactly as a run would, prints per-client
sizes and label histograms, and saves a plot. Bad input exits with status 2 and a message
naming the file or option and what was expected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedpersonal.config import ConfigError, RunConfig, parse_settings
from fedpersonal.data.partition import PARTITIONERS, PartitionSettings, make_partition
from fedpersonal.data.real import DATASETS, load_dataset
from fedpersonal.data.stats import client_stats, save_plot, stats_table

DEFAULT_CLIENTS = 10
RESULTS_DIR = RunConfig.results_dir  # the runs' default results-dir


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    cli = argparse.ArgumentParser(prog="python -m fedpersonal.data", description=__doc__.split("\n\n")[1])
    commands = cli.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="per-client sizes and label histograms of a partitioned dataset")
    stats.add_argument("--dataset", required=True, help=f"one of {sorted(DATASETS)}")
    stats.add_argument("--path", default="", help="local path of the dataset ('' for bundled ones)")
    stats.add_argument("--partition", "--partitioner", default="natural", help=f"one of {list(PARTITIONERS)}")
    stats.add_argument("--alpha", type=float, default=PartitionSettings.alpha)
    stats.add_argument("--classes-per-client", type=int, default=PartitionSettings.classes_per_client)
    stats.add_argument("--shards-per-client", type=int, default=PartitionSettings.shards_per_client)
    stats.add_argument("--users-per-client", type=int, default=PartitionSettings.users_per_client)
    stats.add_argument("--min-size", type=int, default=PartitionSettings.min_size)
    stats.add_argument(
        "--num-clients",
        type=int,
        default=None,
        help=f"clients (default: every natural client for 'natural', else {DEFAULT_CLIENTS})",
    )
    stats.add_argument("--test-fraction", type=float, default=0.2)
    stats.add_argument("--seed", type=int, default=0)
    stats.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize images (image datasets)")
    stats.add_argument("--gray", action="store_true", help="decode images as grayscale (image datasets)")
    stats.add_argument("--evaluation-subset", action="store_true", help="MPIIGaze: only the official evaluation lists")
    stats.add_argument(
        "--results-dir",
        type=Path,
        default=Path(RESULTS_DIR),
        help=f"where the plot goes unless --plot says (default {RESULTS_DIR}/data-stats/)",
    )
    stats.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="the plot's file (default <results-dir>/data-stats/partition-<dataset>-<partition>.png)",
    )
    return cli


def loader_options(args: argparse.Namespace) -> dict[str, Any]:
    """Loader options given on the command line."""
    options: dict[str, Any] = {}
    if args.size:
        options["size"] = tuple(args.size)
    if args.gray:
        options["gray"] = True
    if args.evaluation_subset:
        options["evaluation_subset"] = True
    return options


def partition_settings(args: argparse.Namespace) -> PartitionSettings:
    """The options as a validated ``partition`` section (same checks and messages as a run)."""
    values = {
        "name": args.partition,
        "alpha": args.alpha,
        "classes-per-client": args.classes_per_client,
        "shards-per-client": args.shards_per_client,
        "users-per-client": args.users_per_client,
        "min-size": args.min_size,
    }
    return parse_settings(PartitionSettings, values, "partition.")


def natural_clients(data: Any, settings: PartitionSettings) -> int:
    """How many clients the natural partition of ``data`` has."""
    groups = getattr(data, "groups", None)
    count = len(set(groups.tolist())) if groups is not None else DEFAULT_CLIENTS
    return -(-count // settings.users_per_client)


def stats(args: argparse.Namespace) -> None:
    """Load, partition, print and plot."""
    settings = partition_settings(args)
    if not 0 < args.test_fraction < 1:
        raise ConfigError(f"--test-fraction = {args.test_fraction}; expected a number in (0, 1)")
    try:
        data = load_dataset(args.dataset, args.path, **loader_options(args))
    except TypeError as error:  # an option the dataset's loader does not take
        raise ConfigError(f"dataset '{args.dataset}' does not accept that option ({error})") from error
    clients = args.num_clients or (natural_clients(data, settings) if settings.name == "natural" else DEFAULT_CLIENTS)
    if clients < 1:
        raise ConfigError(f"--num-clients = {clients}; expected an integer >= 1")
    partition = make_partition(
        getattr(data, "labels", None),
        getattr(data, "groups", None),
        len(data),
        clients,
        settings,
        args.test_fraction,
        args.seed,
        args.dataset,
    )
    rows = client_stats(data, partition)
    assigned = sum(row.train + row.test for row in rows)
    print(
        f"dataset {args.dataset} ({args.path or 'bundled'}): {len(data)} samples; partition {settings.name}, "
        f"{clients} clients, test-fraction {args.test_fraction}, seed {args.seed}; "
        f"{assigned} samples in clients, {len(data) - assigned} in none"
        + (f", {len(partition.unseen)} unseen natural client(s)" if partition.unseen else "")
    )
    print(stats_table(data, rows))
    plot = args.plot or args.results_dir / "data-stats" / f"partition-{args.dataset}-{settings.name}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.dataset}: {settings.name} partition, {clients} clients (seed {args.seed})"
    print(f"plot saved to {save_plot(rows, tuple(getattr(data, 'class_names', ())), plot, title)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        stats(args)
    except ConfigError as error:  # DataError is a ConfigError
        print(f"python -m fedpersonal.data: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
