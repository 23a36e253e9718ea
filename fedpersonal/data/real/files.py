"""File helpers shared by the loaders: checked paths and image decoding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from fedpersonal.data.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, else a DataError naming it and what it should be."""
    if not path.is_file():
        raise DataError(f"missing file '{path}'; expected {expected}")
    return path


def inside(root: Path, path: Path) -> Path:
    """``path`` itself if it is a regular file (or a link to one) within ``root``; a DataError
    naming it when it is a broken or looping link, leads outside ``root``, or is not a file."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as error:  # a dangling link, a link loop
        raise DataError(f"'{path}' is a broken or looping symbolic link ({error}); expected a readable file") from error
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"'{path}' leads to '{resolved}', outside the dataset root '{root}'; expected files within it")
    if not resolved.is_file():
        raise DataError(f"'{path}' is not a regular file; expected a readable file")
    return path


def entries(directory: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """(sub-directories, files) of ``directory``, sorted, hidden names skipped. Links to directories
    are not followed (a DataError names them); a linked file must stay within ``root``."""
    directories, files = [], []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink() and path.is_dir():
            raise DataError(
                f"'{path}' is a symbolic link to a directory; expected real directories (links are not followed)"
            )
        if path.is_dir():
            directories.append(path)
        else:
            files.append(path)
    return directories, files


def dataset_files(root: Path, suffix: str, max_depth: int) -> list[Path]:
    """Every file named ``*suffix`` at most ``max_depth`` directories below ``root`` (or ``root``
    itself when it is such a file), each checked by :func:`inside`."""
    if root.is_file() or root.is_symlink():
        return [inside(root.parent, root)]
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth + 1):
        below: list[Path] = []
        for directory in level:
            directories, files = entries(directory, root)
            found += [inside(root, file) for file in files if file.name.endswith(suffix)]
            for folder in directories:
                if folder.name.endswith(suffix):
                    raise DataError(f"'{folder}' is not a regular file but a directory; expected a {suffix} file")
            below += directories
        level = below
    return found


def is_image(path: Path) -> bool:
    """Whether ``path`` has an image file suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def resize(image: Image.Image, size: Sequence[int] | None, crop: int | None) -> Image.Image:
    """Centre-crop a ``crop`` x ``crop`` box (if given), then resize to ``size`` = (height, width)."""
    if crop:
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    if size:
        image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    return image


def read_image(
    path: Path, size: Sequence[int] | None = None, crop: int | None = None, gray: bool = False
) -> NDArray[np.uint8]:
    """Decode an image file to uint8 (H, W, 3) RGB or (H, W) grayscale; a DataError if unreadable."""
    try:
        with Image.open(path) as image:
            converted = image.convert("L" if gray else "RGB")
            return np.asarray(resize(converted, size, crop), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot decode image '{path}' ({error}); expected a readable image file") from error


def read_images(
    paths: Sequence[Path], size: Sequence[int] | None = None, crop: int | None = None, gray: bool = False
) -> NDArray[np.uint8]:
    """Decode ``paths`` into one array; a DataError if their sizes differ and no ``size`` is given."""
    images = [read_image(path, size, crop, gray) for path in paths]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(
            f"images under '{paths[0].parent.parent}' have different sizes {sorted(shapes)[:3]}; "
            "expected equal sizes (set an image size to resize them)"
        )
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
