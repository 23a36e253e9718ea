"""Image corruptions that give each user its own domain shift (as in DUA's TransPrior setting).

Each corruption maps float images (N, C, H, W) in [0, 1] to corrupted ones, given a severity in
(0, 1] and a random generator. The generator is seeded per user, so the parameters a corruption
draws first (brightness direction, tint gains, ...) are the user's own and the per-pixel noise
differs per sample. :func:`corrupt` applies one by name to uint8 images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.fft import dctn, idctn
from scipy.ndimage import gaussian_filter

Images = NDArray[np.float32]
Corruption = Callable[[Images, float, np.random.Generator], Images]

JPEG_BLOCK = 8


def gaussian_noise(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Additive Gaussian noise, std 0.04 to 0.2."""
    return x + rng.normal(0.0, 0.04 + 0.16 * severity, x.shape).astype(np.float32)


def impulse_noise(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Salt-and-pepper noise on 1% to 10% of the pixels (all channels of a pixel)."""
    fraction = 0.01 + 0.09 * severity
    draw = rng.random((x.shape[0], 1, *x.shape[2:]))
    return np.where(draw < fraction / 2, 0.0, np.where(draw < fraction, 1.0, x)).astype(np.float32)


def blur(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Gaussian blur, sigma 0.4 to 1.6 pixels."""
    return gaussian_filter(x, sigma=(0, 0, 0.4 + 1.2 * severity, 0.4 + 1.2 * severity), mode="nearest")


def contrast(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Contrast towards each image's mean, kept factor 1 to 0.25."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + (x - mean) * (1.0 - 0.75 * severity)


def brightness(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """A brightness offset of 0.15 to 0.5, brighter or darker (the user's habit)."""
    return x + rng.choice([-1.0, 1.0]) * (0.15 + 0.35 * severity)


def jpeg(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """JPEG-like compression: 8x8 block DCT with coarser quantisation of higher frequencies."""
    n, c, h, w = x.shape
    ph, pw = -h % JPEG_BLOCK, -w % JPEG_BLOCK
    padded = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    bh, bw = padded.shape[2] // JPEG_BLOCK, padded.shape[3] // JPEG_BLOCK
    blocks = padded.reshape(n, c, bh, JPEG_BLOCK, bw, JPEG_BLOCK)
    coeffs = dctn(blocks, axes=(3, 5), norm="ortho")
    freq = np.arange(JPEG_BLOCK)
    step = (0.03 + 0.2 * severity) * (1.0 + freq[:, None, None] + freq[None, None, :])
    restored = idctn(np.round(coeffs / step) * step, axes=(3, 5), norm="ortho")
    return restored.reshape(padded.shape)[:, :, :h, :w].astype(np.float32)


def pixelate(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Block-average over 2x2 to 4x4 pixels, then repeat (lower resolution)."""
    factor = 2 + int(round(2 * severity))
    n, c, h, w = x.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    small = padded.reshape(n, c, padded.shape[2] // factor, factor, padded.shape[3] // factor, factor).mean(axis=(3, 5))
    return small.repeat(factor, axis=2).repeat(factor, axis=3)[:, :, :h, :w]


def tint(x: Images, severity: float, rng: np.random.Generator) -> Images:
    """Per-channel gains of the user's camera, each in 1 +- 0.6 * severity."""
    gains = rng.uniform(1.0 - 0.6 * severity, 1.0 + 0.6 * severity, size=(1, x.shape[1], 1, 1))
    return (x * gains).astype(np.float32)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian-noise": gaussian_noise,
    "impulse-noise": impulse_noise,
    "blur": blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
    "tint": tint,
}


def corrupt(images: NDArray[np.uint8], name: str, severity: float, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Apply corruption ``name`` to uint8 images (N, C, H, W); returns uint8 images."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {sorted(CORRUPTIONS)}")
    if not 0.0 < severity <= 1.0:
        raise ValueError(f"corruption severity must be in (0, 1], got {severity!r}")
    x = images.astype(np.float32) / 255.0
    out = CORRUPTIONS[name](x, severity, rng)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
