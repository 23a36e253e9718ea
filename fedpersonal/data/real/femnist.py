"""LEAF FEMNIST json files: natural per-writer clients.

Every ``*.json`` file under the path (LEAF's ``data/all_data`` or its ``train``/``test``
directories) holds ``users`` (writer ids), ``num_samples`` and ``user_data``:
``{writer: {"x": [[784 floats in 0..1]], "y": [labels in 0..61]}}``. Samples of a writer spread
over several files are merged. Images become uint8 (N, 28, 28) = round(255 x); each writer is a
natural group.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedpersonal.data.containers import ImageSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import dataset_files

LAYOUT = "LEAF FEMNIST *.json files with 'users', 'num_samples' and 'user_data' (e.g. leaf/data/femnist/data/all_data)"
CLASSES = tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase)  # 62 classes


MAX_JSON_BYTES = 1 << 30  # json.loads needs about 13x a file's size in memory: larger files are refused
MAX_DEPTH = 2  # json files are looked for at most this many directories below the path


def read_json(path: Path) -> dict[str, Any]:
    """One LEAF file, checked for its size and the three keys."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise DataError(
                f"'{path}' has {size} bytes; FEMNIST json is parsed in memory (about 13x its size), so files over "
                f"{MAX_JSON_BYTES} bytes are refused: split it into LEAF's shards"
            )
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"cannot parse '{path}' ({error}); expected {LAYOUT}") from error
    missing = {"users", "num_samples", "user_data"} - set(content if isinstance(content, dict) else ())
    if missing:
        raise DataError(f"'{path}' lacks key(s) {sorted(missing)}; expected {LAYOUT}")
    return content


def writer_samples(path: Path, user: str, count: int, data: Any) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Images and labels of one writer in one file, checked against ``num_samples``."""
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        raise DataError(f"'{path}': user_data['{user}'] lacks 'x'/'y'; expected {LAYOUT}")
    try:
        pixels = np.asarray(data["x"], dtype=np.float32)
        labels = np.asarray(data["y"], dtype=np.int64)
    except (ValueError, TypeError) as error:  # rows of unequal length, non-numbers
        raise DataError(f"'{path}': user '{user}' has malformed x or y ({error}); expected {LAYOUT}") from error
    if pixels.shape != (count, 784) or labels.shape != (count,):
        raise DataError(
            f"'{path}': user '{user}' has x {pixels.shape} and y {labels.shape}; "
            f"expected ({count}, 784) and ({count},) as num_samples says"
        )
    if count and (labels.min() < 0 or labels.max() >= len(CLASSES) or pixels.min() < 0 or pixels.max() > 1):
        raise DataError(
            f"'{path}': user '{user}' has labels or pixels out of range; expected labels 0..61, pixels 0..1"
        )
    return np.rint(pixels * 255).astype(np.uint8).reshape(-1, 28, 28), labels


def json_files(path: Path) -> list[Path]:
    """The dataset's json files: ``path`` itself or those at most :data:`MAX_DEPTH` directories below it."""
    files = dataset_files(path, ".json", MAX_DEPTH)
    if not files:
        raise DataError(f"no .json files within {MAX_DEPTH} directories of '{path}'; expected {LAYOUT}")
    return files


def load_femnist(path: Path) -> ImageSet:
    """Every writer of every json file of :func:`json_files` (sorted writer ids = groups)."""
    files = json_files(path)
    per_writer: dict[str, list[tuple[NDArray[np.uint8], NDArray[np.int64]]]] = {}
    for file in files:
        content = read_json(file)
        users, counts = content["users"], content["num_samples"]
        if len(users) != len(counts):
            raise DataError(f"'{file}' lists {len(users)} users but {len(counts)} num_samples; expected equal")
        for user, count in zip(users, counts):
            if user not in content["user_data"]:
                raise DataError(f"'{file}': user '{user}' is listed but has no user_data entry")
            per_writer.setdefault(user, []).append(writer_samples(file, user, count, content["user_data"][user]))
    writers = tuple(sorted(per_writer))
    parts = [(group, images, labels) for group, writer in enumerate(writers) for images, labels in per_writer[writer]]
    return ImageSet(
        images=np.concatenate([images for _, images, _ in parts]),
        labels=np.concatenate([labels for _, _, labels in parts]),
        class_names=CLASSES,
        groups=np.concatenate([np.full(len(labels), group, np.int64) for group, _, labels in parts]),
        group_names=writers,
    )
