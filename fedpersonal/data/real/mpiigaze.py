"""MPIIGaze normalized eye images: ``Data/Normalized/pXX/dayYY.mat`` (MATLAB v5).

Each day file holds ``data.left`` and ``data.right``, each with ``image`` (N, 36, 60) uint8,
``gaze`` (N, 3) unit gaze vectors and ``pose`` (N, 3) head rotations as Rodrigues vectors, in the
normalized camera space, plus ``filenames`` (N,). Both eyes become samples; a right eye is
mirrored horizontally and its gaze and head yaw negated, so every sample looks like a left eye.
Gaze (pitch, yaw) = (asin(-y), atan2(-x, -z)); head pose (pitch, yaw) = (asin(z_y), atan2(z_x, z_z))
of the rotation's z axis. One participant ``pXX`` is one natural group (one client).

With ``evaluation_subset`` only the samples of the official lists
``Evaluation Subset/sample list for eye image/pXX.txt`` (lines ``dayYY/NNNN.jpg left|right``,
3000 per participant) are used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from fedpersonal.data.containers import GazeSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import require_file
from fedpersonal.metrics.angular import vector_to_pitchyaw

LAYOUT = (
    "the MPIIGaze root holding Data/Normalized/pXX/dayYY.mat (MATLAB v5 files with data.left/right.image, gaze, pose)"
)
SUBSET_DIR = Path("Evaluation Subset") / "sample list for eye image"
EYE_SHAPE = (36, 60)
_PARTICIPANT = re.compile(r"p\d+")
Eye = tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]  # images, gaze, pose of one eye


def participant_dirs(root: Path) -> list[Path]:
    """The ``pXX`` directories under ``root/Data/Normalized`` (or ``root`` itself)."""
    for base in (root / "Data" / "Normalized", root):
        found = sorted(p for p in base.glob("p*") if p.is_dir() and _PARTICIPANT.fullmatch(p.name))
        if found:
            return found
    raise DataError(f"no participant directories pXX found under '{root}'; expected {LAYOUT}")


def head_pose_pitchyaw(rotations: NDArray[np.floating]) -> NDArray[np.float32]:
    """(N, 3) Rodrigues head rotations -> (N, 2) (pitch, yaw) of the head's z axis."""
    axis = Rotation.from_rotvec(rotations).as_matrix()[:, :, 2]
    pitch = np.arcsin(np.clip(axis[:, 1], -1.0, 1.0))
    yaw = np.arctan2(axis[:, 0], axis[:, 2])
    return np.stack([pitch, yaw], axis=1).astype(np.float32)


def _field(struct: Any, name: str, path: Path, where: str) -> Any:
    if not hasattr(struct, name):
        raise DataError(f"'{path}' has no field '{where}.{name}'; expected {LAYOUT}")
    return getattr(struct, name)


def _eye(data: Any, side: str, path: Path) -> Eye:
    """Images, gaze (pitch, yaw) and pose (pitch, yaw) of one eye, mirrored if it is the right one."""
    eye = _field(data, side, path, "data")
    images = np.asarray(_field(eye, "image", path, f"data.{side}"))
    vectors = np.asarray(_field(eye, "gaze", path, f"data.{side}"), dtype=np.float64).reshape(-1, 3)
    rotations = np.asarray(_field(eye, "pose", path, f"data.{side}"), dtype=np.float64).reshape(-1, 3)
    if images.dtype != np.uint8 or images.size != len(vectors) * EYE_SHAPE[0] * EYE_SHAPE[1]:
        raise DataError(
            f"'{path}': data.{side}.image has shape {images.shape} and dtype {images.dtype}; "
            f"expected uint8 (N, 36, 60) with N = {len(vectors)} rows of data.{side}.gaze"
        )
    if len(rotations) != len(vectors):
        raise DataError(f"'{path}': data.{side}.pose has {len(rotations)} rows; expected {len(vectors)}")
    images = images.reshape(-1, *EYE_SHAPE)
    gaze = vector_to_pitchyaw(vectors).astype(np.float32)
    pose = head_pose_pitchyaw(rotations)
    if side == "right":
        images = images[:, :, ::-1]
        gaze[:, 1] *= -1
        pose[:, 1] *= -1
    return np.ascontiguousarray(images), gaze, pose


def read_day(path: Path) -> tuple[dict[str, Eye], NDArray[np.str_]]:
    """Both eyes of one day file and its per-sample file names."""
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as error:  # scipy raises many types for truncated or foreign files
        raise DataError(f"cannot read '{path}' ({type(error).__name__}: {error}); expected {LAYOUT}") from error
    if "data" not in mat:
        raise DataError(f"'{path}' has no variable 'data'; expected {LAYOUT}")
    eyes = {side: _eye(mat["data"], side, path) for side in ("left", "right")}
    if len(eyes["left"][0]) != len(eyes["right"][0]):
        raise DataError(f"'{path}': left and right eyes have different sample counts; expected equal")
    names = np.atleast_1d(np.asarray(mat.get("filenames", []), dtype=str))
    return eyes, names


def _subset_rows(root: Path, participant: str) -> list[tuple[str, str, str]]:
    """(day, file name, side) of every line of the participant's evaluation list."""
    path = require_file(root / SUBSET_DIR / f"{participant}.txt", f"the MPIIGaze evaluation list of {participant}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        day, _, name = parts[0].partition("/")
        if len(parts) != 2 or not name or parts[1] not in ("left", "right"):
            raise DataError(f"'{path}' line {number}: {line!r}; expected 'dayYY/NNNN.jpg left|right'")
        rows.append((day, name, parts[1]))
    return rows


def _select(
    days: dict[str, tuple[dict[str, Eye], NDArray[np.str_]]],
    rows: list[tuple[str, str, str]],
    where: Path,
) -> tuple[NDArray[Any], ...]:
    """The listed samples, in list order."""
    picked = []
    for day, name, side in rows:
        if day not in days:
            raise DataError(f"evaluation list of '{where}' names {day}/{name}; expected file '{where / day}.mat'")
        eyes, names = days[day]
        hits = np.flatnonzero(names == name)
        if len(hits) == 0:
            raise DataError(f"'{where / day}.mat' has no sample '{name}' listed in the evaluation subset")
        picked.append(tuple(part[hits[0]] for part in eyes[side]))
    return tuple(np.stack(column) for column in zip(*picked))


def load_mpiigaze(path: Path, evaluation_subset: bool = False) -> GazeSet:
    """All participants of the MPIIGaze dataset at ``path`` (see the module docstring)."""
    root = path
    images, gaze, pose, groups = [], [], [], []
    participants = participant_dirs(root)
    for group, folder in enumerate(participants):
        day_files = sorted(folder.glob("day*.mat"))
        if not day_files:
            raise DataError(f"participant directory '{folder}' has no dayYY.mat files; expected {LAYOUT}")
        days = {file.stem: read_day(file) for file in day_files}
        if evaluation_subset:
            parts = [_select(days, _subset_rows(root, folder.name), folder)]
        else:
            parts = [eyes[side] for eyes, _ in days.values() for side in ("left", "right")]
        for part in parts:
            images.append(part[0])
            gaze.append(part[1])
            pose.append(part[2])
            groups.append(np.full(len(part[0]), group, dtype=np.int64))
    return GazeSet(
        images=np.concatenate(images),
        gaze=np.concatenate(gaze).astype(np.float32),
        pose=np.concatenate(pose).astype(np.float32),
        groups=np.concatenate(groups),
        group_names=tuple(folder.name for folder in participants),
    )
