"""No code runs from files: a crafted checkpoint or CIFAR-10 batch is refused, naming the file."""

import os
import pickle

import pytest
import torch

from fedpersonal.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from fedpersonal.config import ConfigError
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.cifar10 import read_batch
from simulations.inprocess import run_inprocess


class Payload:
    """Unpickling this calls os.system: it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    run_dir, _ = run_inprocess({"num-clients": 2, "num-rounds": 1, "samples-per-client": 30,
                                "local-epochs": 1, "results-dir": str(tmp_path / "runs")})  # fmt: skip
    checkpoint = torch.load(run_dir.path / CHECKPOINT, weights_only=True)  # an honest checkpoint loads safely
    assert checkpoint["round"] == 1
    torch.save({**checkpoint, "strategy": {"evil": Payload(marker)}}, run_dir.path / CHECKPOINT)
    with pytest.raises(CheckpointError, match=f"cannot load the checkpoint '{run_dir.path / CHECKPOINT}'"):
        load_checkpoint(run_dir.path)
    with pytest.raises(ConfigError, match=r"run config key 'resume' = .*cannot load the checkpoint"):
        run_inprocess({"num-clients": 2, "num-rounds": 2, "samples-per-client": 30, "local-epochs": 1,
                       "results-dir": str(tmp_path / "runs"), "resume": str(run_dir.path)})  # fmt: skip
    assert not marker.exists()


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=f"cannot unpickle '{batch}'.*refused global 'posix.system'"):
        read_batch(batch)
    assert not marker.exists()
