"""Pseudo-gradient server optimizers vs FedAvg on the embedded gaze data (the FedGaze claim).

Three stages at the default scenario's scale (15 users x 600 samples, 2 local epochs; client SGD
without momentum), each a resumable matrix (:func:`simulations.matrix.run_matrix`) under
``runs/benchmarks/``:

    python -m benchmarks.gaze_fedopt client-lr   # FedAvg's client lr, 10 rounds, grid seed 100
    python -m benchmarks.gaze_fedopt grid        # server lr x tau per optimizer at that client lr
    python -m benchmarks.gaze_fedopt compare     # the best of each, --rounds 40, seeds 0-4, paired
                                                 # per-seed ratios to FedAvg, curves, references
    python -m benchmarks.gaze_fedopt snapshot    # compare's report of a compare still running (same
                                                 # options): every cell up to the last round all logged

``grid`` searches FedAdam (beta2 = 0.999 with Adam's bias correction), FedYogi (beta2 = 0.999) and
FedAdagrad over server lr {10^-2, 10^-1.5, 10^-1, 10^-0.5, 1} x tau {1e-3, 1e-2, 1e-1} (so eta ~ 10
tau, FedAdam's FedAvgM-like regime, is on it) and FedAvgM over server lr {0.3, 1, 3} (momentum 0.9).
Each stage writes benchmarks/results/gaze_fedopt_<stage>.{json,md}; ``grid`` and ``compare`` read
the earlier stages' choices from those files. Metric: mean angular error of the final global model
on each user's test split. The references train with the clients' optimizer for the same number of
epochs (rounds x local epochs): centralized on the pooled training splits, local-only one model per
user on its own split; each is kept in the matrix folder's ``references/`` and reused when ``compare``
resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.config import RunConfig
from fedpersonal.figures import save_figure
from fedpersonal.metrics.fairness import fairness_summary
from fedpersonal.tasks.gaze import GazeTask
from fedpersonal.training import SGDSettings, sgd_optimizer, stack, train_epochs
from simulations.matrix import Cell, MatrixReport, Variant, plan_cells, read_progress, run_matrix
from simulations.matrix.runner import run_directory, sigterm_as_exit
from simulations.reporting import MATRIX_DIR, RESULTS_DIR, benchmark_row, invocation, paired_difference, write_benchmark
from simulations.server_app import parse_run_config

FEDERATED = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
REFERENCES = {"centralized": True, "local-only": False}  # reference name -> trained on the pooled data
GRID_SEED = 100  # tuning seed, not a benchmark seed
CLIENT_LRS = (0.03, 0.1, 0.3, 1.0)  # client SGD without momentum (lr 0.03 with momentum 0.9 acts like 0.3)
SERVER_LRS = (10**-2, 10**-1.5, 10**-1, 10**-0.5, 1.0)
TAUS = (1e-3, 1e-2, 1e-1)
ADAPTIVE: dict[str, dict[str, Any]] = {
    "fedadam": {"fedadam.beta2": 0.999, "fedadam.bias-correction": "adam"},
    "fedyogi": {"fedyogi.beta2": 0.999},
    "fedadagrad": {},
}
FEDAVGM_LRS = (0.3, 1.0, 3.0)
METRIC = "angular-error"
SCENARIO = "gaze"  # the matrix scenario of every federated run (the cells' folder prefix)
PLATEAU_CHANGE = 0.01  # FedAvg has plateaued when its error moved less than this over the last tenth of the run
PAPER_RATIO = 0.842  # FedGaze: best pseudo-gradient optimizer / FedAvg, 8.95 / 10.63 deg
FINAL = "final angular error (deg), each user's test split"
WORST10 = "final angular error (deg), mean of the worst 10% users"


def federated_runs(
    args: argparse.Namespace,
    algorithms: dict[str, dict[str, Any]],
    seeds: list[int],
    out: Path,
    failures: dict[str, str] | None = None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every algorithm (label -> run-config keys) on every seed as one matrix under ``out``: per
    algorithm and seed, the global error per round (``curve``) and each user's final error (``users``).
    A failed cell raises, unless ``failures`` is given: then it receives label -> the error's last line
    (a tuning grid keeps the points that diverged as results)."""
    cells = plan_cells([Variant(SCENARIO, scale_keys(args))], [Variant(k, v) for k, v in algorithms.items()], seeds)
    report: MatrixReport = run_matrix(cells, out, command=invocation(), jobs=args.jobs)
    if failures is None:
        report.runs()  # raises naming any failed cell
    else:
        failures.update({o.cell.algorithm: (o.error.strip().splitlines() or ["?"])[-1] for o in report.failed})
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for result in report.results:
        values = result.metrics[METRIC]
        results.setdefault(result.cell.algorithm, {})[result.cell.seed] = {
            "curve": [values.curve[r] for r in sorted(values.curve)],
            "users": list(values.clients),
        }
    return results


def reference_run(cfg: RunConfig, pooled: bool) -> dict[str, Any]:
    """Centralized (``pooled``) or local-only training, evaluated on each user's test split after
    every ``local-epochs`` epochs (one point per round)."""
    task = GazeTask(cfg)  # its users: the run's seed, samples and heterogeneity
    data = [task.client_data(user) for user in range(cfg.num_clients)]
    torch.manual_seed(cfg.seed)
    initial = task.build_model()
    groups = [stack([d.train for d in data])] if pooled else [d.train for d in data]
    models = [task.build_model() for _ in groups]
    for model in models:
        model.load_state_dict(initial.state_dict())
    optimizers = [sgd_optimizer(model.parameters(), SGDSettings.from_config(cfg)) for model in models]
    generator = torch.Generator().manual_seed(cfg.seed)

    def errors() -> list[float]:
        return [task.evaluate(models[0 if pooled else user], d.test)[METRIC] for user, d in enumerate(data)]

    curve = [float(np.mean(errors()))]
    for _ in range(cfg.num_rounds):
        for model, optimizer, train in zip(models, optimizers, groups):
            train_epochs(model, train, task.loss, optimizer, cfg.local_epochs, cfg.batch_size, generator, cfg.grad_clip)
        users = errors()
        curve.append(float(np.mean(users)))
    return {"curve": curve, "users": users}


def references(items: list[tuple[Path, RunConfig, bool]], jobs: int) -> list[dict[str, Any]]:
    """:func:`reference` of every ``(path, cfg, pooled)``, ``jobs`` at a time in spawned single-threaded
    workers; a SIGTERM ends the workers too (finished references are already on disk)."""
    if jobs <= 1:
        return [reference(*item) for item in items]
    import multiprocessing

    with (
        sigterm_as_exit(),
        multiprocessing.get_context("spawn").Pool(jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool,
    ):
        return pool.starmap(reference, items)


def scale_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The run-config keys every run of this benchmark shares."""
    return {
        "num-clients": args.clients,
        "samples-per-client": args.samples,
        "local-epochs": args.local_epochs,
        "num-rounds": args.rounds,
        "heterogeneity": args.heterogeneity,
        "momentum": 0.0,
        "lr": args.client_lr,
    }


def reference(path: Path, cfg: RunConfig, pooled: bool) -> dict[str, Any]:
    """:func:`reference_run`'s result, kept in ``path`` with the run config that made it, so a
    resumed ``compare`` reuses a finished reference (a different config is run again)."""
    keys = json.loads(json.dumps(cfg.to_dict(), default=str))  # as it reads back from the file
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["config"] == keys:
            return dict(saved["result"])
    start = time.monotonic()
    result = reference_run(cfg, pooled)
    print(
        f"{path.stem}: final {result['curve'][-1]:.3f} deg, worst user {max(result['users']):.3f} "
        f"({time.monotonic() - start:.0f} s)",
        flush=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": keys, "result": result}) + "\n")
    return result


def chosen(stage: str) -> dict[str, Any]:
    """What an earlier stage chose (``benchmarks/results/gaze_fedopt_<stage>.json``'s ``chosen``)."""
    path = RESULTS_DIR / f"gaze_fedopt_{stage}.json"
    if not path.is_file():
        raise SystemExit(f"run 'python -m benchmarks.gaze_fedopt {stage}' first: {path} is missing")
    return dict(json.loads(path.read_text())["chosen"])


def tuning(args: argparse.Namespace, stage: str, points: dict[str, dict[str, Any]], family: dict[str, str]) -> None:
    """Run ``points`` (label -> run-config keys) on the grid seed; choose the best label per family."""
    failed: dict[str, str] = {}
    results = federated_runs(args, points, [GRID_SEED], MATRIX_DIR / f"gaze_fedopt_{stage}", failed)
    rows: list[dict[str, Any]] = []
    best: dict[str, tuple[dict[str, Any], float]] = {}
    for label, keys in points.items():
        if label in failed:
            continue
        users = results[label][GRID_SEED]["users"]
        rows.append(benchmark_row(label, FINAL, {GRID_SEED: float(np.mean(users))}, "lower", {GRID_SEED: users}))
        name = family[label]
        if rows[-1]["mean"] < best.get(name, ({}, np.inf))[1]:
            best[name] = (keys, rows[-1]["mean"])
    picked = {name: keys for name, (keys, _) in best.items()}
    summary = "; ".join(f"{name}: {keys}" for name, keys in picked.items())
    config = {**scale_keys(args), "seed": GRID_SEED, "points": points}
    diverged = "".join(f"\n\nNo result (diverged or failed): {label}: {error}" for label, error in failed.items())
    notes = f"Seed {GRID_SEED}. Chosen: {summary}.{diverged}"
    write_benchmark(f"gaze_fedopt_{stage}", invocation(), config, rows, notes)
    path = RESULTS_DIR / f"gaze_fedopt_{stage}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "chosen": picked}, indent=2) + "\n")
    print("chosen:", summary)


def client_lr(args: argparse.Namespace) -> None:
    """FedAvg's client learning rate (no momentum) on the grid seed."""
    points = {f"fedavg-clientlr{rate:g}": {"strategy": "fedavg", "lr": rate} for rate in CLIENT_LRS}
    tuning(args, "client-lr", points, {label: "fedavg" for label in points})


def grid(args: argparse.Namespace) -> None:
    """Server lr x tau for every adaptive optimizer, server lr for FedAvgM, at the chosen client lr."""
    args.client_lr = chosen("client-lr")["fedavg"]["lr"]
    points: dict[str, dict[str, Any]] = {}
    family: dict[str, str] = {}
    for name, extra in ADAPTIVE.items():
        for rate in SERVER_LRS:
            for tau in TAUS:
                label = f"{name}-lr{rate:.3g}-tau{tau:g}"
                points[label] = {"strategy": name, f"{name}.server-lr": rate, f"{name}.tau": tau, **extra}
                family[label] = name
    for rate in FEDAVGM_LRS:
        points[f"fedavgm-lr{rate:g}"] = {"strategy": "fedavgm", "fedavgm.server-lr": rate}
        family[f"fedavgm-lr{rate:g}"] = "fedavgm"
    tuning(args, "grid", points, family)


def compare(args: argparse.Namespace) -> None:
    """Every algorithm on every seed; JSON/Markdown rows and the error-vs-round plot."""
    out = args.out or MATRIX_DIR / args.name
    scenarios = compared_scenarios(args)
    results = federated_runs(args, scenarios, args.seeds, out)
    if args.references:
        labels, items = [], []
        for seed in args.seeds:
            cfg = parse_run_config({**scale_keys(args), "seed": seed})
            for name, pooled in REFERENCES.items():
                labels.append((name, seed))
                items.append((out / "references" / f"{name}-seed{seed}.json", cfg, pooled))
        for (name, seed), result in zip(labels, references(items, args.jobs)):
            results.setdefault(name, {})[seed] = result
    write_comparison(args, scenarios, results, args.rounds)


def snapshot(args: argparse.Namespace) -> None:
    """``compare``'s report of a compare that is still running (or stopped): every cell of its matrix
    folder up to the last round all of them have logged; nothing is trained. A long grid's progress can
    be committed this way while it runs, and the finished ``compare`` replaces it."""
    out = args.out or MATRIX_DIR / args.name
    scenarios = compared_scenarios(args)
    results, reached = logged_results(out, list(scenarios), args.seeds)
    status = (f"In progress: every cell has logged round {reached} of {args.rounds}; this report stops there "
              f"(`snapshot` of {out}).")  # fmt: skip
    write_comparison(args, scenarios, results, reached, status)


def compared_scenarios(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """FedAvg and the grid's chosen point of each of ``--algorithms`` (label -> run-config keys); sets
    the client lr that client-lr chose."""
    args.client_lr = chosen("client-lr")["fedavg"]["lr"]
    scenarios = {"fedavg": {"strategy": "fedavg"}, **chosen("grid")}
    return {name: keys for name, keys in scenarios.items() if name in args.algorithms}


def logged_results(
    out: Path, algorithms: list[str], seeds: list[int]
) -> tuple[dict[str, dict[int, dict[str, Any]]], int]:
    """Each cell's curve and per-user errors as :func:`federated_runs` gives them, cut at the last round
    every cell has logged (that round is returned too), read from the cells' logs under ``out``."""
    logged = {}
    for name in algorithms:
        for seed in seeds:
            cell_dir = out / Cell(SCENARIO, name, seed, {}).name
            run_dir = run_directory(cell_dir) if cell_dir.is_dir() else None
            if run_dir is None:
                raise SystemExit(f"cell {cell_dir} has not started: run compare with the same --out first")
            logged[name, seed] = read_progress(run_dir, METRIC)
    reached = min(max(set(p.curve) & set(p.clients), default=-1) for p in logged.values())
    if reached < 1:
        raise SystemExit(f"not every cell under {out} has finished a round yet")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for (name, seed), progress in logged.items():
        curve = [progress.curve[r] for r in range(reached + 1)]
        results.setdefault(name, {})[seed] = {"curve": curve, "users": list(progress.clients[reached])}
    return results, reached


def write_comparison(
    args: argparse.Namespace,
    scenarios: dict[str, dict[str, Any]],
    results: dict[str, dict[int, dict[str, Any]]],
    rounds: int,
    status: str = "",
) -> None:
    """The rows (final error and worst 10% per algorithm), the ratio, horizon and plateau notes and the
    plot of ``results`` after ``rounds`` rounds, as benchmarks/results/<--name>.{json,md,png}."""
    rows = []
    for name, per_seed in results.items():
        users = {seed: r["users"] for seed, r in per_seed.items()}
        finals = {seed: float(np.mean(values)) for seed, values in users.items()}
        worst10 = {seed: fairness_summary(values, "lower")["worst10_mean"] for seed, values in users.items()}
        rows.append(benchmark_row(name, FINAL, finals, "lower", users))
        rows.append(benchmark_row(name, WORST10, worst10, "lower"))
    fedavg = {row["metric"]: row for row in rows if row["algorithm"] == "fedavg"}
    for row in rows:
        row["ratio_to_fedavg"] = row["mean"] / fedavg[row["metric"]]["mean"]
    plot(results, RESULTS_DIR / f"{args.name}.png")
    config = {
        **scale_keys(args),
        "scenarios": scenarios,
        "references": "client SGD for rounds x local-epochs epochs",
        "seeds": args.seeds,
        "rounds_reported": rounds,
        "curves": {name: np.mean([r["curve"] for r in s.values()], axis=0).tolist() for name, s in results.items()},
    }
    horizons = [rounds * quarter // 4 for quarter in (1, 2, 3, 4)]
    notes = (
        (status + "\n\n" if status else "")
        + ratio_table(rows)
        + "\n\n"
        + horizon_table(results, horizons)
        + "\n\n"
        + tail_line(results)
        + "\n\n"
        + speedup_table(results, horizons)
        + "\n\n"
        + plateau(config["curves"]["fedavg"])
        + f"\n\nPlot (error per round, mean over seeds): {args.name}.png. {args.notes}"
    )
    write_benchmark(args.name, invocation(), config, rows, notes=notes)
    print(notes)


def plateau(curve: list[float], spans: int = 4) -> str:
    """Whether FedAvg's mean curve has flattened: its relative change over each of the last ``spans``
    tenths of the run with the local power of the round it falls as (``error ~ round^p``; a plateau
    has ``p`` near 0), and the verdict of :data:`PLATEAU_CHANGE` on the last tenth."""
    rounds = len(curve) - 1
    span = tenth(rounds)
    marks = [r for r in range(rounds, rounds - spans * span - 1, -span) if r >= 0][::-1]
    changes = [(start, end, (curve[end] - curve[start]) / curve[start]) for start, end in zip(marks, marks[1:])]
    verdict = "has plateaued" if abs(changes[-1][2]) < PLATEAU_CHANGE else "has not plateaued"
    steps = ", ".join(f"rounds {start}-{end} {change:+.1%}{power(curve, start, end)}" for start, end, change in changes)
    return (
        f"FedAvg's plateau: mean error {curve[-1]:.3f} deg at round {rounds}; its change per {span} rounds: {steps}. "
        f"FedAvg {verdict} (a plateau: under {PLATEAU_CHANGE:.0%} over the last tenth of the run)."
    )


def tenth(rounds: int) -> int:
    """The number of rounds in the last tenth of a run of ``rounds`` rounds (at least 1)."""
    return max(1, rounds // 10)


def power(curve: list[float], start: int, end: int) -> str:
    """`` (round^p)``: the power of the round the error falls as between two rounds (log-log slope),
    empty from round 0."""
    if start == 0:
        return ""
    return f" (round^{math.log(curve[end] / curve[start]) / math.log(end / start):.2f})"


def speedup_table(results: dict[str, dict[int, dict[str, Any]]], horizons: list[int]) -> str:
    """At each horizon, the round at which each optimizer first reaches FedAvg's error of that horizon
    on the same seed, and the speed-up in rounds (FedAvg's rounds to that error over the optimizer's;
    the per-seed mean). Unlike a ratio of errors, it does not shrink merely because FedAvg's curve
    flattens."""
    fedavg = {seed: run["curve"] for seed, run in results["fedavg"].items()}
    # FedAvg reaches its own error of round h by round h at the latest
    fedavg_rounds = {h: {seed: first_round_below(curve, curve[h]) or h for seed, curve in fedavg.items()}
                     for h in horizons}  # fmt: skip
    lines = ["| | " + " | ".join(f"round {h}" for h in horizons) + " |", "|---" * (len(horizons) + 1) + "|"]
    for name, per_seed in results.items():
        if name == "fedavg" or name in REFERENCES:
            continue
        cells = []
        for h in horizons:
            reached = {seed: first_round_below(run["curve"], fedavg[seed][h]) for seed, run in per_seed.items()}
            rounds = ", ".join("not reached" if r is None else str(r) for r in reached.values())
            speedups = [fedavg_rounds[h][seed] / r for seed, r in reached.items() if r]
            cells.append(f"{np.mean(speedups):.1f}x ({rounds})" if len(speedups) == len(reached) else f"- ({rounds})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    title = (
        f"Speed-up in rounds to FedAvg's error of each horizon (the round each optimizer first reaches it "
        f"in brackets; global error, {seed_count(fedavg)}):"
    )
    return title + "\n\n" + "\n".join(lines)


def first_round_below(curve: list[float], target: float) -> int | None:
    """The first round whose error is at or below ``target``, or None."""
    return next((r for r, error in enumerate(curve) if error <= target), None)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    """Each optimizer's final error as a ratio to FedAvg's, per seed, with its 95% interval, next to
    the seed paper's 0.842 (10.63 -> 8.95 deg)."""
    fedavg = next(row for row in rows if row["algorithm"] == "fedavg" and row["metric"] == FINAL)
    lines = [
        f"| optimizer | ratio to FedAvg (per-seed mean) | 95% CI | seeds | verdict | the paper's {PAPER_RATIO} |",
        "|---|---|---|---|---|---|",
    ]
    fedavg_per_seed = {int(seed): value for seed, value in fedavg["per_seed"].items()}
    for row in rows:
        if row["metric"] != FINAL or row["algorithm"] == "fedavg" or row["algorithm"] in REFERENCES:
            continue
        interval = ratio_interval({int(seed): value for seed, value in row["per_seed"].items()}, fedavg_per_seed)
        if len(interval["seeds"]) < 2:
            verdict = paper = "one seed: no interval, no verdict"
        else:
            verdict = ("no difference shown (contains 1)" if interval["low"] <= 1 <= interval["high"]
                       else "better than FedAvg" if interval["high"] < 1 else "worse than FedAvg")  # fmt: skip
            paper = ("inside the interval" if interval["low"] <= PAPER_RATIO <= interval["high"]
                     else "larger gain here" if interval["high"] < PAPER_RATIO else "smaller gain here")  # fmt: skip
        lines.append(f"| {row['algorithm']} | {interval['mean']:.3f} | {bounds(interval)} "
                     f"| {len(interval['seeds'])} | {verdict} | {paper} |")  # fmt: skip
    claim = f"The seed paper reports {PAPER_RATIO} for its best pseudo-gradient optimizer (10.63 -> 8.95 deg)."
    return claim + "\n\n" + "\n".join(lines)


def ratio_interval(values: dict[int, float], fedavg: dict[int, float]) -> dict[str, Any]:
    """The per-seed ratio ``values / fedavg`` over the seeds both have: its mean and 95% t interval."""
    ratios = {seed: values[seed] / fedavg[seed] for seed in values if seed in fedavg}
    return paired_difference(ratios, {seed: 0.0 for seed in ratios})


def bounds(interval: dict[str, Any]) -> str:
    """``[low, high]`` of a :func:`ratio_interval`, or ``(1 seed)`` where it has no interval."""
    if len(interval["seeds"]) < 2:
        return "(1 seed)"
    return f"[{interval['low']:.3f}, {interval['high']:.3f}]"


def horizon_table(results: dict[str, dict[int, dict[str, Any]]], horizons: list[int]) -> str:
    """Each optimizer's global error as a per-seed ratio to FedAvg's at several rounds (from the
    stored curves), with its 95% interval: does the gain shrink (a head start) or stay (a better end
    point)? FedAvg's mean error at each round is the first row."""
    fedavg = results["fedavg"]
    at = {name: {r: {s: run["curve"][r] for s, run in per_seed.items()} for r in horizons}
          for name, per_seed in results.items()}  # fmt: skip
    header = "| | " + " | ".join(f"round {r}" for r in horizons) + " |"
    lines = [header, "|---" * (len(horizons) + 1) + "|"]
    lines.append("| FedAvg error (deg) | " + " | ".join(f"{np.mean(list(at['fedavg'][r].values())):.3f}"
                                                       for r in horizons) + " |")  # fmt: skip
    for name in results:
        if name == "fedavg" or name in REFERENCES:
            continue
        cells = [ratio_interval(at[name][r], at["fedavg"][r]) for r in horizons]
        lines.append(f"| {name} / FedAvg | " + " | ".join(f"{c['mean']:.3f} {bounds(c)}" for c in cells) + " |")
    title = f"Ratio to FedAvg by round (global error, per-seed ratio, 95% CI, {seed_count(fedavg)}):"
    return title + "\n\n" + "\n".join(lines)


def tail_line(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Each algorithm's mean error over the last tenth of the run (averaged over seeds) and, for the
    optimizers, its per-seed ratio to FedAvg's: an end point that one round's oscillation does not set."""
    rounds = len(next(iter(results["fedavg"].values()))["curve"]) - 1
    first = rounds - tenth(rounds) + 1
    tails = {name: {seed: float(np.mean(run["curve"][first:])) for seed, run in per_seed.items()}
             for name, per_seed in results.items() if name not in REFERENCES}  # fmt: skip
    parts = [f"FedAvg {np.mean(list(tails['fedavg'].values())):.3f} deg"]
    for name, tail in tails.items():
        if name != "fedavg":
            ratio = ratio_interval(tail, tails["fedavg"])
            parts.append(f"{name} {np.mean(list(tail.values())):.3f} deg, {ratio['mean']:.3f}x {bounds(ratio)}")
    return f"Mean error over the last tenth of the run (rounds {first}-{rounds}): " + "; ".join(parts) + "."


def seed_count(per_seed: dict[int, Any]) -> str:
    """``1 seed``, ``5 seeds``."""
    return f"{len(per_seed)} seed{'' if len(per_seed) == 1 else 's'}"


def plot(results: dict[str, dict[int, dict[str, Any]]], target: Path) -> None:
    """Mean (over seeds) global angular error vs round for every algorithm; a long run (more than 61
    rounds) adds the same curves on log-log axes, where an error falling as a power of the round is a
    straight line and a plateau bends flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    length = len(next(iter(results["fedavg"].values()))["curve"])
    long = length > 61  # no marker per round, and the first rounds' spikes cut off to show the plateau
    figure, panels = plt.subplots(1, 2 if long else 1, figsize=(12 if long else 7, 4.5), squeeze=False)
    axes = panels[0][0]
    means = {name: np.mean([r["curve"] for r in per_seed.values()], axis=0) for name, per_seed in results.items()}
    for name, mean in means.items():
        style = "--" if name in REFERENCES else "-"
        axes.plot(range(length), mean, style, marker=None if long else "o", markersize=3, label=name)
    title = f"Gaze, embedded data: error vs round ({seed_count(results['fedavg'])})"
    axes.set(xlabel="round (references: every local-epochs epochs)", ylabel="mean angular error (deg)", title=title)
    axes.set_ylim(bottom=0, top=1.5 * means["fedavg"][length // 10] if long else None)
    if long:
        loglog = panels[0][1]
        for name, mean in means.items():
            loglog.loglog(range(1, length), mean[1:], "--" if name in REFERENCES else "-", label=name)
        loglog.set(
            xlabel="round (log)", ylabel="mean angular error (deg, log)", title="log-log: slope = power of round"
        )
        ticks = [1, 2, 3, 5, 10, 20, 40]
        loglog.set_yticks(ticks, labels=[str(t) for t in ticks], minor=False)
        loglog.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        loglog.grid(alpha=0.3, which="both")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, target, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["client-lr", "grid", "compare", "snapshot"])
    parser.add_argument("--rounds", type=int, default=None, help="default: 10 to tune, 40 to compare")
    parser.add_argument("--clients", type=int, default=15)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--heterogeneity", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--algorithms", nargs="+", choices=FEDERATED, default=list(FEDERATED),
                        help="federated algorithms to compare (must include fedavg)")  # fmt: skip
    parser.add_argument("--no-references", dest="references", action="store_false",
                        help="skip the centralized and local-only references (compare)")  # fmt: skip
    parser.add_argument("--name", default="gaze_fedopt", help="results file name (compare)")
    parser.add_argument("--notes", default="", help="extra notes for the results (compare)")
    parser.add_argument("--out", type=Path, default=None, help="matrix folder of compare (finished runs are reused)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (worker processes)")
    args = parser.parse_args()
    args.rounds = args.rounds or (10 if args.mode in ("client-lr", "grid") else 40)
    args.client_lr = 0.03  # client-lr searches it; grid and compare read the chosen one
    torch.set_num_threads(1)  # on a shared 2-core machine, 2 threads run several times slower
    {"client-lr": client_lr, "grid": grid, "compare": compare, "snapshot": snapshot}[args.mode](args)


if __name__ == "__main__":
    main()
