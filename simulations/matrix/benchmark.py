"""The command line a matrix benchmark shares (``--seeds``, ``--out``, ``--jobs``, ``--report-only``)
and its run: every cell, or with ``--report-only`` only the finished ones."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from simulations.matrix.plan import Cell
from simulations.matrix.runner import MatrixReport, next_step, run_matrix
from simulations.reporting import invocation


def matrix_parser(description: str, out: Path, seeds: Sequence[int] = (0, 1, 2)) -> argparse.ArgumentParser:
    """A parser with the shared options: ``--seeds``, ``--out`` (default ``out``), ``--jobs`` and
    ``--report-only``; a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (worker processes)")
    parser.add_argument("--report-only", action="store_true", help="report the finished cells; run nothing")
    return parser


def run_or_report(planned: Sequence[Cell], args: argparse.Namespace) -> MatrixReport:
    """Run ``planned`` under ``args.out``, ``args.jobs`` at a time on one torch thread each (two threads
    contend badly on a shared 2-core machine); with ``args.report_only`` only the cells that finished
    with their config are read, and nothing is trained."""
    torch.set_num_threads(1)
    if args.report_only:
        planned = [cell for cell in planned if next_step(cell, args.out.resolve() / cell.name)[0] == "skip"]
    return run_matrix(planned, args.out, command=invocation(), jobs=args.jobs)
