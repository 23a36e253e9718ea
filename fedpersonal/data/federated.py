"""A run's federated data: a real dataset loaded once, partitioned once, split per client.

Tasks call :func:`client_split` with a :class:`DataRequest` built from the run config; the
dataset and its partition (index arrays) are memory-mapped from the cache, computed once per
run by the server, so a client's per-round cost is training, not loading. :func:`prepare` does the same on the server
before any client starts, so bad data stops the run before training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fedpersonal.config import RunConfig, settings_dict
from fedpersonal.data import cache
from fedpersonal.data.partition import PackedPartition, Partition, PartitionSettings, make_partition, split_client
from fedpersonal.data.real import forget_loaded, load_dataset
from fedpersonal.evaluation import data_partitions


@dataclass(frozen=True)
class DataRequest:
    """Everything that determines a run's federated data (hashable: a cache key)."""

    dataset: str
    path: str
    options: tuple[tuple[str, Any], ...]
    partition: PartitionSettings
    num_clients: int
    test_fraction: float
    seed: int

    @classmethod
    def from_config(cls, cfg: RunConfig, **options: Any) -> DataRequest:
        """The request of a run: its dataset, data-path, partition section and loader ``options``."""
        return cls(
            dataset=cfg.dataset,
            path=cfg.data_path,
            options=tuple(sorted(options.items())),
            partition=cfg.section(PartitionSettings),
            num_clients=data_partitions(cfg),
            test_fraction=cfg.test_fraction,
            seed=cfg.seed,
        )

    def load(self) -> Any:
        """The whole dataset (memory-mapped from the cache)."""
        return load_dataset(self.dataset, self.path, **dict(self.options))


def _digest(values: Any) -> str | None:
    return None if values is None else hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


@lru_cache(maxsize=4)
def federated(request: DataRequest) -> tuple[Any, Partition]:
    """The dataset and its partition into clients (cached on disk, keyed by the labels and
    users the partition depends on and by every partition setting)."""
    data = request.load()
    labels, groups = getattr(data, "labels", None), getattr(data, "groups", None)
    key = {
        "samples": len(data),
        "labels": _digest(labels),
        "groups": _digest(groups),
        "partition": settings_dict(request.partition),
        "clients": request.num_clients,
        "test-fraction": request.test_fraction,
        "seed": request.seed,
    }

    def build() -> PackedPartition:
        return PackedPartition.pack(
            make_partition(
                labels,
                groups,
                len(data),
                request.num_clients,
                request.partition,
                request.test_fraction,
                request.seed,
                request.dataset,
            )
        )

    packed = cache.cached(f"{request.dataset}-partition", None, key, PackedPartition, build)
    return data, packed.unpack()


def prepare(request: DataRequest) -> Partition:
    """Decode, cache, partition and check the data (run on the server before training).

    Forgets what this process loaded before, so every run re-checks its files (a changed or
    corrupted file is noticed even when runs share a process, as in benchmarks).
    """
    forget_loaded()
    federated.cache_clear()
    return federated(request)[1]


def client_split(request: DataRequest, partition_id: int) -> tuple[Any, Any]:
    """(train, test) containers of client ``partition_id``."""
    data, partition = federated(request)
    return data.subset(partition.train[partition_id]), data.subset(partition.test[partition_id])


def unseen_split(request: DataRequest, index: int) -> tuple[Any, Any]:
    """(train, test) containers of unseen natural user ``index`` (a user no client holds)."""
    data, partition = federated(request)
    if not 0 <= index < len(partition.unseen):
        raise IndexError(f"unseen user {index} of dataset '{request.dataset}'; there are {len(partition.unseen)}")
    train, test = split_client(
        partition.unseen[index], request.test_fraction, request.seed, request.num_clients + index
    )
    return data.subset(train), data.subset(test)
