"""On-disk cache of decoded datasets as memory-mapped ``.npy`` arrays.

A dataset is decoded once; later loads (every client of every run) memory-map its arrays.

* Location: ``$FEDPERSONAL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fedpersonal``, else
  ``~/.cache/fedpersonal``. One directory per entry, ``<dataset>-<key>/``, holding one ``.npy``
  per array and ``meta.json`` (written last: an entry without it is incomplete and ignored).
* Key: a SHA-256 over the dataset name, the resolved data path, the loader options (image size,
  evaluation subset, ...), :data:`CACHE_VERSION`, and the relative path, size and modification
  time of every file under the data path. Changing a file, the config or the code version gives
  a new key, so a stale entry is never read; old entries stay until you delete them
  (``rm -rf ~/.cache/fedpersonal`` is always safe).
* Concurrency: an entry is built in a temporary directory and renamed into place, so clients
  decoding the same dataset at once never read a half-written entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from logging import WARNING
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from flwr.common import log

from fedpersonal.data.errors import DataError

CACHE_VERSION = 1  # bump when a loader decodes differently
META = "meta.json"
T = TypeVar("T")


def cache_root() -> Path:
    """The cache directory (see the module docstring for how it is chosen)."""
    if os.environ.get("FEDPERSONAL_CACHE_DIR"):
        return Path(os.environ["FEDPERSONAL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedpersonal"


def file_fingerprint(path: Path | None) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file under ``path`` (or of ``path`` itself)."""
    if path is None:
        return []
    if path.is_file():
        stat = path.stat()
        return [(path.name, stat.st_size, stat.st_mtime_ns)]
    entries = []
    own = cache_root().resolve()
    for directory, subdirs, names in os.walk(path):
        subdirs[:] = [d for d in subdirs if Path(directory, d).resolve() != own]  # never our own cache
        for name in names:
            file = Path(directory, name)
            try:
                stat = file.stat()
            except OSError as error:  # a dangling symlink, a file without read permission, ...
                raise DataError(f"cannot read '{file}' under '{path}' ({error}); expected readable files") from error
            entries.append((str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def files_fingerprint(root: Path, files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path relative to ``root``, size, mtime in ns) of exactly ``files``."""
    entries = []
    for file in files:
        try:
            stat = file.stat()
        except OSError as error:
            raise DataError(f"cannot read '{file}' ({error}); expected a readable file") from error
        entries.append((str(file.relative_to(root)) if file != root else file.name, stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def cache_key(dataset: str, path: Path | None, options: Mapping[str, Any], files: Sequence[Path] | None = None) -> str:
    """The content key of an entry: changes whenever the files, options or version change (``files``:
    the dataset's files when its loader lists them; otherwise every file under ``path``)."""
    source = {
        "dataset": dataset,
        "path": str(path.resolve()) if path is not None else None,
        "options": {key: options[key] for key in sorted(options)},
        "version": CACHE_VERSION,
        "files": file_fingerprint(path) if files is None or path is None else files_fingerprint(path, files),
    }
    return hashlib.sha256(json.dumps(source, default=str).encode()).hexdigest()[:20]


def _write(entry: Path, value: Any, describe: dict[str, Any]) -> None:
    tmp = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if isinstance(item, np.ndarray):
                np.save(tmp / f"{field.name}.npy", np.ascontiguousarray(item))
                fields[field.name] = {"array": True}
            else:
                fields[field.name] = {"value": list(item) if isinstance(item, tuple) else item}
        (tmp / META).write_text(json.dumps({**describe, "fields": fields}, indent=1, default=str))
        try:
            tmp.rename(entry)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(entry: Path, kind: type[T]) -> T:
    meta = json.loads((entry / META).read_text())
    values: dict[str, Any] = {}
    for name, spec in meta["fields"].items():
        if spec.get("array"):
            values[name] = np.load(entry / f"{name}.npy", mmap_mode="r")
        else:
            item = spec["value"]
            values[name] = tuple(item) if isinstance(item, list) else item
    return kind(**values)


def cached(
    dataset: str,
    path: Path | None,
    options: Mapping[str, Any],
    kind: type[T],
    build: Callable[[], T],
    files: Sequence[Path] | None = None,
) -> T:
    """The ``kind`` dataclass decoded by ``build``, memory-mapped from the cache when present
    (``files``: the dataset's own files, fingerprinted instead of everything under ``path``)."""
    key = cache_key(dataset, path, options, files)
    entry = cache_root() / f"{dataset}-{key}"
    if (entry / META).is_file():
        try:
            return _read(entry, kind)
        except (OSError, ValueError, KeyError, TypeError) as error:  # a truncated or damaged entry
            log(WARNING, "cache entry '%s' is damaged (%s); rebuilding it", entry, error)
            shutil.rmtree(entry, ignore_errors=True)
    value = build()
    describe = {"dataset": dataset, "path": str(path) if path else None, "options": dict(options)}
    _write(entry, value, describe)
    return _read(entry, kind)
