"""Gaze estimation: eye image + head pose -> gaze (pitch, yaw); metric: mean angular error.

Natural partition: client ``i`` is user ``i`` of the embedded generator; its samples are split
into train and test by ``test-fraction``. Users ``UNSEEN_USER_OFFSET + k`` never train and serve
as unseen users.

Real data (``dataset = "mpiigaze"`` or ``"mpiifacegaze"``, ``data-path``): clients come from the
``partition`` section (default ``natural``: client ``i`` is participant ``i`` in sorted order,
both eyes); participants beyond ``num-clients`` are the unseen users. MPIIFaceGaze faces are
converted to grayscale and resized to the LeNet's 36x60 input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedpersonal.config import RunConfig, require_choice, setting
from fedpersonal.data.containers import GazeSet
from fedpersonal.data.federated import DataRequest, client_split, federated, prepare, unseen_split
from fedpersonal.data.partition import test_count
from fedpersonal.data.synthetic.eyes import HEIGHT, WIDTH, GazeSamples, generate_user
from fedpersonal.device import to_numpy
from fedpersonal.metrics.angular import angular_error_deg
from fedpersonal.models.lenet import GazeLeNet
from fedpersonal.tasks.base import ClientData, Task, Tensors
from fedpersonal.training import iterate_batches

UNSEEN_USER_OFFSET = 10_000
EVAL_BATCH = 512


@dataclass(frozen=True)
class GazeSettings:
    """Run-config section ``gaze`` (``[tool.flwr.app.config.gaze]``)."""

    SECTION: ClassVar[str] = "gaze"

    evaluation_subset: bool = setting(
        False, "true (only MPIIGaze's official evaluation lists, 3000 samples per participant) or false (all)"
    )
    batchnorm: bool = setting(False, "true (the LeNet with BatchNorm layers, for AdaBN) or false (MPIIGaze's LeNet)")


def samples_to_tensors(samples: GazeSamples | GazeSet) -> Tensors:
    """(images uint8 (N, 1, 36, 60), pose (N, 2), gaze (N, 2)) as torch tensors."""
    return (
        torch.from_numpy(samples.images[:, None]),
        torch.from_numpy(samples.pose),
        torch.from_numpy(samples.gaze),
    )


def split_train_test(tensors: Tensors, test_fraction: float) -> ClientData:
    """First samples train, last ``test_fraction`` test (samples are drawn i.i.d. per user)."""
    count = len(tensors[0])
    cut = count - test_count(count, test_fraction)
    return ClientData(tuple(t[:cut] for t in tensors), tuple(t[cut:] for t in tensors))


@lru_cache(maxsize=64)
def _user_data(user_id: int, count: int, seed: int, heterogeneity: float, test_fraction: float) -> ClientData:
    samples = generate_user(user_id, count, seed, heterogeneity)
    return split_train_test(samples_to_tensors(samples), test_fraction)


def loader_options(cfg: RunConfig) -> dict[str, Any]:
    """Options of the real-data loader of ``cfg.dataset`` (images at the LeNet's input size)."""
    if cfg.dataset == "mpiigaze":
        return {"evaluation_subset": cfg.section(GazeSettings).evaluation_subset}
    return {"size": (HEIGHT, WIDTH), "gray": True}


def _real_data(split: tuple[GazeSet, GazeSet]) -> ClientData:
    return ClientData(samples_to_tensors(split[0]), samples_to_tensors(split[1]))


class GazeTask(Task):
    """LeNet gaze regression with an MSE loss on (pitch, yaw) in radians."""

    name = "gaze"
    metric = "angular-error"
    better = "lower"
    datasets = ("synthetic", "mpiigaze", "mpiifacegaze")

    def build_model(self) -> nn.Module:
        """A new :class:`GazeLeNet` (with BatchNorm when ``gaze.batchnorm``)."""
        return GazeLeNet(batchnorm=self.cfg.section(GazeSettings).batchnorm)

    def forward(self, model: nn.Module, inputs: Tensors) -> torch.Tensor:
        """Predicted (pitch, yaw) of (images uint8, pose)."""
        images, pose = inputs[:2]
        return model(images.float() / 255.0, pose)

    def data_request(self) -> DataRequest | None:
        """The real-data request of the run (None for the embedded generator)."""
        cfg = self.cfg
        require_choice("dataset", cfg.dataset, self.datasets)
        return None if cfg.dataset == "synthetic" else DataRequest.from_config(cfg, **loader_options(cfg))

    def prepare_data(self) -> None:
        """Decode, cache, partition and check real data before any client starts."""
        request = self.data_request()
        if request is not None:
            prepare(request)

    def client_data(self, partition_id: int) -> ClientData:
        """Client ``partition_id``: a user of the generator or a partition of the real dataset."""
        request = self.data_request()
        if request is not None:
            return _real_data(client_split(request, partition_id))
        cfg = self.cfg
        return _user_data(partition_id, cfg.samples_per_client, cfg.seed, cfg.heterogeneity, cfg.test_fraction)

    def reads_files(self) -> bool:
        """MPIIGaze and MPIIFaceGaze are read from ``data-path``."""
        return self.cfg.dataset != "synthetic"

    def max_examples(self) -> int:
        """``samples-per-client`` for the generator; the whole dataset's size for real data."""
        request = self.data_request()
        return self.cfg.samples_per_client if request is None else len(federated(request)[0])

    def unseen_user_data(self, index: int) -> ClientData:
        """Data of an unseen user (never a client): a generator user or a left-over participant."""
        request = self.data_request()
        if request is not None:
            return _real_data(unseen_split(request, index))
        return self.client_data(UNSEEN_USER_OFFSET + index)

    def flip_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The gaze direction negated (pitch and yaw)."""
        return -labels

    def loss(self, model: nn.Module, batch: Tensors) -> torch.Tensor:
        """Mean squared error of the predicted (pitch, yaw)."""
        return torch.mean((self.forward(model, batch) - batch[2]) ** 2)

    def predict(self, model: nn.Module, tensors: Tensors) -> np.ndarray:
        """Predicted (pitch, yaw) for every sample, in evaluation mode."""
        model.eval()
        with torch.no_grad():
            parts = [self.forward(model, batch) for batch in iterate_batches(tensors, EVAL_BATCH)]
        return to_numpy(torch.cat(parts))

    def evaluate(self, model: nn.Module, tensors: Tensors) -> dict[str, float]:
        """Mean angular error in degrees and MSE loss."""
        predicted = self.predict(model, tensors)
        target = to_numpy(tensors[2])
        return {
            "angular-error": float(angular_error_deg(predicted, target).mean()),
            "loss": float(np.mean((predicted - target) ** 2)),
        }
