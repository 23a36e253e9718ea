"""Image folder trees (CASIA-WebFace layout): ``root/<identity>/<image>.jpg``.

Labels are the class (identity) folders in sorted order; every identity is also a natural group,
so the ``natural`` partitioner gives clients disjoint identities. Files without an image suffix
are not images and are skipped; an identity folder without images is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpersonal.data.containers import ImageSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real.files import entries, inside, is_image, read_images

LAYOUT = "one sub-directory per class/identity holding its images (root/<identity>/<image>.jpg)"


def class_files(path: Path) -> dict[str, list[Path]]:
    """Image files of every class folder under ``path``, sorted."""
    folders, _ = entries(path, path)
    if not folders:
        raise DataError(f"'{path}' has no class sub-directories; expected {LAYOUT}")
    files = {folder.name: [inside(path, p) for p in entries(folder, path)[1] if is_image(p)] for folder in folders}
    empty = [name for name, images in files.items() if not images]
    if empty:
        raise DataError(f"class folder(s) {empty[:5]} under '{path}' hold no images; expected {LAYOUT}")
    return files


def load_imagefolder(
    path: Path, size: Sequence[int] | None = None, crop: int | None = None, gray: bool = False
) -> ImageSet:
    """Every image of the tree at ``path`` with its class; groups = classes."""
    files = class_files(path)
    names = tuple(files)
    labels = np.concatenate([np.full(len(images), label, np.int64) for label, images in enumerate(files.values())])
    return ImageSet(
        images=read_images([file for images in files.values() for file in images], size, crop, gray),
        labels=labels,
        class_names=names,
        groups=labels.copy(),
        group_names=names,
    )
