"""Loaders of real datasets from local files (never downloaded), registered by name.

:func:`load_dataset` checks the path, decodes the dataset once and memory-maps it from the cache
(:mod:`fedpersonal.data.cache`) afterwards; within one process a dataset is fingerprinted and
opened only once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedpersonal.config import require_choice
from fedpersonal.data import cache
from fedpersonal.data.containers import GazeSet, ImageSet, VerificationSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real import cifar10, femnist, imagefolder, lfw, mpiifacegaze, mpiigaze
from fedpersonal.data.real.digits import load_digits
from fedpersonal.data.real.files import require_file


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset: its loader, container type, what ``data-path`` must hold, and the
    check of that layout, run before anything walks or reads the tree; it returns the dataset's
    files when it knows them (they alone are fingerprinted for the cache), else None."""

    load: Callable[..., Any]
    kind: type
    layout: str | None  # None: bundled with a library, no data-path
    check: Callable[[Path], Sequence[Path] | None] = lambda _root: None


def _participants(root: Path) -> None:
    mpiigaze.participant_dirs(root)


def _pairs(root: Path) -> None:
    require_file(root / "pairs.txt", lfw.LAYOUT)


def _images(root: Path) -> list[Path]:
    return [file for files in imagefolder.class_files(root).values() for file in files]


DATASETS: dict[str, DatasetSpec] = {
    "mpiigaze": DatasetSpec(mpiigaze.load_mpiigaze, GazeSet, mpiigaze.LAYOUT, _participants),
    "mpiifacegaze": DatasetSpec(
        mpiifacegaze.load_mpiifacegaze, GazeSet, mpiifacegaze.LAYOUT, mpiifacegaze.participant_files
    ),
    "lfw": DatasetSpec(lfw.load_lfw, VerificationSet, lfw.LAYOUT, _pairs),
    "imagefolder": DatasetSpec(imagefolder.load_imagefolder, ImageSet, imagefolder.LAYOUT, _images),
    "cifar10": DatasetSpec(cifar10.load_cifar10, ImageSet, cifar10.LAYOUT, cifar10.batch_files),
    "femnist": DatasetSpec(femnist.load_femnist, ImageSet, femnist.LAYOUT, femnist.json_files),
    "digits": DatasetSpec(load_digits, ImageSet, None),
}


def resolve_path(name: str, path: str) -> Path | None:
    """The checked local path of dataset ``name`` (None for bundled datasets)."""
    layout = DATASETS[name].layout
    if layout is None:
        if path:
            raise DataError(f"run config key 'data-path' = {path!r}, but dataset '{name}' is bundled; expected ''")
        return None
    if not path:
        raise DataError(f"run config key 'data-path' is empty; dataset '{name}' needs the local path of {layout}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"run config key 'data-path' = {path!r} does not exist; dataset '{name}' expects {layout}")
    return resolved


@lru_cache(maxsize=8)
def _load(name: str, path: str, options: tuple[tuple[str, Any], ...]) -> Any:
    spec = DATASETS[name]
    root = resolve_path(name, path)
    kwargs = dict(options)
    if root is None:
        return cache.cached(name, None, kwargs, spec.kind, lambda: spec.load(**kwargs))
    files = spec.check(root)  # the layout first: a wrong path fails before any walk of its tree
    return cache.cached(name, root, kwargs, spec.kind, lambda: spec.load(root, **kwargs), files)


def load_dataset(name: str, path: str = "", **options: Any) -> Any:
    """Dataset ``name`` from ``path`` with loader ``options`` (e.g. ``size=(36, 60)``), cached.

    Raises a ConfigError for an unknown name and a DataError for a missing, malformed or
    corrupted dataset, naming the file and what was expected.
    """
    require_choice("dataset", name, DATASETS)
    frozen = tuple(sorted((key, tuple(v) if isinstance(v, list) else v) for key, v in options.items()))
    return _load(name, path, frozen)


def forget_loaded() -> None:
    """Drop the per-process memo (the next load re-fingerprints the files)."""
    _load.cache_clear()


__all__ = ["DATASETS", "DatasetSpec", "forget_loaded", "load_dataset", "resolve_path"]
