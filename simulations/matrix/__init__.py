"""Compare strategies: run a matrix of scenarios x algorithms x seeds and report it.

Command line (see ``python -m simulations.matrix --help``)::

    python -m simulations.matrix --scenarios simulations/scenarios/gaze_fedavg.toml \
        --strategies fedavg fedadam --seeds 0 1 2 --set num-rounds=5 --out runs/matrix-demo

Python API, e.g. for a benchmark script::

    from simulations.matrix import algorithm, plan_cells, run_matrix, scenario
    from simulations.reporting import invocation, write_benchmark

    cells = plan_cells([scenario("simulations/scenarios/gaze_fedavg.toml")],
                       [algorithm("fedavg"), algorithm("fedadam")], seeds=[0, 1, 2],
                       overrides={"num-rounds": 5})
    report = run_matrix(cells, "runs/matrix-demo")
    write_benchmark("my_comparison", invocation(), report.config, report.rows)
"""

from simulations.matrix.collect import CellProgress, CellResult, MetricValues, read_cell, read_progress
from simulations.matrix.plan import Cell, Variant, algorithm, parse_assignments, plan_cells, scenario
from simulations.matrix.plots import plot_matrix
from simulations.matrix.runner import MatrixReport, Outcome, run_matrix, write_report

__all__ = [
    "Cell",
    "CellProgress",
    "CellResult",
    "MatrixReport",
    "MetricValues",
    "Outcome",
    "Variant",
    "algorithm",
    "parse_assignments",
    "plan_cells",
    "plot_matrix",
    "read_cell",
    "read_progress",
    "run_matrix",
    "scenario",
    "write_report",
]
