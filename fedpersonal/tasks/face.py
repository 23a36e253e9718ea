"""Face recognition: an embedding CNN trained with a margin softmax; 1:1 and 1:N metrics.

Data (``dataset = "synthetic"``, :mod:`fedpersonal.data.synthetic.faces`): client ``i`` holds
its own identities (between ``face.identities-min`` and ``face.identities-max``), all taken by its
own camera; each identity's images are split into train and test by ``test-fraction``. The server
holds *public* identities (disjoint from every client's) and pretrains the generic backbone on
them (:meth:`FaceTask.initial_model`): every face algorithm starts from that model. *Unseen*
identities (disjoint from both) give the generic evaluation: verification pairs (all genuine
pairs plus as many random impostor pairs), evaluated on the server.

Real data (``dataset = "imagefolder"``, :class:`ImageFolderFaces`): a face tree at ``data-path``
(e.g. CASIA-WebFace) split by identity (``partition.users-per-client`` per client), its leftover
identities public, and LFW's 10-fold pairs at ``face.lfw-path`` as the generic evaluation.

Metrics (:mod:`fedpersonal.metrics.face`):

* :meth:`FaceTask.client_metrics` (a client's model on its own identities): 1:1 TAR@FAR over all
  pairs of its test images; 1:N TPIR@FPIR with galleries of mean train embeddings, IJB-C style:
  the client's identities are split into two galleries G1/G2, each test image is a mated probe of
  its own gallery and a non-mated probe of the other. The rates are those the smallest possible
  client supports, so every client reports the same keys.
* :meth:`FaceTask.unseen_metrics` (the generic model on unseen identities): 10-fold
  verification accuracy and TAR@FAR at every FAR the impostor pairs support.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedpersonal.config import ConfigError, RunConfig, require_choice, setting
from fedpersonal.data.containers import ImageSet, VerificationSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.federated import DataRequest, client_split, federated, prepare
from fedpersonal.data.real import load_dataset
from fedpersonal.data.real.lfw import LAYOUT as LFW_LAYOUT
from fedpersonal.data.synthetic import faces
from fedpersonal.device import module_device, resolve_device, to_device, to_numpy
from fedpersonal.losses.face import cosface_loss
from fedpersonal.metrics import face as fm
from fedpersonal.models.face import EMBEDDING_DIM, CosineClassifier, FaceEmbeddingNet
from fedpersonal.tasks.base import ClientData, Task, Tensors
from fedpersonal.training import iterate_batches, train_epochs

EVAL_BATCH = 512
PUBLIC_FEATURES = "public-features"  # FedFR: ArrayRecord of public features and classifier rows
# Server pretraining recipe: CosFace from scratch trains poorly at s=30, m=0.4 on a small public
# set, so the server uses a milder margin softmax (directions of its rows are what clients use).
PRETRAIN_SCALE, PRETRAIN_MARGIN = 10.0, 0.2
PRETRAIN_MOMENTUM, PRETRAIN_WEIGHT_DECAY = 0.9, 5e-4
LFW_CROP = 150  # centre crop of LFW's 250x250 images (the face) before resizing


def _at_least(minimum: int):
    return lambda value: value >= minimum


@dataclass(frozen=True)
class FaceSettings:
    """Run-config section ``face`` (``[tool.flwr.app.config.face]``)."""

    SECTION: ClassVar[str] = "face"

    image_size: int = setting(32, "an integer in [16, 128] (pixels per side)", lambda v: 16 <= v <= 128)
    identities_min: int = setting(10, "an integer >= 2 (identities of the smallest client)", _at_least(2))
    identities_max: int = setting(20, "an integer >= face.identities-min", _at_least(2))
    images_per_identity: int = setting(15, "an integer >= 3 (split into train/test by test-fraction)", _at_least(3))
    public_identities: int = setting(100, "an integer >= 2 (the server's public identities)", _at_least(2))
    public_images_per_identity: int = setting(10, "an integer >= 1", _at_least(1))
    unseen_identities: int = setting(100, "an integer >= 2 (identities of the generic evaluation)", _at_least(2))
    unseen_images_per_identity: int = setting(5, "an integer >= 2", _at_least(2))
    pretrain_epochs: int = setting(12, "an integer >= 0 (server pretraining on public identities)", _at_least(0))
    pretrain_lr: float = setting(0.1, "a number > 0", lambda v: v > 0)
    first_epochs: int = setting(10, "an integer >= 1 (local epochs of round 1)", _at_least(1))
    epoch_decrease: int = setting(2, "an integer >= 0 (fewer local epochs each round)", _at_least(0))
    min_epochs: int = setting(4, "an integer >= 1 (local epochs never fall below)", _at_least(1))
    cosface_scale: float = setting(30.0, "a number > 0 (CosFace s)", lambda v: v > 0)
    cosface_margin: float = setting(0.4, "a number in [0, 1) (CosFace m)", lambda v: 0 <= v < 1)
    lfw_path: str = setting(
        "", "the LFW directory (pairs.txt and lfw/Name/Name_0001.jpg); needed by dataset 'imagefolder'"
    )


def test_images_per_identity(settings: FaceSettings, test_fraction: float) -> int:
    """Test images of each client identity (the rest train)."""
    return round(settings.images_per_identity * test_fraction)


def check_settings(settings: FaceSettings, test_fraction: float) -> None:
    """Cross-key checks the per-key rules cannot make; a ConfigError names the keys."""
    if settings.identities_max < settings.identities_min:
        raise ConfigError(
            f"run config key 'face.identities-max' = {settings.identities_max} is invalid; "
            f"expected >= face.identities-min = {settings.identities_min}"
        )
    num_test = test_images_per_identity(settings, test_fraction)
    if num_test < 2 or num_test >= settings.images_per_identity:
        raise ConfigError(
            f"run config keys 'face.images-per-identity' = {settings.images_per_identity} and "
            f"'test-fraction' = {test_fraction} give {num_test} test image(s) per identity; "
            "expected at least 2 test and 1 train image per identity"
        )


def face_settings(cfg: RunConfig) -> FaceSettings:
    """The checked ``face`` section of ``cfg`` (defaults when the section was not parsed)."""
    settings = cfg.section(FaceSettings)
    check_settings(settings, cfg.test_fraction)
    return settings


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float network input in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Embeddings of ``images`` (moved to ``model``'s device first) in evaluation mode, batched, without
    gradients; on ``model``'s device."""
    model.eval()
    (images,) = to_device((images,), module_device(model))
    with torch.no_grad():
        return torch.cat([model(pixels(batch)) for (batch,) in iterate_batches((images,), EVAL_BATCH)])


def to_tensors(samples: faces.FaceSamples) -> Tensors:
    """(images uint8 (N, 1, S, S), labels int64 (N,))."""
    return torch.from_numpy(samples.images[:, None]), torch.from_numpy(samples.labels)


def split_per_identity(tensors: Tensors, per_identity: int, num_test: int) -> ClientData:
    """The last ``num_test`` images of each identity test, the others train (identity-major)."""
    position = torch.arange(len(tensors[1])) % per_identity
    test = position >= per_identity - num_test
    return ClientData(tuple(t[~test] for t in tensors), tuple(t[test] for t in tensors))


@dataclass(frozen=True)
class VerificationPairs:
    """Images and the pairs to verify: indices, genuine flags and the 10-fold split."""

    images: torch.Tensor
    first: np.ndarray
    second: np.ndarray
    genuine: np.ndarray
    folds: np.ndarray


def _from_many_cameras(
    seed: int, namespace: int, identities: int, per_identity: int, settings: FaceSettings, heterogeneity: float
) -> faces.FaceSamples:
    """A collection gathered from many devices: every image from a random camera."""
    return faces.generate_faces(
        seed, namespace, 0, identities, per_identity, settings.image_size, heterogeneity=heterogeneity
    )


class SyntheticFaces:
    """The embedded face generator as a face data source."""

    @classmethod
    def from_config(cls, cfg: RunConfig) -> type[SyntheticFaces]:
        """The generator needs nothing beyond the arguments of its methods."""
        return cls

    @staticmethod
    def prepare() -> None:
        """Nothing to decode or check."""

    @staticmethod
    @lru_cache(maxsize=64)
    def client(
        seed: int, settings: FaceSettings, heterogeneity: float, test_fraction: float, client: int
    ) -> ClientData:
        """Client ``client``'s identities, split per identity into train/test."""
        count = faces.client_identity_count(seed, client, settings.identities_min, settings.identities_max)
        samples = faces.client_faces(
            seed, client, count, settings.images_per_identity, settings.image_size, heterogeneity
        )
        num_test = test_images_per_identity(settings, test_fraction)
        return split_per_identity(to_tensors(samples), settings.images_per_identity, num_test)

    @staticmethod
    @lru_cache(maxsize=4)
    def public(seed: int, settings: FaceSettings, heterogeneity: float) -> Tensors:
        """The server's public identities, each image from a random camera."""
        samples = _from_many_cameras(
            seed, faces.PUBLIC, settings.public_identities, settings.public_images_per_identity, settings, heterogeneity
        )
        return to_tensors(samples)

    @staticmethod
    @lru_cache(maxsize=4)
    def verification(seed: int, settings: FaceSettings, heterogeneity: float) -> VerificationPairs:
        """Unseen identities: all genuine pairs and as many random impostor pairs."""
        samples = _from_many_cameras(
            seed, faces.UNSEEN, settings.unseen_identities, settings.unseen_images_per_identity, settings, heterogeneity
        )
        first, second, genuine = fm.all_pairs(samples.labels)
        rng = np.random.default_rng([seed, faces.UNSEEN, 1])
        impostors = rng.choice(np.flatnonzero(~genuine), size=int(genuine.sum()), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(genuine), impostors]))
        return VerificationPairs(
            torch.from_numpy(samples.images[:, None]),
            first[keep],
            second[keep],
            genuine[keep],
            fm.ten_folds(len(keep), seed),
        )


def renumbered(labels: np.ndarray) -> torch.Tensor:
    """Identity labels renumbered 0..K-1 in identity order."""
    _, index = np.unique(labels, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64).reshape(-1))


def identity_tensors(samples: ImageSet) -> Tensors:
    """(images uint8 (N, 1, S, S), labels renumbered 0..K-1)."""
    return torch.from_numpy(samples.images[:, None]), renumbered(samples.labels)


@dataclass(frozen=True)
class ImageFolderFaces:
    """A real face tree (ImageFolder layout, e.g. CASIA-WebFace) as a face data source.

    Clients hold disjoint identities (``partition.name = 'natural'``, ``partition.users-per-client``
    each, train/test by ``test-fraction``); the identities no client got are the server's public
    set; LFW's 10-fold pairs at ``face.lfw-path`` give the generic evaluation. Images are decoded
    to grayscale ``face.image-size`` squares (LFW centre-cropped to 150 pixels first).
    """

    request: DataRequest
    lfw_path: str
    image_size: int

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ImageFolderFaces:
        """The source of run ``cfg`` (its data-path, partition section and face section)."""
        settings = face_settings(cfg)
        size = (settings.image_size, settings.image_size)
        return cls(DataRequest.from_config(cfg, size=size, gray=True), settings.lfw_path, settings.image_size)

    def prepare(self) -> None:
        """Decode, cache and check the tree, its partition and LFW (server, before training)."""
        if self.request.partition.name != "natural":
            raise ConfigError(
                f"run config key 'partition.name' = {self.request.partition.name!r} would share identities "
                f"between face clients; expected 'natural' for dataset '{self.request.dataset}'"
            )
        prepare(self.request)
        self._lfw()

    def _lfw(self) -> VerificationSet:
        if not self.lfw_path:
            raise ConfigError(
                f"run config key 'face.lfw-path' is empty; dataset '{self.request.dataset}' needs {LFW_LAYOUT}"
            )
        if not Path(self.lfw_path).expanduser().is_dir():
            raise DataError(
                f"run config key 'face.lfw-path' = {self.lfw_path!r} is not a directory; expected {LFW_LAYOUT}"
            )
        return load_dataset("lfw", self.lfw_path, size=(self.image_size, self.image_size), crop=LFW_CROP, gray=True)

    def client(
        self, seed: int, settings: FaceSettings, heterogeneity: float, test_fraction: float, client: int
    ) -> ClientData:
        """Client ``client``'s identities (labels 0..K-1 shared by its train and test split)."""
        train, test = client_split(self.request, client)
        labels = renumbered(np.concatenate([train.labels, test.labels]))
        return ClientData(
            (torch.from_numpy(train.images[:, None]), labels[: len(train)]),
            (torch.from_numpy(test.images[:, None]), labels[len(train) :]),
        )

    @lru_cache(maxsize=4)  # noqa: B019 - one source object per dataset path, alive for the process
    def public(self, seed: int, settings: FaceSettings, heterogeneity: float) -> Tensors:
        """The identities no client got (a DataError when the clients took every identity)."""
        data, partition = federated(self.request)
        if not partition.unseen:
            raise DataError(
                f"run config key 'data-path' = {self.request.path!r} has {len(np.unique(data.labels))} identities and "
                "the clients (num-clients x partition.users-per-client) take them all; expected some left for "
                "the server's public set"
            )
        return identity_tensors(data.subset(np.concatenate(partition.unseen)))

    @lru_cache(maxsize=4)  # noqa: B019 - one source object per dataset path, alive for the process
    def verification(self, seed: int, settings: FaceSettings, heterogeneity: float) -> VerificationPairs:
        """LFW's pairs, genuine flags and folds."""
        lfw = self._lfw()
        return VerificationPairs(
            torch.from_numpy(np.array(lfw.images[:, None])), lfw.pairs[:, 0], lfw.pairs[:, 1], lfw.same, lfw.folds
        )


# Face data sources by run-config `dataset`; `from_config(cfg)` gives the run's source (see
# `face_source`). A source (like SyntheticFaces) provides, with hashable arguments:
# prepare() (server, before training); client(seed, settings, heterogeneity, test_fraction,
# client) -> ClientData of (images uint8 (N, 1, S, S), labels 0..K-1); public(seed, settings,
# heterogeneity) -> (images, labels 0..P-1); verification(seed, settings, heterogeneity) -> VerificationPairs.
FACE_DATASETS: dict[str, type[SyntheticFaces] | type[ImageFolderFaces]] = {
    "synthetic": SyntheticFaces,
    "imagefolder": ImageFolderFaces,
}
FaceSource = type[SyntheticFaces] | ImageFolderFaces  # what `from_config` gives


def face_source(cfg: RunConfig) -> FaceSource:
    """The face data source of run ``cfg`` (a ConfigError names an unknown ``dataset``)."""
    require_choice("dataset", cfg.dataset, tuple(FACE_DATASETS))
    return FACE_DATASETS[cfg.dataset].from_config(cfg)


@lru_cache(maxsize=4)
def pretrain(
    source: FaceSource, seed: int, settings: FaceSettings, heterogeneity: float, batch_size: int, device: str = "cpu"
) -> tuple[dict, torch.Tensor]:
    """The server's generic model: CosFace (s=10, m=0.2) on the public identities, seeded, trained on
    ``device`` (initialised on the CPU).

    Returns the backbone's state dict and the public classifier rows, on the CPU (cached per process).
    """
    images, labels = to_device(source.public(seed, settings, heterogeneity), torch.device(device))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FaceEmbeddingNet()
        classifier = CosineClassifier(F.normalize(torch.randn(int(labels.max()) + 1, EMBEDDING_DIM), dim=1))
        module = nn.ModuleDict({"net": model, "classifier": classifier}).to(device)

        def loss(_: nn.Module, batch: Tensors) -> torch.Tensor:
            cosines = classifier(model(pixels(batch[0])))
            return cosface_loss(cosines, batch[1], PRETRAIN_SCALE, PRETRAIN_MARGIN)

        optimizer = torch.optim.SGD(
            module.parameters(), lr=settings.pretrain_lr, momentum=PRETRAIN_MOMENTUM, weight_decay=PRETRAIN_WEIGHT_DECAY
        )
        generator = torch.Generator().manual_seed(seed)
        train_epochs(module, (images, labels), loss, optimizer, settings.pretrain_epochs, batch_size, generator)
    state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    return state, classifier.weight.detach().to("cpu", copy=True)


class FaceTask(Task):
    """Face embeddings trained with CosFace; personalized and generic recognition metrics."""

    name = "face"
    metric = "tar@far=0.01"  # 1:1 TAR at FAR 1e-2 on the client's own identities
    better = "higher"
    datasets = tuple(FACE_DATASETS)

    def __init__(self, cfg: RunConfig | None = None) -> None:
        super().__init__(cfg)
        self.source = face_source(self.cfg)  # checks dataset first
        self.settings = face_settings(self.cfg)

    def _data_key(self) -> tuple[int, FaceSettings, float]:
        return self.cfg.seed, self.settings, self.cfg.heterogeneity

    def _pretrained(self) -> tuple[dict, torch.Tensor]:
        # Both kinds of source hash (a class; a frozen dataclass); mypy does not count a class as Hashable.
        device = str(resolve_device(self.cfg))
        return pretrain(cast(Hashable, self.source), *self._data_key(), self.cfg.batch_size, device)

    def build_model(self) -> nn.Module:
        """A new, randomly initialised :class:`FaceEmbeddingNet`."""
        return FaceEmbeddingNet()

    def initial_model(self, model: nn.Module) -> nn.Module:
        """``model`` holding the generic backbone pretrained on the public identities."""
        model.load_state_dict(self._pretrained()[0])
        return model

    def public_classifier(self) -> torch.Tensor:
        """The pretrained public classifier rows (one per public identity)."""
        return self._pretrained()[1]

    def public_data(self) -> Tensors:
        """The server's public images and their identity labels."""
        return self.source.public(*self._data_key())

    def client_data(self, partition_id: int) -> ClientData:
        """Client ``partition_id``'s own identities, split per identity into train/test."""
        seed, settings, heterogeneity = self._data_key()
        return self.source.client(seed, settings, heterogeneity, self.cfg.test_fraction, partition_id)

    def reads_files(self) -> bool:
        """An ImageFolder tree is read from ``data-path``."""
        return isinstance(self.source, ImageFolderFaces)

    def max_examples(self) -> int:
        """A client's own images plus every public image (FedFR counts its hard negatives)."""
        if isinstance(self.source, ImageFolderFaces):
            return len(federated(self.source.request)[0])
        s = self.settings
        return s.identities_max * s.images_per_identity + s.public_identities * s.public_images_per_identity

    def local_epochs(self, server_round: int) -> int:
        """Local epochs of round ``server_round`` (1-based): first, then fewer, down to a floor."""
        s = self.settings
        return max(s.min_epochs, s.first_epochs - s.epoch_decrease * (server_round - 1))

    def prepare_data(self) -> None:
        """Decode and check real face data before any client starts."""
        self.source.prepare()

    def loss(self, model: nn.Module, batch: Tensors) -> torch.Tensor:
        """Not defined: the margin softmax needs each client's own classifier (the face algorithms)."""
        raise ConfigError(
            f"task 'face' trains with a personal classifier on every client; strategy {self.cfg.strategy!r} "
            "does not keep one (the algorithm registry lists the algorithms that support task 'face')"
        )

    def personal_rates(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """FARs and FPIRs that the smallest possible client's test split supports."""
        per_identity = test_images_per_identity(self.settings, self.cfg.test_fraction)
        count = self.settings.identities_min * per_identity
        genuine = self.settings.identities_min * per_identity * (per_identity - 1) // 2
        impostors = count * (count - 1) // 2 - genuine
        return fm.supported_rates(impostors), fm.supported_rates(count)

    def client_metrics(self, model: nn.Module, data: ClientData) -> dict[str, float]:
        """1:1 TAR@FAR on pairs of the test images; 1:N TPIR@FPIR against G1/G2 galleries."""
        fars, fpirs = self.personal_rates()
        probes, probe_ids = to_numpy(embed(model, data.test[0])), to_numpy(data.test[1])
        first, second, genuine = fm.all_pairs(probe_ids)
        tar = fm.tar_at_far(fm.pair_scores(probes, first, second), genuine, fars)

        enrolled, enrolled_ids = fm.normalise(to_numpy(embed(model, data.train[0]))), to_numpy(data.train[1])
        identities = np.unique(enrolled_ids)
        templates = np.stack([enrolled[enrolled_ids == k].mean(axis=0) for k in identities])
        results = [
            fm.open_set_scores(templates[half], identities[half], probes, probe_ids)
            for half in (slice(0, None, 2), slice(1, None, 2))
        ]
        mated_scores, mated_correct, nonmated_scores = (np.concatenate(parts) for parts in zip(*results))
        tpir = fm.tpir_at_fpir(mated_scores, mated_correct, nonmated_scores, fpirs)
        return {
            **{fm.rate_key("tar@far", far): value for far, value in tar.items()},
            **{fm.rate_key("tpir@fpir", fpir): value for fpir, value in tpir.items()},
        }

    def evaluate(self, model: nn.Module, tensors: Tensors) -> dict[str, float]:
        """1:1 TAR at every supported FAR over all pairs of ``tensors`` (images, labels)."""
        first, second, genuine = fm.all_pairs(to_numpy(tensors[1]))
        scores = fm.pair_scores(to_numpy(embed(model, tensors[0])), first, second)
        tar = fm.tar_at_far(scores, genuine, fm.supported_rates(int((~genuine).sum())))
        return {fm.rate_key("tar@far", far): value for far, value in tar.items()}

    def unseen_metrics(self, model: nn.Module) -> dict[str, float]:
        """Generic evaluation: verification accuracy (10-fold) and TAR@FAR on unseen identities."""
        pairs = self.source.verification(*self._data_key())
        scores = fm.pair_scores(to_numpy(embed(model, pairs.images)), pairs.first, pairs.second)
        fars = fm.supported_rates(int((~pairs.genuine).sum()))
        tar = fm.tar_at_far(scores, pairs.genuine, fars)
        return {
            "verification-accuracy": fm.verification_accuracy(scores, pairs.genuine, pairs.folds),
            **{fm.rate_key("tar@far", far): value for far, value in tar.items()},
        }
