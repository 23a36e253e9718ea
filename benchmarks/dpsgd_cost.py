"""What sample-level DP-SGD (section dpsgd, Opacus) costs: time per local step and a small gaze run.

    python -m benchmarks.dpsgd_cost [--rounds 10] [--repeats 20]

* **Step time**: one local SGD step of the gaze LeNet on a batch of synthetic eye images, plain
  (``train_epochs``' step) against DP-SGD (Opacus's per-example gradients, clipping and noise), on one
  thread, at batch sizes 16 and 64, alternating; the median of ``--repeats`` steps after 3 warm-up steps.
* **A small run**: FedAvg on the synthetic gaze task, 3 clients of 60 samples (48 to train), batch 16,
  1 local epoch, ``--rounds`` rounds, in process: non-private, DP-SGD with noise multiplier 1.0, and
  DP-SGD with a target epsilon of 8 after the run (Opacus picks the noise); the last round's
  ``dpsgd-epsilon-max`` at delta 1e-5 (RDP accountant) and global angular error.

Needs the optional extra: ``pip install "fedpersonal[opacus]"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from fedpersonal.models.lenet import GazeLeNet
from fedpersonal.privacy.opacus_sgd import private_sgd
from simulations.inprocess import run_inprocess
from simulations.reporting import result_payload, write_json_result

NAME = "dpsgd_cost"
SMALL = {"task": "gaze", "num-clients": 3, "samples-per-client": 60, "local-epochs": 1, "batch-size": 16}
VARIANTS: dict[str, dict[str, Any]] = {
    "non-private": {},
    "dpsgd z=1.0": {"dpsgd.enabled": True, "dpsgd.noise-multiplier": 1.0},
    "dpsgd target eps 8": {"dpsgd.enabled": True, "dpsgd.target-epsilon": 8.0},
}


def step_times(batch_size: int, repeats: int) -> tuple[float, float]:
    """Median milliseconds of one local step (forward, backward, optimizer step), plain and DP-SGD,
    measured alternately (the same load on both)."""
    torch.manual_seed(0)
    images, pose, target = torch.rand(batch_size, 1, 36, 60), torch.rand(batch_size, 2), torch.rand(batch_size, 2)
    plain_model, private_model = GazeLeNet(), GazeLeNet()
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9)
    optimizer = torch.optim.SGD(private_model.parameters(), lr=0.01, momentum=0.9)
    times: dict[bool, list[float]] = {False: [], True: []}
    with private_sgd(private_model, optimizer, 1.0, 1.0, batch_size) as (wrapped, private_optimizer):
        for index in range(repeats + 3):
            for private, net, opt in ((False, plain_model, plain_optimizer), (True, wrapped, private_optimizer)):
                start = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                torch.mean((net(images, pose) - target) ** 2).backward()
                opt.step()
                if index >= 3:
                    times[private].append(time.perf_counter() - start)
    return 1000 * statistics.median(times[False]), 1000 * statistics.median(times[True])


def small_run(rounds: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The last round row of the small run with ``extra`` keys, and its wall time."""
    with tempfile.TemporaryDirectory() as results:
        start = time.monotonic()
        run_dir, _ = run_inprocess({**SMALL, "num-rounds": rounds, "results-dir": results, **extra})
        wall = time.monotonic() - start
        last = run_dir.read_rows("rounds.jsonl")[-1]
    return {"wall-s": round(wall, 1), **last}


def markdown(steps: list[dict[str, Any]], runs: list[dict[str, Any]], rounds: int, load: float) -> str:
    """The two tables: step times, and the small runs."""
    lines = ["| batch | plain step (ms) | DP-SGD step (ms) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['plain_ms']:.1f} | {r['dpsgd_ms']:.1f} | {r['ratio']:.2f} |" for r in steps]
    lines += ["", f"| run ({rounds} rounds) | dpsgd-epsilon-max | noise multiplier | global angular error | wall (s) |"]
    lines += ["|---|---|---|---|---|"]
    for r in runs:
        eps = f"{r['epsilon']:.3f}" if r["epsilon"] is not None else "-"
        noise = f"{r['noise_multiplier']:.3f}" if r["noise_multiplier"] is not None else "-"
        lines.append(f"| {r['variant']} | {eps} | {noise} | {r['angular_error']:.2f} | {r['wall_s']:.0f} |")
    lines += [
        "",
        f"Step times on one thread, median of the repeats, plain and DP-SGD steps alternating (load average "
        f"{load:.1f} on {os.cpu_count()} cores after measuring). Epsilon: the largest client's at delta 1e-5 (RDP "
        "accountant) after the last round; every client trains in every round (3 Poisson-sampled steps an epoch, "
        "q = 16 / 48).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = []
    for batch_size in (16, 64):
        plain, private = step_times(batch_size, args.repeats)
        steps.append({"batch": batch_size, "plain_ms": plain, "dpsgd_ms": private, "ratio": private / plain})
    load = os.getloadavg()[0]
    torch.set_num_threads(threads)
    runs = []
    for name, extra in VARIANTS.items():
        last = small_run(args.rounds, extra)
        runs.append({
            "variant": name, "rounds": last["round"], "wall_s": last["wall-s"],
            "epsilon": last.get("dpsgd-epsilon-max"), "noise_multiplier": last.get("dpsgd-noise-multiplier"),
            "angular_error": last["global-angular-error"],
        })  # fmt: skip
    payload = result_payload(NAME, config={**SMALL, "rounds": args.rounds}, variants=VARIANTS, steps=steps,
                             load_average=load, runs=runs)  # fmt: skip
    body = markdown(steps, runs, args.rounds, load)
    write_json_result(NAME, payload, body)
    print(body)


if __name__ == "__main__":
    main()
