"""The face task on a real ImageFolder tree with LFW as its generic evaluation, end to end."""

import json

import pytest
import torch

from fedpersonal.config import ConfigError
from fedpersonal.data.errors import DataError
from fedpersonal.tasks.face import FaceTask
from simulations.inprocess import run_inprocess
from simulations.server_app import parse_run_config
from tests.real_data_files import private_cache, write_imagefolder, write_lfw  # noqa: F401 (fixture)

# 6 identities x 8 images: 2 clients x 2 identities, the 2 left over are the server's public set.
FACE = {
    "task": "face",
    "strategy": "face-fedavg",
    "dataset": "imagefolder",
    "num-clients": 2,
    "num-rounds": 1,
    "batch-size": 8,
    "test-fraction": 0.5,
    "partition.users-per-client": 2,
    "face.identities-min": 2,
    "face.identities-max": 2,
    "face.images-per-identity": 8,
    "face.pretrain-epochs": 1,
    "face.first-epochs": 1,
    "face.min-epochs": 1,
}


@pytest.fixture
def trees(tmp_path):
    write_imagefolder(tmp_path / "casia", classes=6, per_class=8)
    write_lfw(tmp_path / "lfw")
    return {
        **FACE,
        "data-path": str(tmp_path / "casia"),
        "face.lfw-path": str(tmp_path / "lfw"),
        "results-dir": str(tmp_path / "runs"),
    }


def test_clients_public_and_lfw_come_from_the_files(trees):
    task = FaceTask(parse_run_config(trees))
    task.prepare_data()
    clients = [task.client_data(k) for k in range(2)]
    for data in clients:  # two identities each, renumbered 0..1, 8 images split in half
        assert sorted(torch.cat([data.train[1], data.test[1]]).unique().tolist()) == [0, 1]
        assert len(data.train[1]) + len(data.test[1]) == 16 and len(data.test[1]) == 8
        assert data.train[0].shape[1:] == (1, 32, 32) and data.train[0].dtype == torch.uint8
    images, labels = task.public_data()
    assert images.shape == (16, 1, 32, 32) and sorted(labels.unique().tolist()) == [0, 1]
    own = {tuple(img.flatten()[:1].tolist()) for data in clients for img in data.train[0]}
    assert not own & {tuple(img.flatten()[:1].tolist()) for img in images}  # identities are colours
    pairs = task.source.verification(*task._data_key())
    assert pairs.images.shape == (7, 1, 32, 32)  # the distinct images pairs.txt names
    assert pairs.genuine.tolist() == [True, True, False, False] * 2 and pairs.folds.tolist() == [0] * 4 + [1] * 4


def test_a_face_run_on_real_files_reports_lfw_verification(trees):
    run_dir, grid = run_inprocess(trees, record=True)
    assert not any(reply.has_error() for reply in grid.replies)
    rows = [json.loads(line) for line in (run_dir.path / "rounds.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1]
    assert all(0 <= row["global-unseen-verification-accuracy"] <= 1 for row in rows)


@pytest.mark.parametrize("lfw_path", ["", "missing"])
def test_a_bad_lfw_path_stops_the_run_before_training(trees, lfw_path, tmp_path):
    config = {**trees, "face.lfw-path": lfw_path and str(tmp_path / lfw_path)}
    with pytest.raises((ConfigError, DataError), match="face.lfw-path"):
        run_inprocess(config)
