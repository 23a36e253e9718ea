"""The ServerApp logic and ClientApp in one process: learning, reproducibility, messages."""

import pytest

from simulations.inprocess import run_inprocess

SMALL = {"num-clients": 3, "num-rounds": 2, "samples-per-client": 120}


def test_fedavg_learns_and_is_reproducible(tmp_path):
    config = {**SMALL, "results-dir": str(tmp_path), "fraction-train": 0.67}
    first, grid = run_inprocess(config, record=True)
    second, _ = run_inprocess(config)
    rounds = first.read_rows("rounds.jsonl")
    assert rounds[-1]["global-angular-error"] < rounds[0]["global-angular-error"]
    assert rounds == [{**row, "time-s": r["time-s"]} for row, r in zip(second.read_rows("rounds.jsonl"), rounds)]
    # fraction-train 0.67 of 3 clients samples 2 per round; evaluation reaches all 3.
    trained = [row for row in first.read_rows("clients.jsonl") if row["phase"] == "train"]
    assert len(trained) == 2 * 2
    assert len(grid.sent) == 3 * 3 + 2 * 2


def test_fedavg_aggregate_is_the_example_weighted_mean(tmp_path):
    import torch

    from fedpersonal.params import load_arrays
    from fedpersonal.tasks import get_task

    config = {**SMALL, "num-rounds": 1, "results-dir": str(tmp_path), "samples-per-client": 60}
    run_dir, grid = run_inprocess(config, record=True)
    train_replies = [r for r in grid.replies if r.content.array_records]
    weights = [r.content.metric_records["metrics"]["num-examples"] for r in train_replies]
    states = [r.content.array_records["arrays"].to_torch_state_dict() for r in train_replies]
    expected = {k: sum(w * s[k] for w, s in zip(weights, states)) / sum(weights) for k in states[0]}
    saved = torch.load(run_dir.path / "model.pt")
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6)
    load_arrays(get_task("gaze").build_model(), train_replies[0].content.array_records["arrays"])


def test_a_failing_client_is_recorded_not_fatal(tmp_path, monkeypatch):
    from clients.fedavg import FedAvgClient

    original = FedAvgClient.train

    def flaky(self, msg):
        if self.partition_id == 1:
            raise RuntimeError("device went offline")
        return original(self, msg)

    monkeypatch.setattr(FedAvgClient, "train", flaky)
    run_dir, _ = run_inprocess({**SMALL, "num-rounds": 1, "results-dir": str(tmp_path)})
    (last,) = [row for row in run_dir.read_rows("rounds.jsonl") if row["round"] == 1]
    assert last["failures"] == 1
    errors = [row for row in run_dir.read_rows("clients.jsonl") if "error" in row]
    assert len(errors) == 1 and "device went offline" in errors[0]["error"]
    assert last["num-examples"] == pytest.approx(2 * 96)
