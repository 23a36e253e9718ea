"""The evaluation protocol: global, personalized and unseen-client views, named by what they are."""

import pytest
import torch
from flwr.app import Context, RecordDict

from fedpersonal.config import ConfigError
from fedpersonal.evaluation import round_key, view_metric, view_of
from fedpersonal.metrics.fairness import fairness_summary
from fedpersonal.params import to_arrays
from fedpersonal.tasks import get_task
from simulations.inprocess import run_inprocess
from simulations.registry import build_client, parse_run_config

DIGITS = {"task": "classify", "dataset": "digits", "num-clients": 3, "num-rounds": 2, "local-epochs": 1,
          "partition.name": "dirichlet", "partition.alpha": 0.5, "partition.min-size": 4}  # fmt: skip


def test_metric_names_say_which_view_they_belong_to():
    assert [view_of(m) for m in ("accuracy", "personalized-accuracy", "unseen-loss")] == [
        "global",
        "personalized",
        "unseen",
    ]
    assert round_key("accuracy") == "global-accuracy"
    assert round_key("personalized-accuracy") == "personalized-accuracy"
    assert round_key("unseen-tar@far=0.01") == "global-unseen-tar@far=0.01"  # the face server's own metric
    assert view_metric("unseen", "angular-error") == "unseen-angular-error"
    with pytest.raises(ValueError, match="view 'best'"):
        view_metric("best", "accuracy")


def evaluate_replies(grid):
    return [reply.content.metric_records["metrics"] for reply in grid.replies if not reply.content.array_records]


def test_fedper_reports_no_global_metric_and_fedavg_personalized_equals_global(tmp_path):
    _, fedper = run_inprocess({**DIGITS, "strategy": "fedper", "results-dir": str(tmp_path / "a")}, record=True)
    for metrics in evaluate_replies(fedper):
        assert "accuracy" not in metrics and "personalized-accuracy" in metrics
    _, fedavg = run_inprocess({**DIGITS, "strategy": "fedavg", "results-dir": str(tmp_path / "b")}, record=True)
    for metrics in evaluate_replies(fedavg):
        assert metrics["personalized-accuracy"] == metrics["accuracy"]


def test_unseen_clients_never_train_and_the_summary_keeps_every_view(tmp_path):
    config = {**DIGITS, "strategy": "fedavg", "evaluate.unseen-clients": 2, "evaluate.unseen-steps": 5,
              "adapt.method": "adabn", "results-dir": str(tmp_path)}  # fmt: skip
    run_dir, grid = run_inprocess(config, record=True)
    assert len(grid.contexts) == 3  # the federation holds the training clients only
    rows = run_dir.read_rows("clients.jsonl")
    unseen = [row for row in rows if row["phase"] == "unseen"]
    assert sorted(row["partition-id"] for row in unseen) == [3, 4]
    assert all(row["round"] == 2 and 0 <= row["unseen-accuracy"] <= 1 for row in unseen)
    summary = run_dir.read_json("summary.json")
    views = summary["views"]
    assert set(views) == {"global", "personalized", "unseen"}
    evaluated = {row["partition-id"]: row for row in rows if row["phase"] == "evaluate" and row["round"] == 2}
    for view, key, source in (
        ("global", "accuracy", evaluated),
        ("personalized", "personalized-accuracy", evaluated),
        ("unseen", "unseen-accuracy", {row["partition-id"]: row for row in unseen}),
    ):
        values = [source[partition][key] for partition in sorted(source)]
        expected = fairness_summary(values, "higher")
        assert views[view]["per-client"] == {str(p): source[p][key] for p in sorted(source)}
        for stat in ("mean", "std", "worst", "worst10_mean"):
            assert views[view][stat] == pytest.approx(expected[stat])
    last = summary["final"]
    assert {"global-accuracy", "personalized-accuracy", "std-accuracy", "worst10-personalized-accuracy"} <= set(last)


def unseen_client(config, tmp_path):
    cfg = parse_run_config({**config, "results-dir": str(tmp_path)})
    context = Context(0, 0, {"partition-id": cfg.num_clients, "num-partitions": cfg.num_clients}, RecordDict(), {})
    return build_client(cfg, context)


def test_unseen_fine_tuning_changes_only_the_personal_part(tmp_path, monkeypatch):
    config = {**DIGITS, "strategy": "fedper", "evaluate.unseen-clients": 1}
    client = unseen_client(config, tmp_path)
    start = client.task.build_model()
    arrays = to_arrays(start)
    seen = {}
    monkeypatch.setattr(client.task, "evaluate", lambda model, tensors: seen.update(model.state_dict()) or {"x": 1.0})
    assert client.unseen_evaluation(arrays, 4) == {"unseen-x": 1.0}
    for key, value in start.state_dict().items():
        changed = not torch.equal(seen[key], value)
        assert changed == key.startswith("head."), key
    client.unseen_evaluation(arrays, 0)
    assert all(torch.equal(seen[key], value) for key, value in start.state_dict().items())


def test_unseen_clients_hold_data_no_training_client_holds(tmp_path):
    config = {**DIGITS, "strategy": "fedavg", "evaluate.unseen-clients": 2}
    unseen = unseen_client(config, tmp_path)
    held_out = {bytes(image.numpy()) for split in (unseen.data.train, unseen.data.test) for image in split[0]}
    task = unseen.task
    for partition in range(3):
        data = task.client_data(partition)
        for split in (data.train, data.test):
            assert not held_out & {bytes(image.numpy()) for image in split[0]}


def test_centralized_trains_one_node_per_round_on_the_pooled_data(tmp_path):
    config = {**DIGITS, "strategy": "centralized", "num-rounds": 3, "results-dir": str(tmp_path)}
    run_dir, grid = run_inprocess(config, record=True)
    train_replies = [reply.content.metric_records["metrics"] for reply in grid.replies if reply.content.array_records]
    assert len(train_replies) == 3  # one node per round
    cfg = parse_run_config(config)
    task = get_task("classify", cfg)
    pooled = sum(task.client_data(p).num_train for p in range(cfg.num_clients))
    assert all(metrics["pooled-examples"] == pooled for metrics in train_replies)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert rounds[-1]["global-accuracy"] > rounds[0]["global-accuracy"] + 0.3


def test_unseen_clients_are_refused_for_the_face_task():
    with pytest.raises(ConfigError, match="evaluate.unseen-clients"):
        parse_run_config({"task": "face", "strategy": "fedfr", "evaluate.unseen-clients": 2})


def test_unseen_steps_are_bounded():
    with pytest.raises(ConfigError, match="evaluate.unseen-steps"):
        parse_run_config({"evaluate.unseen-steps": -1})
