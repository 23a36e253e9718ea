"""Procedural 24x24 RGB images of ten shape classes, with a per-source palette, texture and style.

The class is the shape's geometry (disk, square, triangle, plus, ring, diamond, cross, frame,
bars, crescent). Every source (a user, or one of the server's labelled collections) has its own
:class:`ShapeStyle`: background and foreground colours (always with a luminance contrast of at
least 0.3), a texture (stripes, checker or grain) on the shape or the background, stroke
thickness, shape size, position jitter and edge softness; ``heterogeneity`` scales how far styles
stray from a common default (0: every source alike). Each sample draws a position, size, rotation
(+-20 degrees, small enough that a square never becomes a diamond) and a colour jitter.
Rendering is vectorised with anti-aliased edges from a signed distance, and deterministic in
``(seed, source)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SIZE = 24
CLASS_NAMES = ("disk", "square", "triangle", "plus", "ring", "diamond", "cross", "frame", "bars", "crescent")
NUM_CLASSES = len(CLASS_NAMES)
TEXTURES = ("plain", "stripes", "checker", "grain")
MIN_CONTRAST = 0.3
_GRID = np.arange(SIZE, dtype=np.float32)
Field = NDArray[np.float64]  # shape coordinates and signed distances (float64: the random centres are)


@dataclass(frozen=True)
class ShapeStyle:
    """How one source draws: colours in [0, 1] RGB, texture, stroke and geometry habits."""

    background: tuple[float, float, float]
    foreground: tuple[float, float, float]
    texture: str
    texture_on_shape: bool
    texture_amount: float
    texture_period: float
    texture_angle: float
    thickness: float  # stroke half-width of outline shapes, in shape units
    size: float  # mean half-size of a shape, in pixels
    jitter: float  # maximal offset of the shape centre, in pixels
    softness: float  # edge width, in pixels


DEFAULT_STYLE = ShapeStyle(
    background=(0.2, 0.2, 0.25),
    foreground=(0.85, 0.8, 0.7),
    texture="plain",
    texture_on_shape=True,
    texture_amount=0.0,
    texture_period=5.0,
    texture_angle=0.0,
    thickness=0.22,
    size=8.0,
    jitter=2.5,
    softness=1.0,
)


def _luminance(rgb: NDArray[np.float64]) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _rgb(values: NDArray[np.float64]) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _palette(rng: np.random.Generator, h: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Background and foreground colours, moved from the default by ``h``, with enough contrast."""
    background = np.array(DEFAULT_STYLE.background) + h * (rng.uniform(0, 1, 3) - DEFAULT_STYLE.background)
    foreground = np.array(DEFAULT_STYLE.foreground) + h * (rng.uniform(0, 1, 3) - DEFAULT_STYLE.foreground)
    gap = _luminance(foreground) - _luminance(background)
    if abs(gap) < MIN_CONTRAST:  # push the foreground away from the background's luminance
        direction = 1.0 if (gap > 0 or _luminance(background) < 0.5) else -1.0
        foreground = foreground + direction * (MIN_CONTRAST - direction * gap)
    return np.clip(background, 0, 1), np.clip(foreground, 0, 1)


def sample_style(source: int, seed: int, heterogeneity: float = 1.0) -> ShapeStyle:
    """The style of ``source``; ``heterogeneity`` scales how far it strays from the default."""
    rng = np.random.default_rng([seed, source, 7])
    h = heterogeneity
    background, foreground = _palette(rng, h)
    d = DEFAULT_STYLE
    return ShapeStyle(
        background=_rgb(background),
        foreground=_rgb(foreground),
        texture=str(rng.choice(TEXTURES)) if h > 0 else "plain",
        texture_on_shape=bool(rng.random() < 0.5),
        texture_amount=float(h * rng.uniform(0.1, 0.35)),
        texture_period=d.texture_period + h * float(rng.uniform(-2.0, 2.0)),
        texture_angle=h * float(rng.uniform(0, np.pi)),
        thickness=d.thickness + h * float(rng.uniform(-0.06, 0.12)),
        size=d.size + h * float(rng.uniform(-1.5, 1.5)),
        jitter=d.jitter + h * float(rng.uniform(-1.0, 1.0)),
        softness=d.softness + h * float(rng.uniform(-0.4, 0.6)),
    )


def _rotate(u: Field, v: Field, angle: Field) -> tuple[Field, Field]:
    cos, sin = np.cos(angle), np.sin(angle)
    return u * cos + v * sin, -u * sin + v * cos


def _triangle(u: Field, v: Field, t: float) -> Field:
    # Apex (0, -0.9), base corners (+-0.95, 0.8): three half-planes (y grows downwards).
    side = np.hypot(1.7, 0.95)
    return np.maximum(v - 0.8, (1.7 * np.abs(u) - 0.95 * (v + 0.9)) / side)


SHAPES: tuple[Callable[[Field, Field, float], Field], ...] = (
    lambda u, v, t: np.hypot(u, v) - 1.0,
    lambda u, v, t: np.maximum(np.abs(u), np.abs(v)) - 0.8,
    _triangle,
    lambda u, v, t: np.minimum(
        np.maximum(np.abs(u) - t - 0.05, np.abs(v) - 1.0), np.maximum(np.abs(v) - t - 0.05, np.abs(u) - 1.0)
    ),
    lambda u, v, t: np.abs(np.hypot(u, v) - 0.75) - t,
    lambda u, v, t: (np.abs(u) + np.abs(v) - 1.05) / np.sqrt(2.0),
    lambda u, v, t: np.maximum(
        np.minimum(np.abs(u - v), np.abs(u + v)) / np.sqrt(2.0) - t, np.maximum(np.abs(u), np.abs(v)) - 0.85
    ),
    lambda u, v, t: np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.68) - t,
    lambda u, v, t: np.maximum(np.abs(u) - 0.9, np.abs(np.abs(v) - 0.45) - 0.6 * t - 0.05),
    lambda u, v, t: np.maximum(np.hypot(u, v) - 1.0, 0.65 - np.hypot(u - 0.5, v)),
)


def _texture(style: ShapeStyle, rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    """(n, SIZE, SIZE) multiplicative texture around 1 (random phase per sample)."""
    if style.texture == "plain" or style.texture_amount == 0:
        return np.ones((n, SIZE, SIZE), np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    x, y = _GRID[None, None, :], _GRID[None, :, None]
    along = (x * np.cos(style.texture_angle) + y * np.sin(style.texture_angle)) * 2 * np.pi / style.texture_period
    if style.texture == "stripes":
        pattern = np.sin(along + phase)
    elif style.texture == "checker":
        across = (-x * np.sin(style.texture_angle) + y * np.cos(style.texture_angle)) * 2 * np.pi / style.texture_period
        pattern = np.sign(np.sin(along + phase) * np.sin(across + phase))
    else:  # grain
        pattern = np.clip(rng.normal(0, 0.6, (n, SIZE, SIZE)), -1, 1)
    return (1.0 + style.texture_amount * pattern).astype(np.float32)


def render(labels: NDArray[np.int64], style: ShapeStyle, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Images (N, 3, SIZE, SIZE) uint8 of shapes of the given classes, drawn in ``style``."""
    n = len(labels)
    centre = SIZE / 2 - 0.5 + rng.uniform(-style.jitter, style.jitter, (2, n, 1, 1))
    radius = style.size * rng.uniform(0.85, 1.15, (n, 1, 1))
    angle = np.radians(rng.uniform(-20.0, 20.0, (n, 1, 1)))
    u, v = _rotate((_GRID[None, None, :] - centre[0]) / radius, (_GRID[None, :, None] - centre[1]) / radius, angle)
    distance = np.empty((n, SIZE, SIZE), np.float32)
    for label in np.unique(labels):
        chosen = labels == label
        distance[chosen] = SHAPES[label](u[chosen], v[chosen], style.thickness)
    alpha = np.clip(0.5 - distance * radius / max(style.softness, 0.2), 0.0, 1.0)[:, None]
    texture = _texture(style, rng, n)[:, None]
    jitter = rng.normal(1.0, 0.05, (n, 3, 1, 1))
    fg = np.asarray(style.foreground)[None, :, None, None] * jitter
    bg = np.asarray(style.background)[None, :, None, None] * jitter
    fg, bg = (fg * texture, bg) if style.texture_on_shape else (fg, bg * texture)
    image = alpha * fg + (1.0 - alpha) * bg
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def generate(
    source: int, count: int, classes: Sequence[int], seed: int, heterogeneity: float = 1.0
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``count`` images of ``source`` with labels drawn uniformly from ``classes``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not classes or min(classes) < 0 or max(classes) >= NUM_CLASSES:
        raise ValueError(f"classes must be a non-empty subset of 0..{NUM_CLASSES - 1}, got {list(classes)}")
    rng = np.random.default_rng([seed, source, 8])
    labels = rng.choice(np.asarray(classes, dtype=np.int64), size=count)
    return render(labels, sample_style(source, seed, heterogeneity), rng), labels
