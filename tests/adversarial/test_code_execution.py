"""No code runs from files: a crafted checkpoint or CIFAR-10 batch is refused, naming the file."""

import hashlib
import io
import os
import pickle

import pytest
import torch

from fedpersonal.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
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
    path = run_dir.path / CHECKPOINT
    assert load_checkpoint(run_dir.path)["round"] == 1  # an honest checkpoint loads with weights_only
    inner = io.BytesIO()
    torch.save({"round": 1, "strategy": Payload(marker)}, inner)  # a payload with a valid hash
    raw = inner.getvalue()
    crafted = {
        "outer": {"format": CHECKPOINT_FORMAT, "sha256": "0", "payload": Payload(marker)},
        "inner": {
            "format": CHECKPOINT_FORMAT,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "payload": torch.frombuffer(bytearray(raw), dtype=torch.uint8),
        },
    }
    for wrapped in crafted.values():
        torch.save(wrapped, path)
        with pytest.raises(CheckpointError, match=f"cannot load the checkpoint '{path}'"):
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
