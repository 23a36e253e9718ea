"""FedFR and the face baselines end to end in one process, checked on the captured messages."""

import numpy as np
import pytest
import torch
from flwr.app import MessageType
from small_configs import FEDFR_FACE

from fedpersonal.config import ConfigError
from fedpersonal.models.face import SHARED_PREFIX, FaceEmbeddingNet
from fedpersonal.tasks.face import PUBLIC_FEATURES, FaceTask
from simulations.inprocess import run_inprocess
from simulations.server_app import parse_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

# Long enough that local training matters: 2 rounds of 10 local epochs, then 2.
FACE = {**FEDFR_FACE, "num-rounds": 2, "face.first-epochs": 10, "face.epoch-decrease": 8, "face.min-epochs": 2}
BACKBONE_KEYS = set(FaceEmbeddingNet().state_dict())


@pytest.fixture(scope="module")
def fedfr_run(tmp_path_factory):
    return run_inprocess(
        {**FACE, "strategy": "fedfr", "results-dir": str(tmp_path_factory.mktemp("runs"))}, record=True
    )


def train_replies(grid):
    replies = [reply for reply in grid.replies if reply.metadata.message_type == MessageType.TRAIN]
    assert replies, "run_inprocess(..., record=True) keeps the replies"
    return replies


def test_every_server_bound_message_holds_only_backbone_keys(fedfr_run):
    _, grid = fedfr_run
    assert all(key.startswith(SHARED_PREFIX) for key in BACKBONE_KEYS)
    assert len(grid.replies) == 4 * 3 + 4 * 2  # three evaluations, two training rounds
    for reply in grid.replies:
        assert not reply.has_error(), reply.error.reason
        records = reply.content.array_records
        if reply.metadata.message_type == MessageType.TRAIN:
            assert list(records) == ["arrays"]
            assert set(records["arrays"]) == BACKBONE_KEYS
        else:
            assert not records


def test_train_messages_carry_public_features_and_classifier(fedfr_run):
    run_dir, grid = fedfr_run
    task = FaceTask(parse_run_config({**FACE, "strategy": "fedfr"}))
    sent = [msg for msg in grid.sent if msg.metadata.message_type == MessageType.TRAIN]
    assert len(sent) == 8
    for msg in sent:
        assert set(msg.content.array_records) == {"arrays", PUBLIC_FEATURES}
        public = msg.content.array_records[PUBLIC_FEATURES].to_torch_state_dict()
        assert public["features"].shape == (20 * 3, 64)
        torch.testing.assert_close(public["features"].norm(dim=1), torch.ones(60))
        torch.testing.assert_close(public["classifier"], task.public_classifier())
    evaluations = [msg for msg in grid.sent if msg.metadata.message_type == MessageType.EVALUATE]
    assert all(set(msg.content.array_records) == {"arrays"} for msg in evaluations)


def test_backbone_is_averaged_by_local_plus_hard_negative_counts(fedfr_run):
    run_dir, grid = fedfr_run
    last = train_replies(grid)[-4:]
    metrics = [reply.content.metric_records["metrics"] for reply in last]
    for m in metrics:  # every client trains on 5 x 14 local images plus its hard negatives
        assert m["num-examples"] == 70 + m["num-hard-negatives"]
    weights = [m["num-examples"] for m in metrics]
    states = [reply.content.array_records["arrays"].to_torch_state_dict() for reply in last]
    saved = torch.load(run_dir.path / "model.pt")
    for key in BACKBONE_KEYS:
        if states[0][key].is_floating_point():
            expected = sum(w * s[key] for w, s in zip(weights, states)) / sum(weights)
            torch.testing.assert_close(saved[key].float(), expected, rtol=1e-4, atol=1e-5)


def test_personal_parts_stay_in_the_client_state(fedfr_run):
    _, grid = fedfr_run
    for context in grid.contexts.values():
        state = context.state.array_records
        assert set(state) >= {"face-classifier", "fedfr-dfc", "face-local-backbone"}
        assert set(state["face-classifier"]) == {"weight"} and state["face-classifier"]["weight"].shape == (5, 64)
        assert set(state["fedfr-dfc"]) == {"transform.weight", "transform.bias", "weight", "bias"}


def test_personalized_beats_the_generic_backbone_on_own_identities(fedfr_run):
    run_dir, _ = fedfr_run
    rows = [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "evaluate"]
    first = [r for r in rows if r["round"] == 0]
    assert all(r["personalized-tar@far=0.1"] == r["tar@far=0.1"] for r in first)  # T = identity, no local model yet
    trained = [r for r in rows if r["round"] == 1]
    for key in ("tar@far=0.1", "tpir@fpir=0.1"):
        personal = np.mean([r[f"personalized-{key}"] for r in trained])
        generic = np.mean([r[key] for r in trained])
        assert personal > generic + 0.05, (key, personal, generic)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert all(0.4 < r["global-unseen-verification-accuracy"] < 1.0 for r in rounds)  # server-side, generic


def test_local_only_shares_nothing_and_keeps_the_pretrained_model(tmp_path):
    config = {**FACE, "strategy": "face-local", "num-rounds": 1, "face.first-epochs": 2, "results-dir": str(tmp_path)}
    run_dir, grid = run_inprocess(config, record=True)
    for reply in train_replies(grid):
        assert list(reply.content.array_records) == ["arrays"] and not reply.content.array_records["arrays"]
    task = FaceTask(parse_run_config(config))
    pretrained = task.initial_model(task.build_model()).state_dict()
    saved = torch.load(run_dir.path / "model.pt")
    assert all(torch.equal(saved[key], pretrained[key]) for key in pretrained)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert rounds[0]["global-unseen-verification-accuracy"] == rounds[1]["global-unseen-verification-accuracy"]


def test_fedavg_baseline_sends_backbones_and_evaluates_the_global_model(tmp_path):
    config = {**FACE, "strategy": "face-fedavg", "num-rounds": 1, "face.first-epochs": 2, "results-dir": str(tmp_path)}
    run_dir, grid = run_inprocess(config, record=True)
    assert all(set(reply.content.array_records["arrays"]) == BACKBONE_KEYS for reply in train_replies(grid))
    rows = [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "evaluate"]
    assert all(r["personalized-tar@far=0.1"] == r["tar@far=0.1"] for r in rows)


def test_face_algorithms_and_the_face_task_go_together():
    with pytest.raises(
        ConfigError, match=r"'strategy' = 'fedfr' does not support task = 'gaze' \(it supports \['face'\]\)"
    ):
        run_inprocess({"strategy": "fedfr", "num-clients": 2})
    with pytest.raises(
        ConfigError, match=r"'strategy' = 'fedavg' does not support task = 'face'.*for task 'face': \['face-fedavg'"
    ):
        run_inprocess({**FACE, "strategy": "fedavg"})


def test_the_face_scenario_is_the_benchmark_config():
    from pathlib import Path

    import tomllib
    from flwr.common.config import flatten_dict

    from benchmarks.face_fedfr import parse_args, scenario

    root = Path(__file__).resolve().parents[1]
    declared = parse_run_config(
        flatten_dict(tomllib.loads((root / "simulations/scenarios/face_fedfr.toml").read_text()))
    )
    benchmark = parse_run_config({**scenario(parse_args([])), "strategy": "fedfr"})
    assert declared == benchmark
