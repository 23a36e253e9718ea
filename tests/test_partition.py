"""Partitioners: coverage, seeding, the non-IID property each promises, and bad inputs."""

import numpy as np
import pytest

from fedpersonal.config import ConfigError, parse_config
from fedpersonal.data.errors import DataError
from fedpersonal.data.partition import PartitionSettings, make_partition, quantity_sizes
from fedpersonal.tasks import TASK_SECTIONS

LABELS = np.repeat(np.arange(10), 40)  # 400 samples, 10 classes of 40
GROUPS = np.repeat(np.arange(8), 50)  # 8 natural users of 50


def partition(name, clients=8, seed=0, **settings):
    return make_partition(LABELS, GROUPS, len(LABELS), clients, PartitionSettings(name=name, **settings), 0.25, seed)


def client_indices(result):
    return [np.concatenate([train, test]) for train, test in zip(result.train, result.test)]


def classes_per_client(result):
    return [len(np.unique(LABELS[indices])) for indices in client_indices(result)]


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "shard", "natural", "quantity"])
def test_clients_are_disjoint_split_and_seeded(name):
    result = partition(name)
    everything = np.concatenate(client_indices(result))
    assert len(everything) == len(set(everything.tolist()))  # no sample in two clients
    for train, test in zip(result.train, result.test):
        assert len(test) == max(1, round(0.25 * (len(train) + len(test))))
        assert not set(train.tolist()) & set(test.tolist())
    again = partition(name)
    assert all(np.array_equal(a, b) for a, b in zip(result.train, again.train))
    if name != "natural":  # the natural partition is the data's own and does not depend on the seed
        other = partition(name, seed=1)
        assert any(
            not np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(client_indices(result), client_indices(other))
        )


def test_iid_quantity_dirichlet_and_natural_use_every_sample():
    for name in ("iid", "quantity", "dirichlet", "natural"):
        assert sum(len(i) for i in client_indices(partition(name))) == len(LABELS), name


def test_dirichlet_alpha_controls_label_skew():
    skewed = np.mean(classes_per_client(partition("dirichlet", alpha=0.05, min_size=5)))
    balanced = np.mean(classes_per_client(partition("dirichlet", alpha=100.0, min_size=5)))
    assert balanced == 10 and skewed < 5


def test_pathological_and_shard_limit_classes_per_client():
    assert max(classes_per_client(partition("pathological", classes_per_client=2))) <= 2
    # 8 clients x 2 shards of 25 sorted-by-label samples: a shard spans at most 2 classes.
    assert max(classes_per_client(partition("shard", shards_per_client=2))) <= 4


def test_natural_groups_users_and_keeps_the_rest_unseen():
    result = partition("natural", clients=3, users_per_client=2)
    for client, indices in enumerate(client_indices(result)):
        assert sorted(set(GROUPS[indices].tolist())) == [2 * client, 2 * client + 1]
    assert [sorted(set(GROUPS[u].tolist())) for u in result.unseen] == [[6, 7]]


def test_quantity_sizes_are_skewed_with_a_floor():
    sizes = quantity_sizes(400, 8, PartitionSettings(name="quantity", alpha=0.3, min_size=10), seed=0)
    assert sum(sizes) == 400 and min(sizes) >= 10 and max(sizes) > 3 * min(sizes)
    result = partition("quantity", alpha=0.3)
    assert sorted(len(i) for i in client_indices(result)) == sorted(sizes)


def test_partition_section_is_validated_like_any_run_config():
    cfg = parse_config({"partition.name": "dirichlet", "partition.alpha": 0.1}, TASK_SECTIONS)
    assert cfg.section(PartitionSettings) == PartitionSettings(name="dirichlet", alpha=0.1)
    with pytest.raises(ConfigError, match=r"'partition.alpha' = 0.0 is invalid; expected a number > 0"):
        parse_config({"partition.alpha": 0.0}, TASK_SECTIONS)
    with pytest.raises(ConfigError, match=r"'partition.alpha' = -1.0 is invalid"):
        parse_config({"partition.alpha": -1.0}, TASK_SECTIONS)
    with pytest.raises(ConfigError, match=r"'partition.name' = 'random' is invalid; expected one of \['iid'"):
        parse_config({"partition.name": "random"}, TASK_SECTIONS)


@pytest.mark.parametrize(
    ("clients", "settings", "labels", "groups", "message"),
    [
        (
            300,
            {"name": "iid"},
            LABELS,
            None,
            r"'num-clients' = 300 but dataset 'toy' has 400 samples; expected at most 200",
        ),
        (9, {"name": "natural"}, LABELS, GROUPS, r"'num-clients' = 9 but dataset 'toy' has only 8 natural client\(s\)"),
        (4, {"name": "natural"}, LABELS, None, r"'natural' needs per-sample users, but dataset 'toy' has none"),
        (4, {"name": "dirichlet"}, None, GROUPS, r"splits by class label, but dataset 'toy' has no class labels"),
        (
            8,
            {"name": "dirichlet", "min_size": 60},
            LABELS,
            None,
            r"'dirichlet' cannot split dataset 'toy' \(400 samples\) into 8 clients",
        ),
        (
            8,
            {"name": "quantity", "min_size": 60},
            LABELS,
            None,
            r"needs 8 x partition.min-size = 480 samples but the dataset has 400",
        ),
        (20, {"name": "pathological", "classes_per_client": 11}, LABELS, None, r"'pathological' cannot split"),
    ],
)
def test_impossible_partitions_are_named(clients, settings, labels, groups, message):
    with pytest.raises(DataError, match=message):
        make_partition(labels, groups, 400, clients, PartitionSettings(**settings), 0.2, 0, "toy")


def test_a_client_that_would_be_empty_stops_the_run():
    groups = np.array([0] * 10 + [1] + [2] * 10)  # user 1 has one sample: no train/test split
    with pytest.raises(DataError, match=r"gives client 1 of dataset 'toy' 1 sample\(s\); expected at least 2"):
        make_partition(None, groups, 21, 3, PartitionSettings(name="natural"), 0.2, 0, "toy")
