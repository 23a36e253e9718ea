"""FedFR's options (section fedfr): hard negatives on/off and threshold, the DFC branch off, the
reference's within-round learning-rate decay and trainable public classifier rows."""

import pytest
import torch
from flwr.app import MessageType
from small_configs import FEDFR_FACE

import clients.fedfr as fedfr_client
from clients.fedfr import FedFRSettings, lr_factors
from fedpersonal.config import ConfigError
from fedpersonal.losses.face import hard_negatives
from fedpersonal.tasks.face import FaceTask
from simulations.inprocess import run_inprocess
from simulations.server_app import parse_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

# One short round: 4 local epochs; 60 public images, 14 x 5 local training images.
FACE = {**FEDFR_FACE, "strategy": "fedfr", "num-rounds": 1, "face.first-epochs": 4, "face.min-epochs": 1}
PUBLIC_IMAGES, LOCAL_TRAIN = 60, 70


def train_metrics(grid) -> list:
    replies = [r for r in grid.replies if r.metadata.message_type == MessageType.TRAIN]
    assert replies and not any(r.has_error() for r in replies)
    return [r.content.metric_records["metrics"] for r in replies]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_inprocess({**FACE, "results-dir": str(tmp_path_factory.mktemp("default"))}, record=True)


@pytest.fixture(scope="module")
def options_run(tmp_path_factory):
    """Hard negatives off, DFC off, lr decay and trainable public rows; records every epoch's lr."""
    learning_rates: list[list[float]] = []
    original = fedfr_client.train_epochs

    def recording(model, tensors, loss, optimizer, epochs, *args, **kwargs):
        learning_rates.append([group["lr"] for group in optimizer.param_groups] * epochs)
        return original(model, tensors, loss, optimizer, epochs, *args, **kwargs)

    config = {
        **FACE,
        "fedfr.hard-negatives": False,
        "fedfr.dfc-weight": 0.0,
        "fedfr.lr-decay": True,
        "fedfr.train-public-classifier": True,
        "results-dir": str(tmp_path_factory.mktemp("options")),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fedfr_client, "train_epochs", recording)
        run_dir, grid = run_inprocess(config, record=True)
    return run_dir, grid, learning_rates


def test_defaults_keep_the_paper_settings():
    settings = parse_run_config(FACE).section(FedFRSettings)
    assert settings.hard_negatives and settings.hard_negative_threshold == 0.4 and settings.dfc_weight == 10.0
    assert not settings.lr_decay and not settings.train_public_classifier


def test_options_are_validated():
    with pytest.raises(ConfigError, match=r"'fedfr.hard-negatives' = 1 has type int; expected bool"):
        parse_run_config({**FACE, "fedfr.hard-negatives": 1})
    with pytest.raises(ConfigError, match=r"'fedfr.lr-decay'"):
        parse_run_config({**FACE, "fedfr.lr-decay": "yes"})
    with pytest.raises(ConfigError, match=r"'fedfr.hard-negative-threshold' = 1.5 is invalid"):
        parse_run_config({**FACE, "fedfr.hard-negative-threshold": 1.5})


def test_a_higher_threshold_selects_fewer_hard_negatives():
    generator = torch.Generator().manual_seed(0)
    local = torch.randn(5, 16, generator=generator)  # 16-d: cosines of random pairs have sd 1/4
    public = torch.randn(400, 16, generator=generator)
    counts = {t: len(hard_negatives(local, public, t)) for t in (-1.0, 0.4, 0.6, 0.7, 1.0)}
    assert counts[-1.0] == 400 and counts[1.0] == 0
    assert counts[0.4] > counts[0.6] > counts[0.7] > 0
    selected_07 = set(hard_negatives(local, public, 0.7).tolist())
    assert selected_07 <= set(hard_negatives(local, public, 0.4).tolist())  # nested sets
    cosines = torch.nn.functional.normalize(public, dim=1) @ torch.nn.functional.normalize(local, dim=1).T
    assert counts[0.4] == int((cosines.max(dim=1).values > 0.4).sum())


def test_the_hard_negative_fraction_is_a_train_metric(default_run):
    run_dir, grid = default_run
    for m in train_metrics(grid):
        assert 0 < m["num-hard-negatives"] <= PUBLIC_IMAGES
        assert m["hard-negative-fraction"] == pytest.approx(m["num-hard-negatives"] / PUBLIC_IMAGES)
        assert m["num-examples"] == LOCAL_TRAIN + m["num-hard-negatives"]
    rows = [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "train"]
    assert len(rows) == 4 and all("hard-negative-fraction" in r for r in rows)
    assert 0 < run_dir.read_rows("rounds.jsonl")[1]["hard-negative-fraction"] <= 1


def test_hard_negatives_off_selects_none(options_run):
    _, grid, _ = options_run
    for m in train_metrics(grid):
        assert m["num-hard-negatives"] == 0 and m["hard-negative-fraction"] == 0.0
        assert m["num-examples"] == LOCAL_TRAIN


def test_dfc_weight_zero_removes_the_branch(default_run, options_run):
    for (_, grid, *_), branch in ((default_run, True), (options_run, False)):
        for context in grid.contexts.values():
            assert ("fedfr-dfc" in context.state.array_records) is branch
            assert "face-local-backbone" in context.state.array_records
    run_dir = options_run[0]
    rows = [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "evaluate" and r["round"] == 1]
    assert any(r["personalized-tar@far=0.1"] != r["tar@far=0.1"] for r in rows)  # the local backbone, not the global


def test_lr_decay_divides_the_lr_by_ten_from_three_quarters_of_the_round():
    assert lr_factors(10) == [1.0] * 7 + [0.1] * 3
    assert lr_factors(8) == [1.0] * 6 + [0.1] * 2
    assert lr_factors(4) == [1.0] * 3 + [0.1]
    assert lr_factors(2) == [1.0, 0.1]
    assert lr_factors(1) == [1.0]


def test_lr_decay_changes_the_lr_within_a_round(options_run):
    _, _, learning_rates = options_run
    assert len(learning_rates) == 4 * 4  # 4 clients x 4 epochs, one call per epoch
    for client in range(4):
        epochs = [lrs[0] for lrs in learning_rates[4 * client : 4 * client + 4]]
        assert epochs == pytest.approx([0.02, 0.02, 0.02, 0.002])


def test_without_lr_decay_one_call_trains_every_epoch_at_the_run_lr(tmp_path, monkeypatch):
    learning_rates: list[float] = []
    original = fedfr_client.train_epochs

    def recording(model, tensors, loss, optimizer, epochs, *args, **kwargs):
        learning_rates.append(optimizer.param_groups[0]["lr"])
        return original(model, tensors, loss, optimizer, epochs, *args, **kwargs)

    monkeypatch.setattr(fedfr_client, "train_epochs", recording)
    run_inprocess({**FACE, "face.first-epochs": 1, "num-clients": 2, "results-dir": str(tmp_path)})
    assert learning_rates == []  # the base class's local_train, not the decay loop


def test_trainable_public_rows_change_and_frozen_ones_do_not(default_run, options_run):
    assert all(m["public-classifier-change"] == 0.0 for m in train_metrics(default_run[1]))
    assert all(m["public-classifier-change"] > 1e-4 for m in train_metrics(options_run[1]))


def test_trainable_public_rows_are_not_sent_and_restart_from_the_server_rows(options_run):
    _, grid, _ = options_run
    task = FaceTask(parse_run_config(FACE))
    for msg in grid.sent:
        if msg.metadata.message_type == MessageType.TRAIN:
            sent = msg.content.array_records["public-features"].to_torch_state_dict()
            torch.testing.assert_close(sent["classifier"], task.public_classifier())
    for reply in grid.replies:
        if reply.metadata.message_type == MessageType.TRAIN:
            assert all(key.startswith("backbone.") for key in reply.content.array_records["arrays"])


def test_benchmark_pairs_clients_within_seeds():
    from benchmarks.face_fedfr import paired_clients

    fedfr = {0: {0: 0.8, 1: 0.7, 2: 0.9}, 1: {0: 0.6, 1: 0.9, 2: 0.4}, 2: {0: 0.5}}
    finetune = {0: {0: 0.7, 1: 0.7, 2: 0.8}, 1: {0: 0.6, 1: 0.6, 2: 0.6}}  # seed 2 unfinished
    paired = paired_clients(fedfr, finetune)
    assert paired["pairs"] == 6 and (paired["better"], paired["worse"]) == (3, 1)
    seeds = paired["over_seeds"]
    assert seeds["seeds"] == [0, 1]
    assert seeds["mean"] == pytest.approx(((0.1 + 0 + 0.1) / 3 + (0 + 0.3 - 0.2) / 3) / 2)
    assert seeds["low"] < seeds["mean"] < seeds["high"]
    clients = paired["over_clients"]
    assert len(clients["seeds"]) == 6 and clients["mean"] == pytest.approx((0.1 + 0.1 + 0.3 - 0.2) / 6)
