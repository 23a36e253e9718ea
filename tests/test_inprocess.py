"""The ServerApp logic and ClientApp in one process: learning, reproducibility, messages."""

import pytest

from fedpersonal.results import RunDirectory
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
    from clients.base import ClientAlgorithm

    original = ClientAlgorithm.train

    def flaky(self, msg):
        if self.partition_id == 1:
            raise RuntimeError("device went offline")
        return original(self, msg)

    monkeypatch.setattr(ClientAlgorithm, "train", flaky)
    run_dir, _ = run_inprocess({**SMALL, "num-rounds": 1, "results-dir": str(tmp_path)})
    (last,) = [row for row in run_dir.read_rows("rounds.jsonl") if row["round"] == 1]
    assert last["failures"] == 1
    errors = [row for row in run_dir.read_rows("clients.jsonl") if "error" in row]
    assert len(errors) == 1 and "device went offline" in errors[0]["error"]
    assert last["num-examples"] == pytest.approx(2 * 96)


def test_a_run_whose_clients_all_fail_raises_quoting_the_first_error(tmp_path, monkeypatch):
    from clients.base import ClientAlgorithm
    from simulations.loop import RunFailedError

    def broken(self, msg):
        raise RuntimeError(f"sensor {self.partition_id} broken")

    monkeypatch.setattr(ClientAlgorithm, "train", broken)
    with pytest.raises(
        RunFailedError, match=r"no round of 2 aggregated any client reply; first client error: .*sensor \d broken"
    ):
        run_inprocess({**SMALL, "results-dir": str(tmp_path / "train")})
    (run_dir,) = (tmp_path / "train").iterdir()
    assert [row["round"] for row in RunDirectory(run_dir).read_rows("rounds.jsonl")] == [0, 1, 2]  # kept
    assert not (run_dir / "summary.json").exists()

    monkeypatch.undo()
    monkeypatch.setattr(ClientAlgorithm, "evaluate", broken)
    with pytest.raises(RunFailedError, match=r"every evaluation failed; first client error: .*sensor \d broken"):
        run_inprocess({**SMALL, "results-dir": str(tmp_path / "evaluate")})


def test_the_client_app_parses_the_run_config_once_per_run(tmp_path, monkeypatch):
    import simulations.client_app as client_app

    calls = []
    parse = client_app.parse_run_config
    monkeypatch.setattr(client_app, "parse_run_config", lambda run_config: calls.append(1) or parse(run_config))
    client_app._parsed.cache_clear()
    run_inprocess({**SMALL, "samples-per-client": 30, "local-epochs": 1, "results-dir": str(tmp_path)})
    assert len(calls) == 1  # for 3 clients x (2 train + 3 evaluate) messages
