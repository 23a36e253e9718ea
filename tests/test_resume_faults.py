"""Checkpoint/resume reproduces an uninterrupted run; simulated faults drop clients, not rounds."""

import dataclasses
from pathlib import Path

import pytest
import torch
from crashing import crash_in_round
from flwr.app import ConfigRecord

from clients.base import ClientAlgorithm
from fedpersonal.checkpoint import load_checkpoint, load_client_state, save_client_state
from fedpersonal.config import ConfigError
from fedpersonal.results import RunDirectory
from simulations.inprocess import run_inprocess
from simulations.loop import RunFailedError

SMALL = {"num-clients": 3, "num-rounds": 3, "samples-per-client": 80, "fraction-train": 0.67}


class CountingClient(ClientAlgorithm):
    """FedAvg plus a personal counter in context.state: how often this client trained."""

    def train(self, msg):
        record = self.context.state.get("counter", ConfigRecord({"count": 0}))
        record["count"] = int(record["count"]) + 1
        self.context.state["counter"] = record
        reply = super().train(msg)
        reply.content.metric_records["metrics"]["count"] = record["count"]
        return reply


@pytest.fixture
def counting(monkeypatch):
    from simulations.registry import ALGORITHMS

    entry = dataclasses.replace(ALGORITHMS["fedavg"], name="counting", client=CountingClient)
    monkeypatch.setitem(ALGORITHMS, "counting", entry)
    return {**SMALL, "strategy": "counting"}


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "time-s"} for row in rows]


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, monkeypatch, counting):
    full, _ = run_inprocess({**counting, "results-dir": str(tmp_path / "full")})
    crashed_dir = crash_in_round(monkeypatch, {**counting, "results-dir": str(tmp_path / "crashed")}, 3)
    assert load_checkpoint(crashed_dir)["round"] == 2
    assert [row["round"] for row in RunDirectory(crashed_dir).read_rows("rounds.jsonl")] == [0, 1, 2]

    resumed, _ = run_inprocess({**counting, "results-dir": str(tmp_path / "crashed"), "resume": str(crashed_dir)})
    assert resumed.path == crashed_dir
    assert without_time(resumed.read_rows("rounds.jsonl")) == without_time(full.read_rows("rounds.jsonl"))
    assert resumed.read_rows("clients.jsonl") == full.read_rows("clients.jsonl")  # counters continued
    for key, value in torch.load(full.path / "model.pt").items():
        torch.testing.assert_close(torch.load(resumed.path / "model.pt")[key], value, rtol=0, atol=0)


def test_resume_refuses_a_different_config(tmp_path):
    first, _ = run_inprocess({**SMALL, "num-rounds": 1, "results-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"'resume'.*different values for \['lr'\]"):
        run_inprocess({**SMALL, "num-rounds": 2, "lr": 0.5, "resume": str(first.path), "results-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="no run directory"):
        run_inprocess({**SMALL, "resume": str(tmp_path / "nowhere")})


def test_client_state_files_keep_the_newest_two(tmp_path):
    for server_round in range(1, 5):
        save_client_state(tmp_path, 7, server_round, {"c": ConfigRecord({"round": server_round})})
    names = sorted(p.name for p in (tmp_path / "client-state").iterdir())
    assert names == ["7.r3.bin", "7.r4.bin"]
    assert load_client_state(tmp_path, 7, 3)["c"]["round"] == 3
    assert load_client_state(tmp_path, 7, 9)["c"]["round"] == 4
    assert load_client_state(tmp_path, 7, 2) is None and load_client_state(tmp_path, 8, 9) is None


def test_dropout_is_counted_and_the_round_aggregates_the_rest(tmp_path):
    run_dir, _ = run_inprocess(
        {**SMALL, "fraction-train": 1.0, "faults.dropout": 0.5, "seed": 3, "results-dir": str(tmp_path)}
    )
    rounds = run_dir.read_rows("rounds.jsonl")[1:]
    failures = [row["failures"] for row in rounds]
    assert sum(failures) > 0 and all(f < 3 for f in failures)
    for row in rounds:
        assert row["num-examples"] == pytest.approx(64 * (3 - row["failures"]))
    errors = [row["error"] for row in run_dir.read_rows("clients.jsonl") if "error" in row]
    assert len(errors) == sum(failures) and all("SimulatedDropout" in e for e in errors)


def only_run(results: Path) -> RunDirectory:
    (path,) = results.iterdir()
    return RunDirectory(path)


def test_too_few_replies_keep_the_previous_model(tmp_path):
    with pytest.raises(
        RunFailedError, match="no round of 3 aggregated any client reply; first client error: .*dropped"
    ):
        run_inprocess(
            {
                **SMALL,
                "fraction-train": 1.0,
                "faults.dropout": 0.5,
                "seed": 3,
                "min-train-replies": 3,
                "results-dir": str(tmp_path),
            }
        )
    rounds = only_run(tmp_path).read_rows("rounds.jsonl")  # every finished round is kept
    for before, row in zip(rounds, rounds[1:]):
        if row["skipped"]:
            assert row["global-angular-error"] == pytest.approx(before["global-angular-error"])
    assert any(row["skipped"] for row in rounds[1:])


def test_slow_clients_past_the_round_timeout_are_dropped(tmp_path):
    with pytest.raises(RunFailedError, match="no round of 1 aggregated any client reply"):
        run_inprocess(
            {
                **SMALL,
                "num-rounds": 1,
                "fraction-train": 1.0,
                "faults.slow-fraction": 1.0,
                "faults.slow-delay-s": 0.5,
                "round-timeout-s": 0.4,
                "results-dir": str(tmp_path),
            }
        )
    (row,) = only_run(tmp_path).read_rows("rounds.jsonl")[1:]
    assert row["timeouts"] == 3 and row["skipped"] is True
