"""Writers of small, format-faithful copies of the real datasets, and the private-cache fixture.

Each writer reproduces the published on-disk layout (file names, MATLAB struct fields, pickle
keys, json keys, pairs.txt structure) at a tiny scale and returns what it wrote.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache and a fresh per-process memo (import it to use it)."""
    from fedpersonal.data.real import forget_loaded

    monkeypatch.setenv("FEDPERSONAL_CACHE_DIR", str(tmp_path / "cache"))
    forget_loaded()
    yield
    forget_loaded()


def gaze_vector(pitch: float, yaw: float) -> list[float]:
    """MPIIGaze's gaze vector of (pitch, yaw): (-cos p sin y, -sin p, -cos p cos y)."""
    return [-np.cos(pitch) * np.sin(yaw), -np.sin(pitch), -np.cos(pitch) * np.cos(yaw)]


def head_rotvec(pitch: float, yaw: float) -> np.ndarray:
    """A Rodrigues vector whose rotation's z axis is (cos p sin y, sin p, cos p cos y)."""
    from scipy.spatial.transform import Rotation

    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(-pitch), np.sin(-pitch)
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return Rotation.from_matrix(rot_y @ rot_x).as_rotvec()


def eye_image(seed: int) -> np.ndarray:
    """A 36x60 uint8 image whose left half is dark and right half bright, plus a seed mark."""
    image = np.zeros((36, 60), np.uint8)
    image[:, 30:] = 200
    image[0, 0] = seed % 256
    return image


def write_mpiigaze(root: Path, participants: int = 3, days: int = 2, per_day: int = 4) -> dict:
    """``root/Data/Normalized/pXX/dayYY.mat`` and the evaluation lists; returns the labels used."""
    labels = {}
    for p in range(participants):
        folder = root / "Data" / "Normalized" / f"p{p:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        subset = []
        for d in range(1, days + 1):
            eyes, names = {}, [f"{k + 1:04d}.jpg" for k in range(per_day)]
            for side_index, side in enumerate(("left", "right")):
                angles = [
                    (0.1 * p + 0.01 * k, 0.2 + 0.03 * d + 0.02 * side_index, 0.05 * k, -0.1 + 0.02 * p)
                    for k in range(per_day)
                ]
                labels[(p, d, side)] = angles
                eyes[side] = {
                    "image": np.stack([eye_image(100 * p + 10 * d + k) for k in range(per_day)]),
                    "gaze": np.array([gaze_vector(a[0], a[1]) for a in angles]),
                    "pose": np.stack([head_rotvec(a[2], a[3]) for a in angles]),
                }
            scipy.io.savemat(folder / f"day{d:02d}.mat", {"data": eyes, "filenames": np.array(names, dtype=object)})
            subset += [f"day{d:02d}/{names[0]} left", f"day{d:02d}/{names[-1]} right"]
        lists = root / "Evaluation Subset" / "sample list for eye image"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"p{p:02d}.txt").write_text("\n".join(subset) + "\n")
    return labels


def write_mpiifacegaze(root: Path, participants: int = 2, count: int = 5, side: int = 24) -> None:
    """``root/pXX.mat`` as HDF5: Data/data (N, 3, H, W) BGR uint8, Data/label (N, 16)."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    for p in range(participants):
        data = np.zeros((count, 3, side, side), np.uint8)
        data[:, 0] = 255  # blue plane (BGR order): the decoded RGB image must be blue
        label = np.zeros((count, 16), np.float32)
        label[:, 0] = 0.1 * p
        label[:, 1] = np.arange(count) * 0.01
        label[:, 2] = -0.05
        label[:, 3] = 0.2
        with h5py.File(root / f"p{p:02d}.mat", "w") as file:
            file.create_dataset("Data/data", data=data)
            file.create_dataset("Data/label", data=label)


def write_image(path: Path, color: tuple[int, int, int], size: int = 20) -> None:
    """A solid-color JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, quality=95)


def write_lfw(root: Path, folds: int = 2, per_half: int = 2) -> list[str]:
    """``root/lfw/Name/Name_000N.jpg`` and ``root/pairs.txt`` with header ``<folds> <per_half>``."""
    names = [f"Person_{chr(65 + i)}" for i in range(4)]
    for index, name in enumerate(names):
        for number in (1, 2, 3):
            write_image(root / "lfw" / name / f"{name}_{number:04d}.jpg", (40 * index, 10 * number, 0))
    lines = [f"{folds}\t{per_half}"]
    for fold in range(folds):
        for k in range(per_half):
            lines.append(f"{names[(fold + k) % 4]}\t1\t{2 + k % 2}")
        for k in range(per_half):
            lines.append(f"{names[k % 4]}\t{1 + fold}\t{names[(k + 1) % 4]}\t3")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return lines


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 3) -> None:
    """``root/<identity>/<n>.jpg``."""
    for c in range(classes):
        for n in range(per_class):
            write_image(root / f"id{c:03d}" / f"{n}.jpg", (60 * c, 0, 20 * n))


def cifar_batch(count: int, offset: int) -> dict:
    """A CIFAR batch dict with bytes keys, planes R=10, G=20, B=30 + per-image offset in R."""
    data = np.zeros((count, 3, 1024), np.uint8)
    data[:, 0], data[:, 1], data[:, 2] = 10, 20, 30
    data[:, 0, 0] = np.arange(count) + offset
    return {
        b"batch_label": b"fixture",
        b"labels": [(offset + i) % 10 for i in range(count)],
        b"data": data.reshape(count, 3072),
        b"filenames": [f"img_{offset + i}.png".encode() for i in range(count)],
    }


def write_cifar10(root: Path, per_batch: int = 20) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (protocol-2 pickles)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        (folder / name).write_bytes(pickle.dumps(cifar_batch(per_batch, index * per_batch), protocol=2))
    meta = {
        b"label_names": [
            n.encode()
            for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_femnist(root: Path) -> dict[str, int]:
    """Two LEAF json files; writer 'f_b' appears in both (its samples must be merged)."""
    rng = np.random.default_rng(0)
    counts = {"f_a": 3, "f_b": 4, "f_c": 5}

    def user(n: int, label0: int) -> dict:
        return {"x": rng.random((n, 784)).round(3).tolist(), "y": [(label0 + k) % 62 for k in range(n)]}

    root.mkdir(parents=True, exist_ok=True)
    first = {"users": ["f_a", "f_b"], "num_samples": [3, 2], "user_data": {"f_a": user(3, 0), "f_b": user(2, 10)}}
    second = {"users": ["f_b", "f_c"], "num_samples": [2, 5], "user_data": {"f_b": user(2, 20), "f_c": user(5, 61)}}
    (root / "all_data_0.json").write_text(json.dumps(first))
    (root / "all_data_1.json").write_text(json.dumps(second))
    return counts
