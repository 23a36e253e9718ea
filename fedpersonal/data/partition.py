"""Seeded non-IID partitioning through flwr-datasets, and each client's train/test split.

Partitioners work on a ``datasets.Dataset`` of sample indices (plus ``label`` and ``group``
columns), built offline with ``Dataset.from_dict``; the samples are shuffled with the run's seed
first, so every partitioner is seeded. Names (run-config section ``partition``):

* ``iid``: equal random shares (``IidPartitioner``).
* ``dirichlet``: per class, client shares drawn from Dirichlet(``alpha``) (``DirichletPartitioner``;
  small alpha = few classes per client); every client gets at least ``min-size`` samples.
* ``pathological``: ``classes-per-client`` random classes per client (``PathologicalPartitioner``);
  samples of classes no client drew are left out.
* ``shard``: samples sorted by label, cut into shards, ``shards-per-client`` per client
  (``ShardPartitioner``, McMahan et al.).
* ``natural``: the dataset's own users (participant, writer, identity), ``users-per-client`` of
  them per client, in sorted order (``GroupedNaturalIdPartitioner``); users beyond the clients
  are the *unseen* users.
* ``quantity``: quantity skew: IID labels, client sizes ``min-size`` + a Dirichlet(``alpha``)
  share of the rest (``SizePartitioner``).

Every client then holds out ``test-fraction`` of its samples (at least one) as its test split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from fedpersonal.config import setting
from fedpersonal.data.errors import DataError

Indices = NDArray[np.int64]
PARTITIONERS = ("iid", "dirichlet", "pathological", "shard", "natural", "quantity")
NEEDS_LABELS = frozenset({"dirichlet", "pathological", "shard"})


@dataclass(frozen=True)
class PartitionSettings:
    """Run-config section ``partition`` (``[tool.flwr.app.config.partition]``)."""

    SECTION: ClassVar[str] = "partition"

    name: str = setting("natural", f"one of {list(PARTITIONERS)}", lambda v: v in PARTITIONERS)
    alpha: float = setting(0.5, "a number > 0 (Dirichlet concentration)", lambda v: v > 0)
    classes_per_client: int = setting(2, "an integer >= 1", lambda v: v >= 1)
    shards_per_client: int = setting(2, "an integer >= 1", lambda v: v >= 1)
    users_per_client: int = setting(1, "an integer >= 1", lambda v: v >= 1)
    min_size: int = setting(
        10, "an integer >= 2 (fewest samples of a 'dirichlet' or 'quantity' client)", lambda v: v >= 2
    )


@dataclass(frozen=True)
class Partition:
    """Sample indices of every client's train and test split, and of the unseen natural users."""

    train: tuple[Indices, ...]
    test: tuple[Indices, ...]
    unseen: tuple[Indices, ...] = ()

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.train)


@dataclass(frozen=True)
class PackedPartition:
    """A :class:`Partition` as flat arrays (what the cache stores): each split's index lists
    concatenated, with the offsets where each list starts (plus the total at the end)."""

    train: Indices
    train_offsets: Indices
    test: Indices
    test_offsets: Indices
    unseen: Indices
    unseen_offsets: Indices

    @staticmethod
    def _pack(lists: tuple[Indices, ...]) -> tuple[Indices, Indices]:
        offsets = np.cumsum([0] + [len(item) for item in lists]).astype(np.int64)
        flat = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
        return flat, offsets

    @staticmethod
    def _unpack(flat: Indices, offsets: Indices) -> tuple[Indices, ...]:
        return tuple(np.asarray(flat[a:b]) for a, b in zip(offsets[:-1], offsets[1:]))

    @classmethod
    def pack(cls, partition: Partition) -> PackedPartition:
        """Flatten ``partition``."""
        (train, train_offsets), (test, test_offsets), (unseen, unseen_offsets) = (
            cls._pack(partition.train),
            cls._pack(partition.test),
            cls._pack(partition.unseen),
        )
        return cls(train, train_offsets, test, test_offsets, unseen, unseen_offsets)

    def unpack(self) -> Partition:
        """The :class:`Partition` again."""
        return Partition(
            self._unpack(self.train, self.train_offsets),
            self._unpack(self.test, self.test_offsets),
            self._unpack(self.unseen, self.unseen_offsets),
        )


def quantity_sizes(total: int, clients: int, settings: PartitionSettings, seed: int) -> list[int]:
    """Client sizes: ``min-size`` each plus a Dirichlet(alpha) share of the remaining samples."""
    spare = total - clients * settings.min_size
    if spare < 0:
        raise DataError(
            f"partition 'quantity' needs {clients} x partition.min-size = {clients * settings.min_size} "
            f"samples but the dataset has {total}; expected fewer clients or a smaller partition.min-size"
        )
    rng = np.random.default_rng([seed, 2])
    shares = rng.multinomial(spare, rng.dirichlet(np.full(clients, settings.alpha)))
    return [int(settings.min_size + share) for share in shares]


def build_partitioner(settings: PartitionSettings, clients: int, total: int, seed: int) -> Any:
    """The flwr-datasets partitioner named by ``settings.name`` (imported lazily: it is slow)."""
    from flwr_datasets import partitioner as fp

    s = settings
    builders = {
        "iid": lambda: fp.IidPartitioner(clients),
        "dirichlet": lambda: fp.DirichletPartitioner(
            clients, "label", s.alpha, min_partition_size=s.min_size, seed=seed
        ),
        "pathological": lambda: fp.PathologicalPartitioner(clients, "label", s.classes_per_client, seed=seed),
        "shard": lambda: fp.ShardPartitioner(clients, "label", num_shards_per_partition=s.shards_per_client, seed=seed),
        "natural": lambda: fp.GroupedNaturalIdPartitioner("group", s.users_per_client, sort_unique_ids=True),
        "quantity": lambda: fp.SizePartitioner(quantity_sizes(total, clients, s, seed)),
    }
    return builders[s.name]()


def _table(order: Indices, labels: NDArray[np.int64] | None, groups: NDArray[np.int64] | None) -> Any:
    from datasets import Dataset

    columns = {"index": order}
    if labels is not None:
        columns["label"] = np.asarray(labels)[order]
    if groups is not None:
        columns["group"] = np.asarray(groups)[order]
    return Dataset.from_dict(columns)


def _check_inputs(
    settings: PartitionSettings, total: int, clients: int, has_labels: bool, has_groups: bool, dataset: str
) -> None:
    if settings.name in NEEDS_LABELS and not has_labels:
        raise DataError(
            f"run config key 'partition.name' = {settings.name!r} splits by class label, but dataset "
            f"'{dataset}' has no class labels; expected one of ['iid', 'natural', 'quantity']"
        )
    if settings.name == "natural" and not has_groups:
        raise DataError(
            f"run config key 'partition.name' = 'natural' needs per-sample users, but dataset '{dataset}' "
            f"has none; expected one of {[n for n in PARTITIONERS if n != 'natural']}"
        )
    if clients * 2 > total:
        raise DataError(
            f"run config key 'num-clients' = {clients} but dataset '{dataset}' has {total} samples; "
            f"expected at most {total // 2} clients (each needs a train and a test sample)"
        )


def assign(
    labels: NDArray[np.int64] | None,
    groups: NDArray[np.int64] | None,
    total: int,
    clients: int,
    settings: PartitionSettings,
    seed: int,
    dataset: str = "the dataset",
) -> tuple[list[Indices], list[Indices]]:
    """Sample indices of each client, and of every natural user group beyond the clients."""
    _check_inputs(settings, total, clients, labels is not None, groups is not None, dataset)
    order = np.random.default_rng([seed, 1]).permutation(total).astype(np.int64)
    partitioner = build_partitioner(settings, clients, total, seed)
    partitioner.dataset = _table(order, labels, groups)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            available = partitioner.num_partitions
            parts = [np.asarray(partitioner.load_partition(i)[:]["index"], np.int64) for i in range(available)]
    except ValueError as error:
        raise DataError(
            f"partition.name = {settings.name!r} cannot split dataset '{dataset}' ({total} samples) into "
            f"{clients} clients: {error}"
        ) from error
    if available < clients:
        raise DataError(
            f"run config key 'num-clients' = {clients} but dataset '{dataset}' has only {available} natural "
            f"client(s) with partition.users-per-client = {settings.users_per_client}; expected at most {available}"
        )
    return parts[:clients], parts[clients:]


def test_count(count: int, test_fraction: float) -> int:
    """How many of ``count`` samples a client holds out: ``test_fraction`` of them, at least one,
    and never all (one stays for training)."""
    return min(max(1, round(count * test_fraction)), count - 1)


def split_client(indices: Indices, test_fraction: float, seed: int, client: int) -> tuple[Indices, Indices]:
    """Shuffle a client's indices (seeded by client) and hold out ``test_fraction`` (>= 1 sample)."""
    shuffled = np.random.default_rng([seed, 3, client]).permutation(indices)
    num_test = test_count(len(shuffled), test_fraction)
    return shuffled[num_test:], shuffled[:num_test]


def make_partition(
    labels: NDArray[np.int64] | None,
    groups: NDArray[np.int64] | None,
    total: int,
    clients: int,
    settings: PartitionSettings,
    test_fraction: float,
    seed: int,
    dataset: str = "the dataset",
) -> Partition:
    """Partition, check that no client is too small, and split every client into train/test."""
    parts, unseen = assign(labels, groups, total, clients, settings, seed, dataset)
    for client, indices in enumerate(parts):
        if len(indices) < 2:
            raise DataError(
                f"partition.name = {settings.name!r} gives client {client} of dataset '{dataset}' "
                f"{len(indices)} sample(s); expected at least 2 (one train, one test): use fewer "
                "clients or another partitioner"
            )
    splits = [split_client(indices, test_fraction, seed, client) for client, indices in enumerate(parts)]
    return Partition(
        train=tuple(train for train, _ in splits),
        test=tuple(test for _, test in splits),
        unseen=tuple(unseen),
    )
