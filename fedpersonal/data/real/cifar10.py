"""CIFAR-10 python batches: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

Each batch is a pickle of a dict with ``data`` (10000, 3072) uint8 (1024 red, 1024 green, 1024
blue values of a 32x32 image, row-major) and ``labels`` (10000 ints in 0..9); ``batches.meta``
names the classes. Keys are bytes in the original Python 2 pickles; str keys are accepted too.
The pickles are read by :class:`SafeUnpickler`, which builds only the builtins and NumPy arrays the
real files hold: a file that asks for anything else (a function to call, say) is refused with a
DataError naming it, and nothing of it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedpersonal.data.containers import ImageSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import inside, require_file

LAYOUT = "the CIFAR-10 python directory cifar-10-batches-py with data_batch_1..5, test_batch and batches.meta"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLITS["all"] = SPLITS["train"] + SPLITS["test"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# The globals a CIFAR-10 pickle may name: how NumPy (1.x and 2.x) pickles an ndarray and its dtype,
# and how Python 3 writes bytes into a protocol-2 pickle (_codecs.encode(text, "latin1")).
ALLOWED_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (plain containers, numbers, strings
    and bytes need no global); anything else raises UnpicklingError before it could run."""

    def find_class(self, module: str, name: str) -> Any:
        """The allowed NumPy global ``module.name``; an UnpicklingError for any other."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}' (not an array or dtype)")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys; a DataError if it is truncated, not a dict, or asks
    for anything but arrays."""
    require_file(path, LAYOUT)
    try:
        with path.open("rb") as file:
            content = SafeUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"cannot unpickle '{path}' ({type(error).__name__}: {error}); expected {LAYOUT}") from error
    if not isinstance(content, dict):
        raise DataError(f"'{path}' holds a {type(content).__name__}; expected a dict with 'data' and 'labels'")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


def read_batch(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """(N, 32, 32, 3) RGB images and labels of one batch file."""
    batch = read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"'{path}' has keys {sorted(batch)}; expected 'data' and 'labels'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"'{path}': data has shape {data.shape} ({data.dtype}) and {len(labels)} labels; "
            "expected uint8 (N, 3072) and N labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"'{path}': labels span {labels.min()}..{labels.max()}; expected 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def class_names(path: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta`` (the standard names if the file is absent)."""
    meta = path / "batches.meta"
    if not meta.is_file():
        return CLASSES
    names = read_pickle(meta).get("label_names", CLASSES)
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names)


def batch_root(path: Path) -> Path:
    """Where the batch files are: ``path/cifar-10-batches-py`` if present, else ``path``."""
    return path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path


def batch_files(path: Path) -> list[Path]:
    """Every batch file and ``batches.meta`` (if present); a DataError names a missing batch."""
    root = batch_root(path)
    files = [inside(path, require_file(root / name, LAYOUT)) for name in SPLITS["all"]]
    return files + ([inside(path, root / "batches.meta")] if (root / "batches.meta").exists() else [])


def load_cifar10(path: Path, split: str = "train") -> ImageSet:
    """The batches of ``split`` ("train": 50000 images, "test": 10000, "all")."""
    if split not in SPLITS:
        raise DataError(f"CIFAR-10 split {split!r} is unknown; expected one of {sorted(SPLITS)}")
    root = batch_root(path)
    batches = [read_batch(root / name) for name in SPLITS[split]]
    return ImageSet(
        images=np.concatenate([images for images, _ in batches]),
        labels=np.concatenate([labels for _, labels in batches]),
        class_names=class_names(root),
    )
