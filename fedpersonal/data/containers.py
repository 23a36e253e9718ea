"""Plain numpy containers returned by every loader (no torch, no Flower).

Per-sample arrays share their first dimension; :meth:`subset` selects samples from all of them
at once (a copy, also when the arrays are memory-mapped from the cache).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

T = TypeVar("T", bound="Samples")


class Samples:
    """Mixin of the containers: length, per-sample selection."""

    per_sample: ClassVar[tuple[str, ...]]

    def __len__(self) -> int:
        return len(getattr(self, self.per_sample[0]))

    def subset(self: T, indices: NDArray[np.int64]) -> T:
        """The samples at ``indices`` (arrays copied into memory; names kept)."""
        index = np.asarray(indices, dtype=np.int64)
        changes: dict[str, Any] = {}
        for name in self.per_sample:
            value = getattr(self, name)
            if value is not None:
                changes[name] = np.ascontiguousarray(value[index])
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ImageSet(Samples):
    """Labelled images.

    ``images`` uint8 (N, H, W) grayscale or (N, H, W, 3) RGB; ``labels`` int64 (N,) indexing
    ``class_names``; ``groups`` int64 (N,) indexing ``group_names`` (the natural owner of a sample:
    writer, identity, ...) or None when the dataset has no natural users.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    class_names: tuple[str, ...]
    groups: NDArray[np.int64] | None = None
    group_names: tuple[str, ...] = ()
    per_sample: ClassVar[tuple[str, ...]] = ("images", "labels", "groups")


@dataclass(frozen=True)
class GazeSet(Samples):
    """Gaze samples: ``images`` uint8 (N, H, W[, 3]), ``gaze`` and ``pose`` float32 (N, 2) as
    (pitch, yaw) in radians, ``groups`` int64 (N,) indexing ``group_names`` (participants)."""

    images: NDArray[np.uint8]
    gaze: NDArray[np.float32]
    pose: NDArray[np.float32]
    groups: NDArray[np.int64]
    group_names: tuple[str, ...]
    per_sample: ClassVar[tuple[str, ...]] = ("images", "gaze", "pose", "groups")

    labels: ClassVar[None] = None  # regression: no class labels to partition by


@dataclass(frozen=True)
class VerificationSet(Samples):
    """Face verification protocol: identity-labelled ``images`` plus ``pairs`` (P, 2) of image
    indices, ``same`` (P,) bool (same identity) and ``folds`` (P,) int64 (cross-validation fold)."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    class_names: tuple[str, ...]
    pairs: NDArray[np.int64]
    same: NDArray[np.bool_]
    folds: NDArray[np.int64]
    per_sample: ClassVar[tuple[str, ...]] = ("images", "labels")

    @property
    def groups(self) -> NDArray[np.int64]:
        """Identities are the natural groups of a face dataset."""
        return self.labels

    @property
    def group_names(self) -> tuple[str, ...]:
        """Names of the identities."""
        return self.class_names
