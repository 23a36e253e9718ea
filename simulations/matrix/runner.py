"""Run a matrix of cells, resumably, and write its report.

Layout of ``<out>/``:

* ``<scenario>__<algorithm>__seed<seed>/<run directory>/`` - each cell's normal run directory
  (``results-dir`` of the cell is its folder, so exactly one run directory lives there)
* ``matrix.json``  - every cell's overrides, status, seconds, run directory and error text,
  rewritten after each cell
* ``summary.md``, ``summary.csv``, ``*.png`` - the report (:mod:`simulations.matrix.report`)

Running the same matrix again skips the cells whose run directory has a ``summary.json`` (and was
run with the same config), resumes a cell that stopped half-way from its last checkpoint (run
config key ``resume``; also a finished cell asked for more ``num-rounds``), and starts the others
afresh. A cell that finished with another config stops the matrix before anything runs. A failing
cell is recorded and the matrix goes on.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpersonal.checkpoint import CHECKPOINT
from fedpersonal.config import ConfigError
from fedpersonal.results import RunDirectory
from simulations.matrix.backends import Backend, make_backend
from simulations.matrix.collect import CellResult, read_cell
from simulations.matrix.plan import Cell
from simulations.matrix.plots import plot_matrix
from simulations.matrix.progress import Progress
from simulations.matrix.report import summary_rows, write_csv, write_markdown

MANIFEST = "matrix.json"
# Run-config keys that may differ between a finished cell and the same cell asked for again.
IGNORED_KEYS = {"results-dir", "resume"}


@dataclass
class Outcome:
    """What happened to one cell in this invocation."""

    cell: Cell
    status: str  # "ran", "resumed", "skipped" (finished earlier) or "failed"
    seconds: float = 0.0
    run_dir: Path | None = None
    error: str = ""


@dataclass
class MatrixReport:
    """A matrix's outcomes, the results read back from its run directories, and its report."""

    out: Path
    outcomes: list[Outcome]
    results: list[CellResult]
    rows: list[dict[str, Any]]  # docs/results.md benchmark rows plus "scenario", for write_benchmark
    plots: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        """Cells without a result."""
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    def runs(self) -> dict[tuple[str, str, int], RunDirectory]:
        """Every cell's run directory by (scenario, algorithm, seed), for scripts that read more than
        the report; raises naming the failed cells when there are any."""
        if self.failed:
            ends = "; ".join(
                f"{o.cell.name}: {o.error.strip().splitlines()[-1] if o.error.strip() else '?'}" for o in self.failed
            )
            raise RuntimeError(f"{len(self.failed)} cell(s) of {self.out} failed: {ends}")
        return {
            (o.cell.scenario, o.cell.algorithm, o.cell.seed): RunDirectory(o.run_dir)
            for o in self.outcomes
            if o.run_dir
        }

    @property
    def config(self) -> dict[str, Any]:
        """The matrix as a benchmark ``config``: every cell's overrides, by cell name."""
        return {"cells": {o.cell.name: dict(o.cell.keys) for o in self.outcomes}, "output": str(self.out)}


def requested_config(cell: Cell, cell_dir: Path) -> dict[str, Any]:
    """The cell's full, validated run config (every key, defaults filled in; task and strategy
    names checked against their registries)."""
    from simulations.registry import parse_run_config

    return parse_run_config({**cell.keys, "results-dir": str(cell_dir)}).to_dict()


def run_directory(cell_dir: Path) -> Path | None:
    """The cell's run directory (the folder holding a ``config.json``), if the cell started."""
    found = sorted(p.parent for p in cell_dir.glob("*/config.json"))
    if len(found) > 1:
        raise ConfigError(f"{cell_dir} holds {len(found)} run directories; expected one (delete the stale ones)")
    return found[0] if found else None


def config_changes(saved: Mapping[str, Any], requested: Mapping[str, Any], explicit: Mapping[str, Any]) -> list[str]:
    """Keys whose saved value differs from the requested one (keys a later version added count
    only when the cell sets them explicitly)."""
    keys = (set(saved) & set(requested)) | set(explicit)
    return sorted(k for k in keys - IGNORED_KEYS if saved.get(k) != requested.get(k))


def next_step(cell: Cell, cell_dir: Path) -> tuple[str, Path | None]:
    """What the cell needs: ``("skip", run_dir)`` when it finished with the same config,
    ``("resume", run_dir)`` when it stopped after a checkpoint or finished with fewer rounds,
    ``("run", None)`` otherwise. A ConfigError for a cell that finished with another config."""
    requested = requested_config(cell, cell_dir)
    run_dir = run_directory(cell_dir) if cell_dir.exists() else None
    if run_dir is None:
        return "run", None
    if (run_dir / "summary.json").is_file():
        rounds_done = json.loads((run_dir / "summary.json").read_text())["rounds"]
        saved = {**json.loads((run_dir / "config.json").read_text())["config"], "num-rounds": rounds_done}
        changed = config_changes(saved, requested, cell.keys)
        if not changed:
            return "skip", run_dir
        if changed != ["num-rounds"] or requested["num-rounds"] < saved["num-rounds"]:
            raise ConfigError(
                f"cell {cell.name} finished with different values for {changed} ({run_dir}); delete {cell_dir} "
                f"to run it again, or choose another output folder (only a larger num-rounds continues a cell)"
            )
    return ("resume", run_dir) if (run_dir / CHECKPOINT).is_file() else ("run", None)


def _attempt(cell: Cell, cell_dir: Path, backend: Backend, progress: Progress) -> Outcome:
    """Skip, resume or run ``cell``; exceptions propagate to the caller."""
    step, run_dir = next_step(cell, cell_dir)
    if step == "skip":
        return Outcome(cell, "skipped", 0.0, run_dir)
    keys = {**cell.keys, "results-dir": str(cell_dir)}
    if step == "resume":
        keys["resume"] = str(run_dir)
    else:
        shutil.rmtree(cell_dir, ignore_errors=True)  # a start without any finished round: begin again
    cell_dir.mkdir(parents=True, exist_ok=True)
    progress.started(cell.name, step)
    start = time.monotonic()
    backend.run(cell_dir, keys)
    run_dir = run_directory(cell_dir)
    if run_dir is None or not (run_dir / "summary.json").is_file():
        raise RuntimeError(f"the run of {cell.name} ended without writing summary.json under {cell_dir}")
    return Outcome(cell, "resumed" if step == "resume" else "ran", time.monotonic() - start, run_dir)


def run_cell(cell: Cell, out: Path, backend: Backend, progress: Progress) -> Outcome:
    """Skip, resume or run ``cell``; a failure is recorded (its traceback as error), never raised."""
    start = time.monotonic()
    try:
        return _attempt(cell, out / cell.name, backend, progress)
    except Exception:  # noqa: BLE001 - one cell's failure must not stop the matrix
        run_dir = run_directory(out / cell.name) if (out / cell.name).exists() else None
        return Outcome(cell, "failed", time.monotonic() - start, run_dir, traceback.format_exc())


def _report(outcome: Outcome, progress: Progress) -> None:
    last_error_line = outcome.error.strip().splitlines()[-1] if outcome.error.strip() else ""
    seconds = None if outcome.status == "skipped" else outcome.seconds
    progress.finished(outcome.cell.name, outcome.status, seconds, last_error_line)


def execute(cells: Sequence[Cell], out: Path, backend: Backend, progress: Progress) -> list[Outcome]:
    """Every cell in order, one at a time; a failing cell is recorded and skipped."""
    outcomes: list[Outcome] = []
    for cell in cells:
        outcome = run_cell(cell, out, backend, progress)
        outcomes.append(outcome)
        _write_manifest(out, outcomes, len(cells))
        _report(outcome, progress)
    return outcomes


_WORKER: dict[str, Any] = {}  # a worker process's backend and output folder


def _exit(signum: int, _frame: Any) -> None:
    sys.exit(128 + signum)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Inside the block a SIGTERM exits normally (``SystemExit(143)``), so ``finally`` blocks and a
    pool's ``terminate`` run and no worker outlives this process; the previous handler is restored."""
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_worker(
    backend: str, out: Path, timeout_s: float, client_cpus: int, client_gpus: float, threads: int
) -> None:
    """Initialise a worker process: its torch threads and its own backend (a Flower backend gets
    SuperLink homes of its own), closed when the worker exits, also when it is terminated."""
    import multiprocessing.util

    import torch

    signal.signal(signal.SIGTERM, _exit)  # exit normally, so the backend's finaliser runs
    torch.set_num_threads(threads)
    runner = make_backend(backend, out / f"worker-{os.getpid()}", timeout_s, client_cpus, client_gpus)
    multiprocessing.util.Finalize(None, runner.close, exitpriority=10)
    _WORKER.update(backend=runner, out=out)


def _run_in_worker(item: tuple[int, Cell]) -> tuple[int, Outcome]:
    index, cell = item
    return index, run_cell(cell, _WORKER["out"], _WORKER["backend"], Progress(1, write=lambda _: None))


def execute_parallel(
    cells: Sequence[Cell], out: Path, jobs: int, backend: str, progress: Progress, **backend_options: Any
) -> list[Outcome]:
    """Every cell in ``jobs`` worker processes (torch threads = cores // jobs each, at least 1); the
    outcomes in the cells' order, the manifest rewritten as each cell ends. When this process is
    interrupted or terminated (SIGTERM) the workers are terminated too (an interrupted cell resumes
    from its checkpoint on the next run)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    timeout_s = backend_options.get("timeout_s", 86400.0)
    resources = (backend_options.get("client_cpus", 1), backend_options.get("client_gpus", 0.0))
    options = (backend, out, timeout_s, *resources, threads)
    done: dict[int, Outcome] = {}
    with sigterm_as_exit():
        pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_start_worker, initargs=options)
        try:
            for index, outcome in pool.imap_unordered(_run_in_worker, list(enumerate(cells))):
                done[index] = outcome
                _write_manifest(out, [done[i] for i in sorted(done)], len(cells))
                _report(outcome, progress)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    return [done[index] for index in range(len(cells))]


def _write_manifest(out: Path, outcomes: Sequence[Outcome], total: int) -> None:
    payload = {
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cells_total": total,
        "cells": [
            {
                "name": o.cell.name,
                "scenario": o.cell.scenario,
                "algorithm": o.cell.algorithm,
                "seed": o.cell.seed,
                "keys": dict(o.cell.keys),
                "status": o.status,
                "seconds": round(o.seconds, 3),
                "run_dir": str(o.run_dir) if o.run_dir else None,
                "error": o.error,
            }
            for o in outcomes
        ],
    }
    temp = out / f"{MANIFEST}.tmp"
    temp.write_text(json.dumps(payload, indent=2) + "\n")
    temp.replace(out / MANIFEST)


def write_report(
    out: Path, outcomes: Sequence[Outcome], extra_metrics: Mapping[str, str] | None = None, command: str = ""
) -> MatrixReport:
    """Read the finished cells' run directories; write summary.md, summary.csv and the plots."""
    results = [read_cell(o.cell, o.run_dir, extra_metrics) for o in outcomes if o.status != "failed" and o.run_dir]
    rows = summary_rows(results)
    plots = plot_matrix(results, out) if results else []
    write_csv(rows, out / "summary.csv")
    failures = [(o.cell.name, o.error) for o in outcomes if o.status == "failed"]
    write_markdown(rows, out / "summary.md", plots, failures, command)
    return MatrixReport(Path(out), list(outcomes), results, rows, plots)


def run_matrix(
    cells: Sequence[Cell],
    out: str | Path,
    backend: str = "inprocess",
    extra_metrics: Mapping[str, str] | None = None,
    write: Callable[[str], None] = print,
    command: str = "",
    cell_timeout_s: float = 86400.0,
    client_cpus: int = 1,
    jobs: int = 1,
    client_gpus: float = 0.0,
) -> MatrixReport:
    """Run (or finish) every cell under ``out`` and write the report there.

    ``backend``: ``"inprocess"`` (:func:`simulations.inprocess.run_inprocess`, the default),
    ``"vectorized"`` (the same, each round's clients trained in lockstep: :mod:`simulations.vectorized`) or
    ``"flower"`` (``flwr run`` on a private SuperLink, at most ``cell_timeout_s`` per cell, each client
    reserving ``client_cpus`` CPUs: 1, the default, runs as many single-threaded clients at once as
    there are cores, the fastest setting measured by ``benchmarks/perf.py``, and ``client_gpus`` GPUs:
    a fraction shares a GPU, 0.25 runs four clients at once on each; docs/performance.md#gpus).
    ``extra_metrics``: metric name -> ``"lower"``/``"higher"``, reported next to each task's primary
    metric. ``write`` receives the progress lines. Every cell's config is validated before any runs.
    ``jobs`` > 1 runs cells in that many worker processes (:func:`execute_parallel`); each cell's
    results are the same as with one job (a cell's run depends only on its config and seed).
    """
    out = Path(out).expanduser().resolve()
    for cell in cells:
        next_step(cell, out / cell.name)  # bad keys and cells finished with another config stop here
        if backend == "vectorized":
            from simulations.registry import parse_run_config
            from simulations.vectorized import check_vectorized

            check_vectorized(parse_run_config(dict(cell.keys)))  # so do cells the backend cannot train
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(cells), write)
    if jobs > 1:
        outcomes = execute_parallel(
            cells, out, jobs, backend, progress, timeout_s=cell_timeout_s, client_cpus=client_cpus,
            client_gpus=client_gpus,
        )  # fmt: skip
    else:
        runner = make_backend(backend, out, cell_timeout_s, client_cpus, client_gpus)
        try:
            outcomes = execute(cells, out, runner, progress)
        finally:
            runner.close()
    return write_report(out, outcomes, extra_metrics, command)
