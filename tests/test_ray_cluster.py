"""Runs on a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster on 127.0.0.2)."""

import json
from pathlib import Path

import pytest

from simulations.local_superlink import PrivateSuperLink
from simulations.ray_cluster import local_cluster

APP = Path(__file__).resolve().parents[1]
CONFIG = "num-clients=2 samples-per-client=60"


def rows(results: Path, filename: str) -> list[dict]:
    (run_dir,) = results.iterdir()
    return [json.loads(line) for line in (run_dir / filename).read_text().splitlines()]


def run_once(home: Path, results: Path, extra_env: dict[str, str] | None = None) -> None:
    with PrivateSuperLink(home, num_supernodes=2, num_cpus_per_client=1, extra_env=extra_env) as link:
        done = link.run(APP, f"{CONFIG} num-rounds=2 results-dir='{results}'")
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_node_run_uses_both_nodes_and_matches_single_node(tmp_path):
    with local_cluster(workers=1, cpus_per_node=1) as cluster:
        run_once(tmp_path / "home-cluster", tmp_path / "cluster", {"RAY_ADDRESS": cluster.address})
    run_once(tmp_path / "home-single", tmp_path / "single")

    calls = rows(tmp_path / "cluster", "clients.jsonl")
    assert len({row["ray-node-id"] for row in calls}) == 2, "client calls ran on one node only"
    cluster_rounds = rows(tmp_path / "cluster", "rounds.jsonl")
    single_rounds = rows(tmp_path / "single", "rounds.jsonl")
    assert len(cluster_rounds) == len(single_rounds) == 3
    assert "train-loss" not in cluster_rounds[0] and "train-loss" not in single_rounds[0]  # round 0 only evaluates
    for on_cluster, single in zip(cluster_rounds, single_rounds):
        assert on_cluster["global-angular-error"] == pytest.approx(single["global-angular-error"], rel=1e-6)
        if on_cluster["round"] > 0:
            assert on_cluster["train-loss"] == pytest.approx(single["train-loss"], rel=1e-6)


def test_losing_a_worker_node_mid_run_completes_with_dropped_clients(tmp_path):
    import threading
    import time

    results = tmp_path / "runs"

    def first_round_done() -> bool:
        return results.exists() and any(
            '"round": 1' in (run / "rounds.jsonl").read_text()
            for run in results.iterdir()
            if (run / "rounds.jsonl").exists()
        )

    with local_cluster(workers=1, cpus_per_node=1) as cluster:
        (worker,) = cluster.worker_nodes

        def lose_worker() -> None:
            deadline = time.monotonic() + 120
            while not first_round_done() and time.monotonic() < deadline:
                time.sleep(0.2)
            cluster.remove_node(worker, allow_graceful=False)

        killer = threading.Thread(target=lose_worker, daemon=True)
        killer.start()
        with PrivateSuperLink(
            tmp_path / "home", 2, num_cpus_per_client=1, extra_env={"RAY_ADDRESS": cluster.address}
        ) as link:
            done = link.run(
                APP,
                f"{CONFIG} num-rounds=4 round-timeout-s=60.0 faults.slow-fraction=1.0 faults.slow-delay-s=1.0 "
                f"results-dir='{results}'",
                timeout=400,
            )
        killer.join(timeout=5)
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = rows(results, "rounds.jsonl")
    assert [row["round"] for row in rounds] == [0, 1, 2, 3, 4]
    assert rounds[-1]["failures"] + rounds[-1]["timeouts"] >= 1  # the lost node's client
    # Ray reports the lost actor as ActorDiedError or ActorUnavailableError, depending on timing.
    assert "ray.exceptions.Actor" in "".join(row.get("error", "") for row in rows(results, "clients.jsonl"))
