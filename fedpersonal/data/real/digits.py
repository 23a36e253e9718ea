"""scikit-learn's bundled handwritten digits (1797 images of 8x8, ten classes; no download)."""

from __future__ import annotations

import numpy as np

from fedpersonal.data.containers import ImageSet


def load_digits() -> ImageSet:
    """The digits as uint8 (1797, 8, 8) images (0..16 scaled to 0..255); no natural users."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only when used

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSet(images=images, labels=bunch.target.astype(np.int64), class_names=tuple(str(d) for d in range(10)))
