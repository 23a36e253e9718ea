"""Sequential vs vectorized clients: the default gaze scenario both ways, wall time and difference.

    python -m benchmarks.vectorized [--rounds 10] [--device cpu]

The default gaze scenario (15 clients, 10 rounds, FedAvg) through the in-process runner, once with
the clients trained one after another and once with the vectorized clients backend
(:mod:`simulations.vectorized`), each in a fresh process. Reports both walls, the speed-up
(sequential / vectorized), the largest absolute difference of the final global weights and of the
per-round metrics, and the load average of the machine when it started (other work slows both).
Writes benchmarks/results/vectorized.{json,md} (``vectorized_cuda`` when the device, ``auto`` resolved,
is a GPU) and appends the speed-up to the performance record.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

import torch

from benchmarks.perf import append_history, describe, final_error, in_fresh_process, record_base, round_seconds
from fedpersonal.config import RunConfig, parse_config
from fedpersonal.device import resolve_device
from simulations.inprocess import run_inprocess
from simulations.reporting import result_payload, write_json_result


def timed_run(cfg: RunConfig, vectorized: bool) -> dict:
    """One in-process run of ``cfg``: its wall seconds, seconds per round, final error, final
    weights and per-round rows."""
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        run_dir, _ = run_inprocess({**cfg.to_dict(), "results-dir": results}, vectorized=vectorized)
        wall = time.perf_counter() - start
        return {
            "wall_s": wall,
            "round_s": round_seconds(run_dir),
            "final_error": final_error(run_dir),
            "weights": torch.load(run_dir.path / "model.pt"),
            "rounds": run_dir.read_rows("rounds.jsonl"),
        }


def max_differences(first: dict, second: dict) -> tuple[float, float]:
    """The largest absolute difference of the final weights and of any numeric per-round metric
    (``time-s`` aside)."""
    weights = max(float((first["weights"][k] - second["weights"][k]).abs().max()) for k in first["weights"])
    metrics = max(
        abs(one[key] - other[key])
        for one, other in zip(first["rounds"], second["rounds"], strict=True)
        for key in one
        if key != "time-s" and isinstance(one[key], int | float)
    )
    return weights, metrics


def main(argv: list[str] | None = None) -> None:
    """Run the scenario both ways; write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="run-config key device of both runs: cpu, cuda, auto")
    args = parser.parse_args(argv)
    cfg = parse_config({"num-rounds": args.rounds, "device": args.device})
    device = describe(resolve_device(cfg))  # what "auto" became here: the result's name and text say it
    load = os.getloadavg()
    sequential = in_fresh_process(functools.partial(timed_run, vectorized=False), cfg)
    vectorized = in_fresh_process(functools.partial(timed_run, vectorized=True), cfg)
    weights, metrics = max_differences(sequential, vectorized)
    speedup = sequential["wall_s"] / vectorized["wall_s"]
    steady = [sum(run["round_s"][1:]) / max(len(run["round_s"]) - 1, 1) for run in (sequential, vectorized)]
    result = {
        "scenario": f"gaze default: 15 clients, {args.rounds} rounds, fedavg, device {device}",
        "sequential_s": sequential["wall_s"],
        "vectorized_s": vectorized["wall_s"],
        "speedup": speedup,
        "steady_round_s": {"sequential": steady[0], "vectorized": steady[1]},
        "final_error": {"sequential": sequential["final_error"], "vectorized": vectorized["final_error"]},
        "max_abs_diff_weights": weights,
        "max_abs_diff_round_metrics": metrics,
        "load_average_at_start": list(load),
    }
    body = (
        f"Default gaze scenario (15 clients, {args.rounds} rounds, FedAvg) on `{device}`, in-process runner.\n\n"
        "| clients trained | wall (s) | steady round (s) | final global error |\n|---|---|---|---|\n"
        f"| one after another | {sequential['wall_s']:.1f} | {steady[0]:.2f} | {sequential['final_error']:.4f} |\n"
        f"| vectorized (torch.func) | {vectorized['wall_s']:.1f} | {steady[1]:.2f} | "
        f"{vectorized['final_error']:.4f} |\n\n"
        f"Speed-up (sequential / vectorized): {speedup:.2f}x. Largest absolute difference: final weights "
        f"{weights:.2e}, per-round metrics {metrics:.2e}. Load average when it started: "
        f"{', '.join(f'{value:.2f}' for value in load)} (other work on the machine slows both runs)."
    )
    name = "vectorized" if device == "cpu" else "vectorized_cuda"  # a GPU run keeps the CPU record
    payload = result_payload(name, **result)
    write_json_result(name, payload, body)
    append_history([{**record_base(payload, device),
                     "measurement": f"vectorized clients speed-up (sequential / vectorized wall), {args.rounds} "
                                    "rounds", "value": speedup, "unit": "x"}])  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
