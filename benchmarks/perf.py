"""Simulation performance, side by side in one run.

(a) wall time of the default gaze scenario through Flower (`flwr run` on a private SuperLink,
    Ray backend) vs a plain PyTorch loop doing the identical local training and aggregation on
    the same data; (b) Flower's fixed start-up cost and per-client-call overhead, from two tiny
    runs that differ only in the number of rounds; (c) client-rounds per second; (d) peak memory
    of all processes (PSS, so shared pages count once) vs the number of clients, with personal
    state (FedPer) and 10 clients sampled per round.

    python benchmarks/perf.py [--rounds 10] [--memory-clients 100 1000 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.base import round_generator  # noqa: E402
from fedpersonal.config import RunConfig, parse_config  # noqa: E402
from fedpersonal.results import RunDirectory  # noqa: E402
from fedpersonal.tasks import get_task  # noqa: E402
from fedpersonal.training import sgd_optimizer, train_epochs  # noqa: E402
from simulations.local_superlink import PrivateSuperLink, descendants  # noqa: E402
from simulations.reporting import invocation, machine_info, write_json_result  # noqa: E402

APP = Path(__file__).resolve().parents[1]
SAMPLED = 10


def plain_fedavg(cfg: RunConfig) -> tuple[float, float]:
    """FedAvg as a plain loop with the clients' exact training code; (wall seconds, final error)."""
    start = time.perf_counter()
    task = get_task(cfg.task, cfg)
    torch.manual_seed(cfg.seed)
    global_model = task.build_model()
    data = [task.client_data(cfg, pid) for pid in range(cfg.num_clients)]

    def evaluate() -> float:
        results = [(task.evaluate(global_model, d.test)[task.metric], d.num_test) for d in data]
        return sum(v * n for v, n in results) / sum(n for _, n in results)

    error = evaluate()
    for server_round in range(1, cfg.num_rounds + 1):
        states, weights = [], []
        for pid, client in enumerate(data):
            model = task.build_model()
            model.load_state_dict(global_model.state_dict())
            optimizer = sgd_optimizer(model.parameters(), cfg)
            generator = round_generator(cfg, pid, server_round)
            train_epochs(model, client.train, task.loss, optimizer, cfg.local_epochs, cfg.batch_size, generator, cfg.grad_clip)
            states.append(model.state_dict())
            weights.append(client.num_train)
        total = sum(weights)
        global_model.load_state_dict({k: sum(w * s[k] for w, s in zip(weights, states)) / total for k in states[0]})
        error = evaluate()
    return time.perf_counter() - start, error


def pss_bytes(pids: list[int]) -> int:
    """Summed proportional set size of ``pids`` (processes that vanished count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class PeakMemory:
    """Samples the PSS of a process tree every 0.5 s; ``peak`` holds the maximum seen."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid, self.peak, self._stop = root_pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_bytes([self.root_pid, *descendants(self.root_pid)]))
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def flower_run(home: Path, clients: int, run_config: str, cpus: int = 2) -> tuple[float, RunDirectory, int]:
    """One `flwr run` on a fresh private SuperLink: (wall seconds of the run, its directory, peak PSS)."""
    results = home / "runs"
    with PrivateSuperLink(home, num_supernodes=clients, num_cpus_per_client=cpus) as link:
        assert link.process is not None
        with PeakMemory(link.process.pid) as memory:
            start = time.perf_counter()
            done = link.run(APP, f"{run_config} num-clients={clients} results-dir='{results}'", timeout=3600)
            wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"flwr run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (run_dir,) = results.iterdir()
    return wall, RunDirectory(run_dir), memory.peak


def final_error(run_dir: RunDirectory) -> float:
    """The last round's global angular error."""
    return float(run_dir.read_rows("rounds.jsonl")[-1]["global-angular-error"])


def measure(rounds: int, memory_clients: list[int], scratch: Path) -> dict:
    """Every measurement of the benchmark."""
    cfg = parse_config({"num-rounds": rounds})
    out: dict = {}

    flower_wall, run_dir, _ = flower_run(scratch / "a", cfg.num_clients, f"num-rounds={rounds}")
    plain_wall, plain_error = plain_fedavg(cfg)
    client_rounds = cfg.num_clients * rounds
    out["default_scenario"] = {
        "clients": cfg.num_clients, "rounds": rounds,
        "flower_wall_s": flower_wall, "plain_wall_s": plain_wall, "ratio": flower_wall / plain_wall,
        "flower_final_error": final_error(run_dir), "plain_final_error": plain_error,
        "flower_client_rounds_per_s": client_rounds / flower_wall, "plain_client_rounds_per_s": client_rounds / plain_wall,
    }
    print(out["default_scenario"], flush=True)

    tiny = "samples-per-client=4 local-epochs=1"
    short, _, _ = flower_run(scratch / "b1", 15, f"{tiny} num-rounds=1")
    long, _, _ = flower_run(scratch / "b2", 15, f"{tiny} num-rounds=6")
    calls_per_round = 2 * 15  # a train and an evaluate call per client
    per_call = (long - short) / (5 * calls_per_round)
    out["overhead"] = {
        "per_call_ms": 1000 * per_call,
        "startup_s": short - per_call * (15 + calls_per_round),  # round-0 evaluation + one round
        "wall_1_round_s": short, "wall_6_rounds_s": long,
    }
    print(out["overhead"], flush=True)

    out["memory"] = []
    for count in memory_clients:
        fraction = min(1.0, SAMPLED / count)
        config = (f"strategy='fedper' num-rounds=3 samples-per-client=50 local-epochs=1 "
                  f"fraction-train={fraction} fraction-evaluate={fraction}")
        wall, _, peak = flower_run(scratch / f"d{count}", count, config)
        out["memory"].append({"clients": count, "sampled_per_round": SAMPLED, "peak_pss_gib": peak / 2**30, "wall_s": wall})
        print(out["memory"][-1], flush=True)
    return out


def markdown(result: dict) -> str:
    """The README table."""
    a, b = result["default_scenario"], result["overhead"]
    lines = [
        "| measurement | value |",
        "|---|---|",
        f"| default gaze scenario ({a['clients']} clients, {a['rounds']} rounds): Flower wall | {a['flower_wall_s']:.1f} s |",
        f"| same training and aggregation as a plain PyTorch loop | {a['plain_wall_s']:.1f} s |",
        f"| ratio Flower / plain loop (target <= 1.15) | {a['ratio']:.3f} |",
        f"| final global error: Flower / plain loop | {a['flower_final_error']:.3f}° / {a['plain_final_error']:.3f}° |",
        f"| client-rounds per second: Flower / plain loop | {a['flower_client_rounds_per_s']:.2f} / {a['plain_client_rounds_per_s']:.2f} |",
        f"| Flower fixed start-up cost | {b['startup_s']:.1f} s |",
        f"| Flower per-client-call overhead | {b['per_call_ms']:.0f} ms |",
    ]
    for row in result["memory"]:
        lines.append(
            f"| peak memory, {row['clients']} clients (FedPer state, {row['sampled_per_round']} sampled/round) "
            f"| {row['peak_pss_gib']:.2f} GiB ({row['wall_s']:.0f} s) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--memory-clients", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedpersonal-perf-") as scratch:
        result = measure(args.rounds, args.memory_clients, Path(scratch))
    payload = {"name": "perf", "command": invocation(), "machine": machine_info(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": vars(args), "results": result}
    write_json_result("perf", payload, markdown(result))


if __name__ == "__main__":
    main()
