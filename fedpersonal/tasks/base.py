"""What a task provides: model factory, per-client data, loss and evaluation metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from fedpersonal.config import RunConfig
from fedpersonal.device import to_device
from fedpersonal.training import Tensors


@dataclass(frozen=True)
class ClientData:
    """One client's train and test tensors (same layout, first dimension = samples)."""

    train: Tensors
    test: Tensors

    def to(self, device: torch.device) -> ClientData:
        """This data on ``device`` (one copy of each split, see :func:`fedpersonal.device.to_device`)."""
        return ClientData(to_device(self.train, device), to_device(self.test, device))

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return len(self.train[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return len(self.test[0])


class Task(ABC):
    """A learning problem: the model, the data of a client, the loss and the metrics."""

    name: str
    metric: str  # the primary evaluation metric, a key of evaluate()'s result
    better: str  # "lower" or "higher" for the primary metric
    predicts_classes: bool = False  # True: forward() returns class logits (entropy-based adaptation applies)

    def __init__(self, cfg: RunConfig | None = None) -> None:
        """``cfg``: the run config, for settings the model depends on (defaults when None)."""
        self.cfg = cfg if cfg is not None else RunConfig()

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (seed torch before calling for reproducibility)."""

    def initial_model(self, model: nn.Module) -> nn.Module:
        """The model the federation starts from, given a freshly seeded :meth:`build_model`
        (default: that model; a task may pretrain it on the server, e.g. on public data)."""
        return model

    @abstractmethod
    def client_data(self, partition_id: int) -> ClientData:
        """The train/test data of client ``partition_id`` (cached per process)."""

    def prepare_data(self) -> None:
        """Decode, cache and check the run's data on the server before any client starts.

        Bad data then stops the run before training; tasks on embedded data need nothing here.
        """

    def sections_read(self) -> set[str]:
        """The run-config sections this task reads with its dataset (``partition`` for real data)."""
        return {self.name} | ({"partition"} if self.reads_files() else set())

    def unread_keys(self) -> set[str]:
        """Top-level keys this task ignores with its dataset: ``data-path`` for embedded data; the
        generator's ``samples-per-client`` and ``heterogeneity`` for data read from files."""
        return {"samples-per-client", "heterogeneity"} if self.reads_files() else {"data-path"}

    def reads_files(self) -> bool:
        """True when the run's dataset is read from ``data-path`` (default: never)."""
        return False

    def max_examples(self) -> int:
        """The most samples one client of the run can hold: the server rejects a reply claiming more
        (default: ``samples-per-client``, the size of a user of an embedded generator)."""
        return self.cfg.samples_per_client

    @abstractmethod
    def loss(self, model: nn.Module, batch: Tensors) -> torch.Tensor:
        """Mean training loss of ``model`` on one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, tensors: Tensors) -> dict[str, float]:
        """Metrics of ``model`` on ``tensors``; includes ``self.metric`` and ``"loss"``."""

    def flip_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels a label-flipping attacker trains on (section ``poison``); tasks that support the
        attack override it."""
        raise NotImplementedError(f"task {self.name!r} has no label-flip attack")

    def inputs(self, tensors: Tensors) -> Tensors:
        """What the model sees of ``tensors``, labels dropped (default: all but the last tensor)."""
        return tensors[:-1]

    def forward(self, model: nn.Module, inputs: Tensors) -> torch.Tensor:
        """The model's outputs on a batch of :meth:`inputs` (needed by unsupervised adaptation)."""
        raise NotImplementedError(f"task '{self.name}' does not define forward(); unsupervised adaptation needs it")
