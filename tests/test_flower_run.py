"""A real federated run through Flower: a private SuperLink, `flwr run`, three clients."""

import json
from pathlib import Path

import pytest
import torch

from fedpersonal.models.lenet import GazeLeNet
from simulations.local_superlink import PrivateSuperLink

APP = Path(__file__).resolve().parents[1]
CLIENTS = 3


@pytest.fixture(scope="module")
def superlink(tmp_path_factory):
    with PrivateSuperLink(tmp_path_factory.mktemp("flwr-home"), num_supernodes=CLIENTS) as link:
        yield link


def run_dirs(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.exists() else []


def test_federated_gaze_run_learns_and_writes_results(superlink, tmp_path):
    results = tmp_path / "runs"
    done = superlink.run(
        APP,
        f"num-clients={CLIENTS} num-rounds=3 samples-per-client=200 local-epochs=2 results-dir='{results}' "
        "evaluate.unseen-clients=2 evaluate.unseen-steps=5",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round 3/3" in done.stdout  # one progress line per round

    (run_dir,) = run_dirs(results)
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rounds] == [0, 1, 2, 3]
    first, last = rounds[0]["global-angular-error"], rounds[-1]["global-angular-error"]
    assert last < first, f"global error did not fall: round 0 {first:.2f}, round 3 {last:.2f}"

    clients = [json.loads(line) for line in (run_dir / "clients.jsonl").read_text().splitlines()]
    evaluated = [row for row in clients if row["round"] == 3 and row["phase"] == "evaluate"]
    assert sorted(row["partition-id"] for row in evaluated) == list(range(CLIENTS))
    unseen = [row for row in clients if row["phase"] == "unseen"]
    assert [row["partition-id"] for row in unseen] == [CLIENTS, CLIENTS + 1]
    assert all(0 < row["unseen-angular-error"] < 90 for row in unseen)
    trained = [row for row in clients if row["phase"] == "train"]
    assert len(trained) == 3 * CLIENTS and all(row["num-examples"] == 160 for row in trained)

    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["num-rounds"] == 3 and config["config"]["strategy"] == "fedavg"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["views"]["global"]["clients"] == CLIENTS
    assert set(summary["views"]["unseen"]["per-client"]) == {str(CLIENTS), str(CLIENTS + 1)}  # held out, evaluated
    assert summary["final"]["global-angular-error"] == pytest.approx(last)
    GazeLeNet().load_state_dict(torch.load(run_dir / "model.pt"))


def test_bad_config_stops_before_training(superlink, tmp_path):
    results = tmp_path / "runs"
    done = superlink.run(APP, f"num-clients={CLIENTS} strategy='fedbogus' results-dir='{results}'")
    output = done.stdout + done.stderr
    assert "'strategy' = 'fedbogus' is unknown; choose one of [" in output and "'fedavg'" in output
    assert "configure_train" not in output and "round 1/" not in output
    assert run_dirs(results) == []


def test_client_count_mismatch_is_reported(superlink, tmp_path):
    results = tmp_path / "runs"
    done = superlink.run(APP, f"num-clients={CLIENTS + 2} node-wait-s=1.0 results-dir='{results}'")
    output = done.stdout + done.stderr
    assert f"'num-clients' = {CLIENTS + 2} but {CLIENTS} supernodes are connected" in output
    assert run_dirs(results) == []


# Client state kept across rounds (SCAFFOLD), a personal part on the other task (FedRep); every pair runs
# in-process in tests/test_registry.py.
FLOWER_PAIRS = [("fedrep", "classify"), ("scaffold", "gaze")]


@pytest.mark.parametrize(("strategy", "task"), FLOWER_PAIRS, ids=[f"{s}-{t}" for s, t in FLOWER_PAIRS])
def test_personalization_algorithms_run_under_flwr_run(superlink, tmp_path, strategy, task):
    results = tmp_path / "runs"
    done = superlink.run(
        APP,
        f"num-clients={CLIENTS} num-rounds=2 samples-per-client=40 local-epochs=1 task='{task}' "
        f"strategy='{strategy}' results-dir='{results}' evaluate.unseen-clients=1 evaluate.unseen-steps=2",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = run_dirs(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and {"personalized", "unseen"} <= set(summary["views"])
    clients = [json.loads(line) for line in (run_dir / "clients.jsonl").read_text().splitlines()]
    assert not [row for row in clients if "error" in row or "rejected" in row]
