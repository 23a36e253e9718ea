"""Loaders of real datasets from local files (never downloaded), registered by name.

:func:`load_dataset` checks the path, decodes the dataset once and memory-maps it from the cache
(:mod:`fedpersonal.data.cache`) afterwards; within one process a dataset is fingerprinted and
opened only once.
"""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset: its loader, container type and what ``data-path`` must hold."""

    load: Callable[..., Any]
    kind: type
    layout: str | None  # None: bundled with a library, no data-path


DATASETS: dict[str, DatasetSpec] = {
    "mpiigaze": DatasetSpec(mpiigaze.load_mpiigaze, GazeSet, mpiigaze.LAYOUT),
    "mpiifacegaze": DatasetSpec(mpiifacegaze.load_mpiifacegaze, GazeSet, mpiifacegaze.LAYOUT),
    "lfw": DatasetSpec(lfw.load_lfw, VerificationSet, lfw.LAYOUT),
    "imagefolder": DatasetSpec(imagefolder.load_imagefolder, ImageSet, imagefolder.LAYOUT),
    "cifar10": DatasetSpec(cifar10.load_cifar10, ImageSet, cifar10.LAYOUT),
    "femnist": DatasetSpec(femnist.load_femnist, ImageSet, femnist.LAYOUT),
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
    build = (lambda: spec.load(root, **kwargs)) if root is not None else (lambda: spec.load(**kwargs))
    return cache.cached(name, root, kwargs, spec.kind, build)


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
