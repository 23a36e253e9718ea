"""MPIIFaceGaze normalized faces: ``pXX.mat`` (MATLAB v7.3 = HDF5, read with h5py).

Each file holds ``Data/data`` (N, 3, 448, 448) uint8 BGR face images and ``Data/label`` (N, 16)
float: columns 0-1 gaze (pitch, yaw), 2-3 head pose (pitch, yaw) in radians, then six 2-d facial
landmarks. One participant ``pXX`` is one natural group. Images are converted to RGB (or
grayscale) and resized to ``size`` while reading, in chunks, so a participant never has to fit
in memory at full resolution. h5py is an optional extra: ``pip install -e ".[mpiifacegaze]"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fedpersonal.data.containers import GazeSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import inside, resize

LAYOUT = "a directory of MPIIFaceGaze normalized files pXX.mat (MATLAB v7.3/HDF5 with Data/data and Data/label)"
CHUNK = 100
_PARTICIPANT = re.compile(r"p\d+\.mat")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise DataError(
            "dataset 'mpiifacegaze' needs h5py to read MATLAB v7.3 files; "
            'install the extra: pip install -e ".[mpiifacegaze]" (or pip install h5py)'
        ) from error
    return h5py


def _convert(chunk: NDArray[np.uint8], size: Sequence[int] | None, gray: bool) -> NDArray[np.uint8]:
    """(n, 3, H, W) BGR -> (n, h, w, 3) RGB or (n, h, w) grayscale at ``size``."""
    rgb = np.ascontiguousarray(chunk.transpose(0, 2, 3, 1)[..., ::-1])
    images = []
    for face in rgb:
        image = Image.fromarray(face)
        images.append(np.asarray(resize(image.convert("L") if gray else image, size, None)))
    return np.stack(images)


def read_participant(
    path: Path, size: Sequence[int] | None, gray: bool
) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
    """Images, gaze and pose of one ``pXX.mat`` file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as file:
            if "Data/data" not in file or "Data/label" not in file:
                raise DataError(f"'{path}' has no datasets Data/data and Data/label; expected {LAYOUT}")
            data, label = file["Data/data"], file["Data/label"]
            if data.ndim != 4 or data.shape[1] != 3 or label.ndim != 2 or label.shape[1] < 4 or len(label) != len(data):
                raise DataError(
                    f"'{path}': Data/data has shape {data.shape} and Data/label {label.shape}; "
                    "expected (N, 3, H, W) images and (N, >=4) labels"
                )
            labels = np.asarray(label[:, :4], dtype=np.float32)
            images = np.concatenate(
                [
                    _convert(np.asarray(data[start : start + CHUNK], np.uint8), size, gray)
                    for start in range(0, len(data), CHUNK)
                ]
            )
    except OSError as error:
        raise DataError(f"cannot read '{path}' ({error}); expected {LAYOUT}") from error
    return images, labels[:, :2].copy(), labels[:, 2:4].copy()


def participant_files(path: Path) -> list[Path]:
    """The ``pXX.mat`` files in ``path``; a DataError when there are none."""
    files = sorted(p for p in path.glob("p*.mat") if _PARTICIPANT.fullmatch(p.name))
    if not files:
        raise DataError(f"no pXX.mat files found in '{path}'; expected {LAYOUT}")
    return [inside(path, file) for file in files]


def load_mpiifacegaze(path: Path, size: Sequence[int] | None = None, gray: bool = False) -> GazeSet:
    """All participants under ``path``; ``size`` = (height, width) to resize to, ``gray`` for 1 channel."""
    files = participant_files(path)
    parts = [read_participant(file, size, gray) for file in files]
    return GazeSet(
        images=np.concatenate([images for images, _, _ in parts]),
        gaze=np.concatenate([gaze for _, gaze, _ in parts]),
        pose=np.concatenate([pose for _, _, pose in parts]),
        groups=np.concatenate([np.full(len(images), group, np.int64) for group, (images, _, _) in enumerate(parts)]),
        group_names=tuple(file.stem for file in files),
    )
