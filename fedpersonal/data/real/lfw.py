"""LFW verification protocol: ``Name/Name_0001.jpg`` images and ``pairs.txt`` (10 folds).

``pairs.txt`` starts with ``<folds> <pairs per half>`` (``10 300``); then each fold lists that
many matched pairs ``name n1 n2`` followed by as many mismatched pairs ``name1 n1 name2 n2``.
Only the images the pairs name are decoded; ``size`` and ``crop`` resize them while decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpersonal.data.containers import VerificationSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import inside, read_images, require_file

_NUMBER = re.compile(r"[0-9]+")  # ASCII digits only (str.isdigit also accepts '²')
_NAME = re.compile(r"[^/\\\x00]+")  # one path component: no separators
LAYOUT = "a directory holding pairs.txt and the LFW images as lfw/Name/Name_0001.jpg (or Name/Name_0001.jpg)"


def image_root(path: Path) -> Path:
    """Where the identity folders are: ``path/lfw`` if present, else ``path``."""
    return path / "lfw" if (path / "lfw").is_dir() else path


def image_path(root: Path, name: str, number: str) -> Path:
    """``root/Name/Name_000N.jpg``."""
    return root / name / f"{name}_{int(number):04d}.jpg"


def parse_pairs(path: Path, root: Path) -> tuple[list[tuple[Path, Path]], list[bool], list[int]]:
    """Image-path pairs, same-identity flags and folds of ``pairs.txt``, checked line by line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read '{path}' ({error}); expected {LAYOUT}") from error
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2 or not all(_NUMBER.fullmatch(part) for part in lines[0]):
        raise DataError(
            f"'{path}' line 1: {lines[0] if lines else 'empty file'}; expected '<folds> <pairs per half>' like '10 300'"
        )
    folds, per_half = int(lines[0][0]), int(lines[0][1])
    expected = folds * 2 * per_half
    if len(lines) - 1 != expected:
        raise DataError(
            f"'{path}' has {len(lines) - 1} pair lines; expected {folds} folds x 2 x {per_half} = {expected}"
        )
    pairs, same, fold_of = [], [], []
    for offset, parts in enumerate(lines[1:]):
        number = offset + 2
        fold, position = divmod(offset, 2 * per_half)
        matched = position < per_half
        width = 3 if matched else 4
        if len(parts) != width or not (_NUMBER.fullmatch(parts[1]) and _NUMBER.fullmatch(parts[-1])):
            kind = "matched 'name n1 n2'" if matched else "mismatched 'name1 n1 name2 n2'"
            raise DataError(f"'{path}' line {number}: {' '.join(parts)!r}; expected a {kind} pair (ASCII digits)")
        names = (parts[0], parts[0]) if matched else (parts[0], parts[2])
        numbers = (parts[1], parts[2]) if matched else (parts[1], parts[3])
        for name in names:
            if not _NAME.fullmatch(name) or name in {".", ".."}:
                raise DataError(f"'{path}' line {number}: identity name {name!r}; expected a plain folder name")
        files = (image_path(root, names[0], numbers[0]), image_path(root, names[1], numbers[1]))
        for file in files:
            if not file.is_file():
                raise DataError(f"'{path}' line {number} names '{file}', which does not exist; expected {LAYOUT}")
            inside(path.parent, file)
        pairs.append(files)
        same.append(matched)
        fold_of.append(fold)
    return pairs, same, fold_of


def load_lfw(
    path: Path, size: Sequence[int] | None = None, crop: int | None = None, gray: bool = False
) -> VerificationSet:
    """The pairs of LFW's 10-fold protocol with their decoded images (labels = identities)."""
    root = image_root(path)
    pairs, same, folds = parse_pairs(require_file(path / "pairs.txt", LAYOUT), root)
    files = sorted({file for pair in pairs for file in pair})
    index = {file: i for i, file in enumerate(files)}
    identities = sorted({file.parent.name for file in files})
    identity = {name: i for i, name in enumerate(identities)}
    return VerificationSet(
        images=read_images(files, size, crop, gray),
        labels=np.array([identity[file.parent.name] for file in files], dtype=np.int64),
        class_names=tuple(identities),
        pairs=np.array([[index[a], index[b]] for a, b in pairs], dtype=np.int64).reshape(-1, 2),
        same=np.array(same, dtype=bool),
        folds=np.array(folds, dtype=np.int64),
    )
