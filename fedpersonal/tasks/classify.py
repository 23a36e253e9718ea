"""Image classification with users whose data is shifted: metric accuracy.

Every user (client ``i``) and every expert of DUA's server belongs to a :class:`Domain`, set by
section ``classify`` (``[tool.flwr.app.config.classify]``):

* ``user-shift = "corruption"`` (DUA's TransPrior): domain ``k`` is corruption ``k`` of the
  ``corruptions`` list (noise, blur, contrast, brightness, JPEG-like, ...) at ``severity``; user
  ``i`` has domain ``i mod K`` with its own draw of the corruption's parameters (severity x
  0.8..1.2, brightness direction, tint gains, the noise). All classes.
* ``user-shift = "category"`` (DUA's CatPrior): the classes are cut into ``category-groups``
  groups; domain ``k`` (and user ``i``, ``k = i mod groups``) holds only the classes of group ``k``.
  No corruption.
* ``user-shift = "none"``: one clean domain with all classes.

Datasets (``dataset``; a registry, :data:`DATASETS`): ``shapes`` (alias ``synthetic``, the default)
is the procedural generator of :mod:`fedpersonal.data.synthetic.shapes`, where every user also has
its own palette, texture and style; ``digits`` is scikit-learn's bundled 8x8 digits, upsampled to
16x16, a finite pool split once (seeded) into a server share (40%, DUA's experts) and a users' share
that section ``partition`` splits into disjoint clients like any real dataset (no sample is in two
clients); its user shift is ``corruption`` or ``none``.
``cifar10`` and ``femnist`` (:data:`PARTITIONED`, read from ``data-path``) are split among the
clients by the ``partition`` section (IID, Dirichlet, pathological, shard, natural writers,
quantity skew); they need ``classify.user-shift = "none"`` and have no server share (no DUA).

The server's labelled data (DUA experts) comes from sources no client has: shapes styles of
:data:`SERVER_SOURCES` server collections, or the server part of a pooled dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.ndimage import zoom
from torch import nn
from torch.nn import functional as F

from fedpersonal.config import ConfigError, RunConfig, require_choice, setting
from fedpersonal.data.containers import ImageSet
from fedpersonal.data.corruptions import CORRUPTIONS, corrupt
from fedpersonal.data.federated import DataRequest, client_split, federated, prepare
from fedpersonal.data.partition import Partition, PartitionSettings, make_partition
from fedpersonal.data.real.digits import load_digits
from fedpersonal.data.synthetic import shapes
from fedpersonal.evaluation import data_partitions
from fedpersonal.models.cnn import SmallCNN
from fedpersonal.tasks.base import ClientData, Task, Tensors
from fedpersonal.tasks.gaze import split_train_test
from fedpersonal.training import iterate_batches, stack

SHIFTS = ("corruption", "category", "none")
ROLES = {"user": 0, "server": 1}
SERVER_SOURCES = 40  # server collections a domain's labelled data is drawn from
SERVER_SOURCE_OFFSET = 1_000_000
SERVER_POOL_SHARE = 0.4
EVAL_BATCH = 512
Images = NDArray[np.uint8]
Labels = NDArray[np.int64]


def _corruption_list(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@dataclass(frozen=True)
class ClassifySettings:
    """Run-config section ``classify``: how users are shifted, and the model width."""

    SECTION: ClassVar[str] = "classify"

    user_shift: str = setting(
        "corruption", "one of 'corruption' (TransPrior), 'category' (CatPrior), 'none'", lambda v: v in SHIFTS
    )
    corruptions: str = setting(
        ",".join(CORRUPTIONS),
        f"a comma-separated, non-empty list of {sorted(CORRUPTIONS)}",
        lambda v: bool(_corruption_list(v)) and set(_corruption_list(v)) <= set(CORRUPTIONS),
    )
    severity: float = setting(0.6, "a number in (0, 1]", lambda v: 0 < v <= 1)
    category_groups: int = setting(
        5, "an integer >= 1 (CatPrior: the classes are cut into this many groups)", lambda v: v >= 1
    )
    width: int = setting(16, "an integer >= 4 (channels of the first conv layer)", lambda v: v >= 4)


@dataclass(frozen=True)
class Domain:
    """A data domain: which classes it holds and which corruption (None: clean) it applies."""

    name: str
    classes: tuple[int, ...]
    corruption: str | None = None


Draw = Callable[[RunConfig, str, int, int, tuple[int, ...]], tuple[Images, Labels]]


@dataclass(frozen=True)
class ImageSource:
    """A labelled image source: ``draw(cfg, role, source, count, classes)`` gives uint8 images
    (N, C, H, W) and labels of ``source`` (a user id, or a server collection) for ``role``
    ("user" or "server"), with labels in ``classes``."""

    channels: int
    num_classes: int
    draw: Draw
    pool: Callable[[], tuple[Images, Labels]] | None = None  # a finite pool: users are partitions of it


def _draw_shapes(cfg: RunConfig, role: str, source: int, count: int, classes: tuple[int, ...]) -> tuple[Images, Labels]:
    return shapes.generate(source, count, classes, cfg.seed, cfg.heterogeneity)


def pool_shares(count: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(server indices, user indices) of a pool of ``count`` samples: a seeded
    :data:`SERVER_POOL_SHARE` is the server's, the rest the users'."""
    order = np.random.default_rng([seed, 11]).permutation(count)
    cut = int(round(SERVER_POOL_SHARE * count))
    return order[:cut], order[cut:]


def pooled(load: Callable[[], tuple[Images, Labels]], channels: int, num_classes: int) -> ImageSource:
    """A finite pool of labelled images (N, C, H, W). The server draws from its share (DUA's
    experts); the users' share is split into disjoint clients by section ``partition``
    (:func:`pooled_client`), never drawn with overlaps."""

    def draw(cfg: RunConfig, role: str, source: int, count: int, classes: tuple[int, ...]) -> tuple[Images, Labels]:
        if role != "server":
            raise ValueError(f"dataset {cfg.dataset!r}: users get disjoint partitions (pooled_client), not draws")
        images, labels = load()
        part, _ = pool_shares(len(labels), cfg.seed)
        candidates = part[np.isin(labels[part], classes)]
        rng = np.random.default_rng([cfg.seed, ROLES[role], source, 12])
        chosen = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
        return images[chosen], labels[chosen]

    return ImageSource(channels, num_classes, draw, load)


@lru_cache(maxsize=1)
def _digits() -> tuple[Images, Labels]:
    data = load_digits()
    upsampled = zoom(data.images.astype(np.float32), (1, 2, 2), order=1)
    return np.clip(np.rint(upsampled), 0, 255).astype(np.uint8)[:, None], data.labels


def _no_server_share(
    cfg: RunConfig, role: str, source: int, count: int, classes: tuple[int, ...]
) -> tuple[Images, Labels]:
    raise ConfigError(
        f"run config key 'dataset' = {cfg.dataset!r} is split among the clients by section 'partition' "
        "and has no server share; expected a pooled dataset ('shapes', 'digits') for server-side data"
    )


SHAPES = ImageSource(3, shapes.NUM_CLASSES, _draw_shapes)
# Real datasets whose clients are the partitions of section `partition` (fedpersonal.data.partition).
PARTITIONED: dict[str, ImageSource] = {
    "cifar10": ImageSource(3, 10, _no_server_share),
    "femnist": ImageSource(1, 62, _no_server_share),
}
DATASETS: dict[str, ImageSource] = {
    "synthetic": SHAPES,
    "shapes": SHAPES,
    "digits": pooled(_digits, channels=1, num_classes=10),
    **PARTITIONED,
}


def partition_request(cfg: RunConfig) -> DataRequest:
    """The partitioned real data of the run; a ConfigError unless ``classify.user-shift`` is none."""
    shift = cfg.section(ClassifySettings).user_shift
    if shift != "none":
        raise ConfigError(
            f"run config key 'classify.user-shift' = {shift!r} is invalid with dataset {cfg.dataset!r}, whose "
            "clients come from section 'partition'; expected 'none'"
        )
    return DataRequest.from_config(cfg)


def image_tensors(samples: ImageSet) -> Tensors:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of a loaded image set."""
    images = samples.images if samples.images.ndim == 4 else samples.images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(samples.labels)


def source_of(cfg: RunConfig) -> ImageSource:
    """The image source named by ``dataset``; a ConfigError names the choices."""
    require_choice("dataset", cfg.dataset, DATASETS)
    return DATASETS[cfg.dataset]


def domains(cfg: RunConfig) -> list[Domain]:
    """The run's domains: one per corruption, per category group, or a single clean one."""
    settings = cfg.section(ClassifySettings)
    every = tuple(range(source_of(cfg).num_classes))
    if settings.user_shift == "corruption":
        return [Domain(name, every, name) for name in _corruption_list(settings.corruptions)]
    if settings.user_shift == "category":
        groups = np.array_split(np.array(every), min(settings.category_groups, len(every)))
        return [Domain(f"classes-{'-'.join(map(str, g))}", tuple(int(c) for c in g)) for g in groups]
    return [generic_domain(cfg)]


def generic_domain(cfg: RunConfig) -> Domain:
    """Clean data of every class."""
    return Domain("clean", tuple(range(source_of(cfg).num_classes)))


def user_domain(cfg: RunConfig, partition_id: int) -> Domain:
    """The domain of user ``partition_id``: domain ``partition_id mod K``."""
    options = domains(cfg)
    return options[partition_id % len(options)]


@lru_cache(maxsize=256)
def _domain_samples(key: tuple, domain: Domain, role: str, source: int, count: int) -> Tensors:
    dataset, data_path, seed, heterogeneity, settings = key
    cfg = RunConfig(
        dataset=dataset, data_path=data_path, seed=seed, heterogeneity=heterogeneity, sections={"classify": settings}
    )
    images, labels = source_of(cfg).draw(cfg, role, source, count, domain.classes)
    if domain.corruption is not None:
        rng = np.random.default_rng([cfg.seed, ROLES[role], source, 13])
        severity = min(1.0, cfg.section(ClassifySettings).severity * rng.uniform(0.8, 1.2))
        images = corrupt(images, domain.corruption, severity, rng)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def domain_samples(cfg: RunConfig, domain: Domain, role: str, source: int, count: int) -> Tensors:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of ``source`` in ``domain``, cached."""
    key = (cfg.dataset, cfg.data_path, cfg.seed, cfg.heterogeneity, cfg.section(ClassifySettings))
    return _domain_samples(key, domain, role, source, count)


@lru_cache(maxsize=8)
def _pool_partition(
    dataset: str, seed: int, clients: int, settings: PartitionSettings, test_fraction: float
) -> tuple[NDArray[np.int64], Partition]:
    pool = DATASETS[dataset].pool
    assert pool is not None
    _, labels = pool()
    _, users = pool_shares(len(labels), seed)
    return users, make_partition(labels[users], None, len(users), clients, settings, test_fraction, seed, dataset)


def pool_partition(cfg: RunConfig) -> tuple[NDArray[np.int64], Partition]:
    """(the users' share of the pool, its partition into the run's clients); a ConfigError for a
    category shift, which a pool's clients cannot have (use a class-skewed partition instead)."""
    if cfg.section(ClassifySettings).user_shift == "category":
        raise ConfigError(
            f"run config key 'classify.user-shift' = 'category' is invalid with dataset {cfg.dataset!r}, whose "
            "clients are partitions of one pool; expected 'corruption' or 'none' (class skew: partition.name = "
            "'pathological' or 'dirichlet')"
        )
    clients, settings = data_partitions(cfg), cfg.section(PartitionSettings)
    return _pool_partition(cfg.dataset, cfg.seed, clients, settings, cfg.test_fraction)


def pooled_client(cfg: RunConfig, partition_id: int) -> ClientData:
    """Client ``partition_id`` of a pooled dataset: its disjoint partition of the users' share
    (section ``partition``), split into train/test, with its domain's corruption if any."""
    pool = source_of(cfg).pool
    assert pool is not None
    images, labels = pool()
    users, partition = pool_partition(cfg)
    domain = user_domain(cfg, partition_id)
    rng = np.random.default_rng([cfg.seed, ROLES["user"], partition_id, 13])
    severity = min(1.0, cfg.section(ClassifySettings).severity * rng.uniform(0.8, 1.2))
    splits = []
    for indices in (partition.train[partition_id], partition.test[partition_id]):
        chosen = users[indices]
        part = (
            images[chosen] if domain.corruption is None else corrupt(images[chosen], domain.corruption, severity, rng)
        )
        splits.append((torch.from_numpy(np.ascontiguousarray(part)), torch.from_numpy(labels[chosen].astype(np.int64))))
    return ClientData(splits[0], splits[1])


def server_data(cfg: RunConfig, domain: Domain, count: int) -> Tensors:
    """About ``count`` labelled server samples of ``domain``, from :data:`SERVER_SOURCES` collections."""
    share = max(1, -(-count // SERVER_SOURCES))
    parts = [domain_samples(cfg, domain, "server", SERVER_SOURCE_OFFSET + j, share) for j in range(SERVER_SOURCES)]
    return stack(parts)


class ClassifyTask(Task):
    """:class:`SmallCNN` classification with a cross-entropy loss; metric accuracy."""

    name = "classify"
    metric = "accuracy"
    better = "higher"
    predicts_classes = True

    def build_model(self) -> nn.Module:
        """A new :class:`SmallCNN` for the run's dataset and ``classify.width``."""
        source = source_of(self.cfg)
        return SmallCNN(source.channels, source.num_classes, self.cfg.section(ClassifySettings).width)

    def prepare_data(self) -> None:
        """Decode, cache, partition and check a partitioned dataset before clients start."""
        if self.cfg.dataset in PARTITIONED:
            prepare(partition_request(self.cfg))
        elif source_of(self.cfg).pool is not None:
            pool_partition(self.cfg)

    def client_data(self, partition_id: int) -> ClientData:
        """User ``partition_id`` in its domain (or its partition of a real dataset), split into train/test."""
        cfg = self.cfg
        if cfg.dataset in PARTITIONED:
            train, test = client_split(partition_request(cfg), partition_id)
            return ClientData(image_tensors(train), image_tensors(test))
        if source_of(cfg).pool is not None:
            return pooled_client(cfg, partition_id)
        domain = user_domain(cfg, partition_id)
        samples = domain_samples(cfg, domain, "user", partition_id, cfg.samples_per_client)
        if len(samples[0]) < 2:
            raise ValueError(f"client {partition_id} has {len(samples[0])} samples of {domain.name}; expected >= 2")
        return split_train_test(samples, cfg.test_fraction)

    def reads_files(self) -> bool:
        """CIFAR-10 and FEMNIST are read from ``data-path``."""
        return self.cfg.dataset in PARTITIONED

    def sections_read(self) -> set[str]:
        """``classify``, and ``partition`` for every finite dataset (read from files or a pool)."""
        return super().sections_read() | ({"partition"} if source_of(self.cfg).pool is not None else set())

    def unread_keys(self) -> set[str]:
        """A pool's clients are partitions: the generator's keys and ``data-path`` are not read."""
        if source_of(self.cfg).pool is not None:
            return {"data-path", "samples-per-client", "heterogeneity"}
        return super().unread_keys()

    def max_examples(self) -> int:
        """``samples-per-client`` for drawn users; the whole dataset's size for a partitioned one."""
        if self.cfg.dataset in PARTITIONED:
            return len(federated(partition_request(self.cfg))[0])
        pool = source_of(self.cfg).pool
        return self.cfg.samples_per_client if pool is None else len(pool()[1])

    def expert_domains(self) -> list[Domain]:
        """The domains DUA's server trains one expert each for (= the users' domains)."""
        return domains(self.cfg)

    def generic_domain(self) -> Domain:
        """The domain of DUA's generic model: clean data of every class."""
        return generic_domain(self.cfg)

    def server_data(self, domain: Domain, count: int) -> Tensors:
        """Labelled server data of ``domain`` (sources no client has)."""
        return server_data(self.cfg, domain, count)

    def forward(self, model: nn.Module, inputs: Tensors) -> torch.Tensor:
        """Logits of images scaled to [0, 1]."""
        return model(inputs[0].float() / 255.0)

    def flip_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Class ``C - 1 - y`` for class ``y`` of ``C``."""
        return source_of(self.cfg).num_classes - 1 - labels

    def loss(self, model: nn.Module, batch: Tensors) -> torch.Tensor:
        """Mean cross-entropy."""
        return F.cross_entropy(self.forward(model, batch), batch[1])

    def evaluate(self, model: nn.Module, tensors: Tensors) -> dict[str, float]:
        """Accuracy and mean cross-entropy, in evaluation mode."""
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for batch in iterate_batches(tensors, EVAL_BATCH):
                logits = self.forward(model, batch)
                correct += int((logits.argmax(1) == batch[1]).sum())
                loss += float(F.cross_entropy(logits, batch[1], reduction="sum"))
        count = len(tensors[0])
        return {"accuracy": correct / count, "loss": loss / count}
