"""Simulation performance, side by side in one run.

(a) wall time of the default gaze scenario through Flower (`flwr run` on a private SuperLink,
    Ray backend) with Flower's default client resources (2 CPUs per client: one client at a time
    on 2 cores, torch with 2 threads) and with one CPU per client (as many single-threaded clients
    at once as cores), against a plain PyTorch loop doing the identical local training and
    aggregation on the same data (torch with every core), and against fedpersonal's in-process
    runner (the same ServerApp and ClientApp code without Flower's runtime and Ray); the plain loop
    and the in-process runner each run in a fresh process, so none reuses another's cached data;
    (b) Flower's fixed start-up cost and per-client-call overhead, from two tiny runs that differ
    only in the number of rounds; (c) client-rounds per second and the steady per-round time;
    (d) peak memory of all processes (PSS, so shared pages count once) vs the number of clients,
    with personal state (FedPer), 10 clients sampled per round and one CPU per client.

    python -m benchmarks.perf [--rounds 10] [--memory-clients 100 1000 10000] [--repeats 1]
                              [--device cpu|cuda|cuda:N --client-gpus 0.25]

Every runner trains on ``--device`` (run-config key ``device``; default ``cpu``); under ``flwr run``
each client then reserves ``--client-gpus`` GPUs (Flower's ``client-resources-num-gpus``, which a GPU
device needs: Ray hides the GPU from clients that reserve none). Results of a GPU run go to
``perf_cuda.{json,md}`` and their performance-record lines name the device, so they never mix with the
CPU measurements.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from statistics import median

import torch

from clients.base import round_generator
from fedpersonal.config import ConfigError, RunConfig, parse_config
from fedpersonal.device import resolve_device
from fedpersonal.results import RunDirectory
from fedpersonal.tasks import get_task
from fedpersonal.training import SGDSettings, sgd_optimizer, train_epochs
from simulations.inprocess import run_inprocess
from simulations.local_superlink import PrivateSuperLink, descendants
from simulations.reporting import RESULTS_DIR, result_payload, write_json_result

APP = Path(__file__).resolve().parents[1]
SAMPLED = 10


def plain_fedavg(cfg: RunConfig) -> dict:
    """FedAvg as a plain loop with the clients' exact training code: wall seconds, seconds of
    each round (training + evaluation), final error."""
    start = time.perf_counter()
    task = get_task(cfg.task, cfg)
    device = resolve_device(cfg)
    torch.manual_seed(cfg.seed)
    global_model = task.build_model().to(device)
    data = [task.client_data(pid).to(device) for pid in range(cfg.num_clients)]

    def evaluate() -> float:
        results = [(task.evaluate(global_model, d.test)[task.metric], d.num_test) for d in data]
        return sum(v * n for v, n in results) / sum(n for _, n in results)

    error = evaluate()
    round_s = []
    for server_round in range(1, cfg.num_rounds + 1):
        round_start = time.perf_counter()
        states, weights = [], []
        for pid, client in enumerate(data):
            model = task.build_model().to(device)
            model.load_state_dict(global_model.state_dict())
            optimizer = sgd_optimizer(model.parameters(), SGDSettings.from_config(cfg))
            generator = round_generator(cfg, pid, server_round)
            train_epochs(
                model, client.train, task.loss, optimizer, cfg.local_epochs, cfg.batch_size, generator, cfg.grad_clip
            )
            states.append(model.state_dict())
            weights.append(client.num_train)
        total = sum(weights)
        global_model.load_state_dict({k: sum(w * s[k] for w, s in zip(weights, states)) / total for k in states[0]})
        error = evaluate()
        round_s.append(time.perf_counter() - round_start)
    return {"wall_s": time.perf_counter() - start, "round_s": round_s, "final_error": error}


def inprocess_fedavg(cfg: RunConfig) -> dict:
    """The same run through fedpersonal's in-process runner (ServerApp and ClientApp code, no
    Flower runtime, no Ray)."""
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        run_dir, _ = run_inprocess({**cfg.to_dict(), "results-dir": results})
        wall = time.perf_counter() - start
        return {"wall_s": wall, "round_s": round_seconds(run_dir), "final_error": final_error(run_dir)}


def in_fresh_process(work: Callable[[RunConfig], dict], cfg: RunConfig) -> dict:
    """``work(cfg)`` in a new Python process: nothing cached by an earlier measurement."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(work, cfg).result()


def round_seconds(run_dir: RunDirectory) -> list[float]:
    """Seconds of each federated round (training + evaluation) from ``rounds.jsonl``."""
    times = [row["time-s"] for row in run_dir.read_rows("rounds.jsonl")]
    return [later - earlier for earlier, later in zip(times, times[1:])]


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


def flower_run(
    home: Path, clients: int, run_config: str, cpus: int, memory: bool = False, gpus: float = 0.0
) -> tuple[float, RunDirectory, int]:
    """One `flwr run` on a fresh private SuperLink with ``cpus`` (and ``gpus``) per client: (wall
    seconds of the run, its directory, peak PSS when ``memory``; sampling it costs CPU, so timing runs
    do not)."""
    results = home / "runs"
    with PrivateSuperLink(home, clients, num_cpus_per_client=cpus, num_gpus_per_client=gpus) as link:
        assert link.process is not None
        with PeakMemory(link.process.pid) if memory else nullcontext() as sampler:
            start = time.perf_counter()
            done = link.run(APP, f"{run_config} num-clients={clients} results-dir='{results}'", timeout=3600)
            wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"flwr run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (run_dir,) = results.iterdir()
    return wall, RunDirectory(run_dir), sampler.peak if memory else 0


def final_error(run_dir: RunDirectory) -> float:
    """The last round's global angular error."""
    return float(run_dir.read_rows("rounds.jsonl")[-1]["global-angular-error"])


def steady_round(result: dict) -> float:
    """Mean seconds of rounds 2..N (round 1 of a runner may still warm up)."""
    steady = result["round_s"][1:] or result["round_s"]
    return sum(steady) / len(steady)


def summarize(name: str, results: list[dict], plain: list[dict], client_rounds: int) -> dict:
    """A row of the default-scenario table: medians over the repeats; the ratio pairs each repeat
    with the plain loop's run of the same repeat."""
    walls = [r["wall_s"] for r in results]
    ratios = [r["wall_s"] / p["wall_s"] for r, p in zip(results, plain)]
    return {
        "runner": name,
        "repeats": len(results),
        "wall_s": median(walls),
        "wall_range_s": [min(walls), max(walls)],
        "ratio_to_plain": median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "steady_round_s": median(steady_round(r) for r in results),
        "client_rounds_per_s": client_rounds / median(walls),
        "final_error": results[0]["final_error"],
    }


def measure(
    rounds: int, memory_clients: list[int], scratch: Path, repeats: int = 1, device: str = "cpu", gpus: float = 0.0
) -> dict:
    """Every measurement of the benchmark, every runner training on ``device`` (``gpus`` per client
    under ``flwr run``); the default-scenario runners take turns ``repeats`` times (slow drifts of a
    shared machine then hit every runner alike)."""
    cfg = parse_config({"num-rounds": rounds, "device": device})
    run_flower = functools.partial(flower_run, gpus=gpus)
    on = f"device='{device}'"
    out: dict = {
        "device": describe(resolve_device(cfg)),
        "default_scenario": {"clients": cfg.num_clients, "rounds": rounds, "runners": []},
    }
    runs: dict[str, list[dict]] = {}
    for repeat in range(repeats):
        runs.setdefault("plain PyTorch loop", []).append(in_fresh_process(plain_fedavg, cfg))
        runs.setdefault("fedpersonal in-process runner", []).append(in_fresh_process(inprocess_fedavg, cfg))
        for cpus in (2, 1):
            wall, run_dir, _ = run_flower(
                scratch / f"a{cpus}-{repeat}", cfg.num_clients, f"num-rounds={rounds} {on}", cpus
            )
            runs.setdefault(f"flwr run, {cpus} CPU{'s' if cpus > 1 else ''} per client", []).append(
                {"wall_s": wall, "round_s": round_seconds(run_dir), "final_error": final_error(run_dir)}
            )
        print(
            f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in runs.items()),
            flush=True,
        )
    for name, results in runs.items():
        row = summarize(name, results, runs["plain PyTorch loop"], cfg.num_clients * rounds)
        out["default_scenario"]["runners"].append(row)
        print(row, flush=True)

    tiny = f"samples-per-client=4 local-epochs=1 {on}"
    short, _, _ = run_flower(scratch / "b1", 15, f"{tiny} num-rounds=1", cpus=2)
    long, _, _ = run_flower(scratch / "b2", 15, f"{tiny} num-rounds=6", cpus=2)
    calls_per_round = 2 * 15  # a train and an evaluate call per client
    per_call = (long - short) / (5 * calls_per_round)
    out["overhead"] = {
        "per_call_ms": 1000 * per_call,
        "startup_s": short - per_call * (15 + calls_per_round),  # round-0 evaluation + one round
        "wall_1_round_s": short,
        "wall_6_rounds_s": long,
    }
    print(out["overhead"], flush=True)

    out["memory"] = []
    for count in memory_clients:
        fraction = min(1.0, SAMPLED / count)
        config = (
            f"strategy='fedper' num-rounds=3 samples-per-client=50 local-epochs=1 "
            f"fraction-train={fraction} fraction-evaluate={fraction} {on}"
        )
        wall, _, peak = run_flower(scratch / f"d{count}", count, config, cpus=1, memory=True)
        out["memory"].append(
            {"clients": count, "sampled_per_round": SAMPLED, "peak_pss_gib": peak / 2**30, "wall_s": wall}
        )
        print(out["memory"][-1], flush=True)
    return out


def describe(device: torch.device) -> str:
    """``cpu``, or a GPU device with its name (``cuda: NVIDIA H200``)."""
    return "cpu" if device.type != "cuda" else f"{device.type}: {torch.cuda.get_device_name(device)}"


def markdown(result: dict) -> str:
    """The README tables."""
    a, b = result["default_scenario"], result["overhead"]
    device = result.get("device", "cpu")
    lines = [
        f"Default gaze scenario ({a['clients']} clients, {a['rounds']} rounds, FedAvg), "
        f"every runner on the same machine, training on {device}; "
        f"medians of {a['runners'][0]['repeats']} repeat(s) taken in turns (range in brackets):",
        "",
        "| runner | wall | ratio to the plain loop | steady round | client-rounds/s | final global error |",
        "|---|---|---|---|---|---|",
    ]
    for row in a["runners"]:
        wall, ratio = f"{row['wall_s']:.1f} s", f"{row['ratio_to_plain']:.3f}"
        if row["repeats"] > 1:
            wall += " ({:.0f}-{:.0f})".format(*row["wall_range_s"])
            ratio += " ({:.2f}-{:.2f})".format(*row["ratio_range"])
        lines.append(
            f"| {row['runner']} | {wall} | {ratio} | {row['steady_round_s']:.1f} s "
            f"| {row['client_rounds_per_s']:.2f} | {row['final_error']:.3f}° |"
        )
    lines += [
        "",
        "| measurement | value |",
        "|---|---|",
        f"| Flower fixed start-up and shut-down cost (tiny data) | {b['startup_s']:.1f} s |",
        f"| Flower per-client-call overhead (tiny data, 2 CPUs per client) | {b['per_call_ms']:.0f} ms |",
    ]
    for row in result["memory"]:
        lines.append(
            f"| peak memory, {row['clients']} clients (FedPer state, {row['sampled_per_round']} sampled/round, "
            f"1 CPU per client) | {row['peak_pss_gib']:.2f} GiB ({row['wall_s']:.0f} s) |"
        )
    return "\n".join(lines)


HISTORY = RESULTS_DIR / "perf_history.jsonl"  # the performance record: one line per measurement


def git_commit() -> str:
    """The commit of the working tree being measured (with ``-dirty`` when it has changes)."""
    root = RESULTS_DIR.parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def record_base(payload: dict, device: str) -> dict:
    """What every performance-record line of a benchmark result ``payload`` shares: the commit measured,
    the payload's ``created`` and ``machine``, and the device trained on."""
    return {"commit": git_commit(), "created": payload["created"], "machine": payload["machine"], "device": device}


def record_lines(result: dict, commit: str, created: str, machine: dict) -> list[dict]:
    """The measurements of one perf run as performance-record lines: ``measurement``, ``value``,
    ``unit`` plus the commit, the date, the machine (cores, RAM, torch, flwr) and the device trained
    on."""
    device = result.get("device", "cpu")
    base = {"commit": commit, "created": created, "machine": machine, "device": device}
    lines = []
    for row in result["default_scenario"]["runners"]:
        lines.append({**base, "measurement": f"ratio to plain loop: {row['runner']}", "value": row["ratio_to_plain"],
                      "unit": "x"})  # fmt: skip
        lines.append({**base, "measurement": f"wall: {row['runner']}", "value": row["wall_s"], "unit": "s"})
    overhead = result["overhead"]
    lines.append({**base, "measurement": "flwr run start-up", "value": overhead["startup_s"], "unit": "s"})
    lines.append({**base, "measurement": "flwr per-call overhead", "value": overhead["per_call_ms"], "unit": "ms"})
    for row in result["memory"]:
        lines.append({**base, "measurement": f"peak memory, {row['clients']} clients", "value": row["peak_pss_gib"],
                      "unit": "GiB"})  # fmt: skip
    return lines


def row_name(line: dict) -> str:
    """A record line's row in the history table: its measurement, with the device when that is not the
    CPU (``wall: ... [cuda: NVIDIA H200]``), so GPU numbers never share a row with CPU ones."""
    device = line.get("device", "cpu")
    return line["measurement"] + ("" if device == "cpu" else f" [{device}]")


def history_table(lines: list[dict]) -> str:
    """Markdown: one row per measurement, one column per recorded commit (oldest first)."""
    commits = list(dict.fromkeys((line["commit"], line["created"][:10]) for line in lines))
    values = {(row_name(line), line["commit"]): f"{line['value']:.3g} {line['unit']}" for line in lines}
    measurements = list(dict.fromkeys(row_name(line) for line in lines))
    header = "| measurement | " + " | ".join(f"{commit[:8]} ({date})" for commit, date in commits) + " |"
    rows = [header, "|---" * (len(commits) + 1) + "|"]
    for name in measurements:
        rows.append(f"| {name} | " + " | ".join(values.get((name, commit), "-") for commit, _ in commits) + " |")
    return "\n".join(rows)


def append_history(lines: list[dict], target: Path = HISTORY) -> None:
    """Append the lines to the performance record."""
    with open(target, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)


def read_history(target: Path = HISTORY) -> list[dict]:
    """Every line of the performance record."""
    return [json.loads(line) for line in target.read_text().splitlines() if line.strip()] if target.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", action="store_true", help="print the performance record as a table; run nothing")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--memory-clients", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=1, help="times each default-scenario runner runs, in turns")
    parser.add_argument("--device", default="cpu", help="run-config key device of every run: cpu, cuda, cuda:N, auto")
    parser.add_argument(
        "--client-gpus", type=float, default=0.0, help="GPUs per client under flwr run (0.25: four clients per GPU)"
    )
    args = parser.parse_args()
    if args.history:
        print(history_table(read_history()))
        return
    try:
        device = resolve_device(parse_config({"device": args.device}))  # a GPU this machine lacks stops here
    except ConfigError as error:
        parser.error(str(error))
    if device.type == "cuda" and not args.client_gpus:
        parser.error("--device on a GPU needs --client-gpus > 0 (under Ray a client reserving no GPU sees none)")
    with tempfile.TemporaryDirectory(prefix="fedpersonal-perf-") as scratch:
        result = measure(args.rounds, args.memory_clients, Path(scratch), args.repeats, args.device, args.client_gpus)
    payload = result_payload("perf", config=vars(args), results=result)
    write_json_result("perf" if device.type == "cpu" else f"perf_{device.type}", payload, markdown(result))
    append_history(record_lines(result, git_commit(), payload["created"], payload["machine"]))


if __name__ == "__main__":
    main()
