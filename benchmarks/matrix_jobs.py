"""Grids that use every core: the same 6-cell grid with ``--jobs 1`` and ``--jobs N``.

    python -m benchmarks.matrix_jobs [--jobs 2] [--cells 6]

The default gaze scenario (15 users, 10 rounds, FedAvg) with seeds 0..cells-1, through the matrix
runner's in-process backend, once sequentially and once with ``--jobs`` worker processes (each cell
with the torch threads divided among the workers), in fresh output folders. Reports both walls, their
ratio (target: <= 0.6 on 2 cores with ``--jobs 2``) and whether every cell's result rows are equal.
Writes benchmarks/results/matrix_jobs.{json,md} and appends the ratio to the performance record.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.perf import append_history, record_base
from simulations.matrix import Variant, plan_cells, run_matrix
from simulations.reporting import result_payload, write_json_result

TARGET = 0.6


def timed_grid(cells: list, out: Path, jobs: int) -> tuple[float, list[dict]]:
    """Wall seconds of the grid and its result rows."""
    start = time.perf_counter()
    report = run_matrix(cells, out, jobs=jobs)
    return time.perf_counter() - start, [dict(row) for row in report.rows]


def main(argv: list[str] | None = None) -> None:
    """Run the grid both ways; write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cells", type=int, default=6)
    args = parser.parse_args(argv)
    cells = plan_cells([Variant("gaze-default", {})], [Variant("fedavg", {"strategy": "fedavg"})],
                       list(range(args.cells)))  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        sequential, rows_one = timed_grid(cells, Path(scratch) / "jobs1", 1)
        parallel, rows_many = timed_grid(cells, Path(scratch) / f"jobs{args.jobs}", args.jobs)
    ratio = parallel / sequential
    result = {"cells": args.cells, "jobs": args.jobs, "sequential_s": sequential, "parallel_s": parallel,
              "ratio": ratio, "target": TARGET, "rows_equal": rows_one == rows_many}  # fmt: skip
    body = (
        f"| grid | wall (s) |\n|---|---|\n| {args.cells} cells, `--jobs 1` | {sequential:.0f} |\n"
        f"| {args.cells} cells, `--jobs {args.jobs}` | {parallel:.0f} |\n\n"
        f"Ratio {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'not met'}); every cell's rows "
        f"equal: {result['rows_equal']}."
    )
    payload = result_payload("matrix_jobs", **result)
    write_json_result("matrix_jobs", payload, body)
    measurement = f"matrix --jobs {args.jobs} / --jobs 1 wall, {args.cells} cells"
    append_history([{**record_base(payload, "cpu"), "measurement": measurement, "value": ratio, "unit": "x"}])
    print(body)


if __name__ == "__main__":
    main()
