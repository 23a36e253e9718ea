"""What an adaptive server optimizer's state says at a checkpoint: per layer, its second moment
against ``tau`` and the effective server learning rate that gives.

FedAdam, FedYogi and FedAdagrad move each coordinate by ``eta_t m / (sqrt(v) + tau)``. While the
pseudo-gradients are large, ``sqrt(v)`` sets the step and every coordinate moves by about ``eta_t``.
Once they have become small, ``sqrt(v)`` falls below ``tau`` and ``tau`` sets it: the optimizer acts
as server SGD with momentum on the averaged update at a learning rate of up to ``eta_t / tau`` (100
for eta = 0.1, tau = 1e-3), so a small ``tau`` lets late, small updates be amplified::

    python -m benchmarks.adaptive_state RUN_DIR [RUN_DIR ...] --name gaze_fedadam_state

Each ``RUN_DIR`` holds a run's ``checkpoint.pt`` (a run folder, or a matrix cell folder whose run
folder is taken). Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.checkpoint import CHECKPOINT, load_checkpoint
from simulations.matrix.runner import run_directory
from simulations.reporting import result_payload, write_json_result
from strategies.server_optimizers import step_lr

COLUMNS = {
    "layer": "layer",
    "coordinates": "coordinates",
    "sqrt_v_median": "median sqrt(v)",
    "below_tau": "share with sqrt(v) < tau",
    "effective_lr_median": "median eta_t / (sqrt(v) + tau)",
    "effective_lr_cap": "eta_t / tau",
    "step_median": "median |step|",
    "weight_median": "median |weight|",
}


def layer_rows(strategy_state: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stepped layer (and ``all``) of a :class:`strategies.fedopt.PseudoGradientFedAvg`
    ``state_dict()`` whose optimizer is a ``ReddiAdaptive``: medians of ``sqrt(v)``, of the effective
    learning rate ``eta_t / (sqrt(v) + tau)`` and of the step ``|eta_t m / (sqrt(v) + tau)|``, and the
    share of coordinates where ``tau`` outweighs ``sqrt(v)``."""
    optimizer = strategy_state["optimizer"]
    (group,) = optimizer["param_groups"]
    if "tau" not in group:
        raise ValueError(f"the server optimizer has no tau (settings {sorted(group)}): not FedAdam/FedYogi/FedAdagrad")
    tau = group["tau"]
    per_layer: dict[str, dict[str, torch.Tensor]] = {}
    eta_t = 0.0
    for index, name in zip(group["params"], strategy_state["keys"]):
        state = optimizer["state"][index]
        eta_t = step_lr(group, int(state["step"]))
        root = state["v"].double().sqrt()
        effective = eta_t / (root + tau)
        per_layer[name] = {"root": root.flatten(), "effective": effective.flatten(),
                           "step": (state["m"].double().abs() * effective).flatten()}  # fmt: skip
    per_layer["all"] = {
        key: torch.cat([layer[key] for layer in per_layer.values()]) for key in ("root", "effective", "step")
    }
    return [
        {
            "layer": name,
            "coordinates": layer["root"].numel(),
            "sqrt_v_median": float(np.median(layer["root"].numpy())),
            "below_tau": float((layer["root"] < tau).double().mean()),
            "effective_lr_median": float(np.median(layer["effective"].numpy())),
            "effective_lr_cap": eta_t / tau,
            "step_median": float(np.median(layer["step"].numpy())),
        }
        for name, layer in per_layer.items()
    ]


def checkpoint_report(path: Path) -> dict[str, Any]:
    """The round, optimizer settings and :func:`layer_rows` of the checkpoint under ``path``, with
    each layer's median absolute global weight."""
    run_dir = path if (path / CHECKPOINT).is_file() else run_directory(path)
    if run_dir is None or not (run_dir / CHECKPOINT).is_file():
        raise SystemExit(f"{path}: no {CHECKPOINT} there or in its run folder")
    checkpoint = load_checkpoint(run_dir)
    rows = layer_rows(checkpoint["strategy"])
    model = checkpoint["model"]
    for row in rows:
        weights = torch.cat([w.flatten() for w in model.values()]) if row["layer"] == "all" else model[row["layer"]]
        row["weight_median"] = float(np.median(weights.double().abs().numpy()))
    (group,) = checkpoint["strategy"]["optimizer"]["param_groups"]
    settings = {key: value for key, value in group.items() if key != "params"}
    return {"path": str(path), "round": checkpoint["round"], "settings": settings, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    """One checkpoint's rows as a Markdown table under its round and settings."""
    settings = ", ".join(f"{key} {value}" for key, value in report["settings"].items())
    lines = [f"Round {report['round']} ({report['path']}; {settings}):", "",
             "| " + " | ".join(COLUMNS.values()) + " |", "|---" * len(COLUMNS) + "|"]  # fmt: skip
    for row in report["rows"]:
        cells = [str(row[key]) if key in ("layer", "coordinates") else f"{row[key]:.3g}" for key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders (or matrix cell folders) with a checkpoint")
    parser.add_argument("--name", default="adaptive_state", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    reports = [checkpoint_report(path) for path in args.run_dirs]
    body = "\n\n".join(markdown(report) for report in reports)
    write_json_result(args.name, result_payload(args.name, checkpoints=reports), body)
    print(body)


if __name__ == "__main__":
    main()
