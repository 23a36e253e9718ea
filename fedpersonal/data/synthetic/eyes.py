"""Procedural 36x60 grayscale eye images with MPIIGaze label conventions.

Every user is a parametric eye (:class:`EyeUser`): eye shape and position, iris, sclera and skin
tones, lighting habit, camera noise and contrast, head-pose and gaze habits, and a personal
angle kappa between the optical axis (what the image shows) and the visual axis (the label).
A sample draws a head pose and an eye-in-head rotation from the user's habits and renders a 2.5-D
eyeball: the iris/pupil ellipse is displaced and foreshortened by the rotation, the eyelids follow
the pitch, the head yaw foreshortens the eye, a corneal glint follows the light.

Labels (radians): gaze (pitch, yaw) = eye rotation + head pose + kappa, and head pose (pitch,
yaw). Conventions are those of :mod:`fedpersonal.metrics.angular`. Everything is vectorised over
samples and deterministic given ``(seed, user_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEIGHT, WIDTH = 36, 60
_ROWS = np.arange(HEIGHT, dtype=np.float32)[None, :, None]
_COLS = np.arange(WIDTH, dtype=np.float32)[None, None, :]


@dataclass(frozen=True)
class EyeUser:
    """Appearance and habits of one synthetic user (angles in radians, sizes in pixels)."""

    user_id: int
    half_width: float  # half the eye opening's width
    openness: float  # upper-lid height at the centre
    iris_radius: float
    center: tuple[float, float]  # (x, y) of the eyeball centre
    tilt: float  # canthal tilt of the eye opening
    skin_tone: float
    iris_tone: float
    sclera_tone: float
    light_direction: float
    light_strength: float
    noise_std: float
    contrast: float
    blur: float  # 0..1 mix with a 3x3 box blur
    kappa: tuple[float, float]
    eye_mean: tuple[float, float]
    eye_std: tuple[float, float]
    head_mean: tuple[float, float]
    head_std: tuple[float, float]


@dataclass(frozen=True)
class GazeSamples:
    """Eye images (N, 36, 60) uint8, gaze (N, 2) and head pose (N, 2) float32 in radians."""

    images: NDArray[np.uint8]
    gaze: NDArray[np.float32]
    pose: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.gaze)


def sample_user(user_id: int, seed: int, heterogeneity: float = 1.0) -> EyeUser:
    """Draw the parameters of user ``user_id``; ``heterogeneity`` scales how users differ."""
    rng = np.random.default_rng([seed, user_id, 0])
    h = heterogeneity
    deg = np.radians

    def spread(center: float, half_range: float) -> float:
        return float(center + h * rng.uniform(-half_range, half_range))

    return EyeUser(
        user_id=user_id,
        half_width=spread(21.0, 3.0),
        openness=spread(8.0, 2.0),
        iris_radius=spread(7.5, 1.0),
        center=(spread(30.0, 3.0), spread(19.0, 2.0)),
        tilt=float(deg(spread(0.0, 8.0))),
        skin_tone=spread(0.62, 0.2),
        iris_tone=spread(0.3, 0.15),
        sclera_tone=spread(0.88, 0.07),
        light_direction=float(rng.uniform(-np.pi, np.pi)),
        light_strength=spread(0.35, 0.25),
        noise_std=spread(0.04, 0.03),
        contrast=spread(1.0, 0.3),
        blur=float(np.clip(spread(0.3, 0.3), 0.0, 1.0)),
        kappa=(float(deg(h * rng.normal(0.0, 2.0))), float(deg(h * rng.normal(0.0, 2.0)))),
        eye_mean=(float(deg(spread(-6.0, 6.0))), float(deg(spread(0.0, 8.0)))),
        eye_std=(float(deg(spread(8.0, 2.0))), float(deg(spread(12.0, 3.0)))),
        head_mean=(float(deg(spread(-4.0, 6.0))), float(deg(spread(0.0, 8.0)))),
        head_std=(float(deg(spread(5.0, 2.0))), float(deg(spread(7.0, 3.0)))),
    )


def _sigmoid(x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    """Logistic function; keeps the dtype (float32 here, which numpy's stubs cannot follow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _column(values: NDArray[np.floating]) -> NDArray[np.float32]:
    return values.astype(np.float32)[:, None, None]


def render_eyes(user: EyeUser, n: int, rng: np.random.Generator) -> GazeSamples:
    """Render ``n`` eye images of ``user`` with their gaze and head-pose labels."""
    limit_p, limit_y = np.radians(35.0), np.radians(45.0)
    eye_p = np.clip(rng.normal(user.eye_mean[0], user.eye_std[0], n), -limit_p, limit_p)
    eye_y = np.clip(rng.normal(user.eye_mean[1], user.eye_std[1], n), -limit_y, limit_y)
    head_p = np.clip(rng.normal(user.head_mean[0], user.head_std[0], n), -limit_p, limit_p)
    head_y = np.clip(rng.normal(user.head_mean[1], user.head_std[1], n), -limit_y, limit_y)

    # Geometry of the eye opening, in eye-centred, tilted coordinates.
    cx = _column(user.center[0] + rng.normal(0.0, 1.0, n))
    cy = _column(user.center[1] + rng.normal(0.0, 0.8, n))
    tilt = _column(user.tilt + rng.normal(0.0, np.radians(2.0), n))
    dx, dy = _COLS - cx, _ROWS - cy
    x = dx * np.cos(tilt) + dy * np.sin(tilt)
    y = -dx * np.sin(tilt) + dy * np.cos(tilt)
    half_width = _column(user.half_width * np.cos(0.6 * head_y))
    along = np.clip(1.0 - (x / half_width) ** 2, 0.0, None)
    sin_p = _column(np.sin(eye_p))
    upper = -user.openness * (1.0 + 0.9 * sin_p) * along  # lid rises when looking up
    lower = 0.55 * user.openness * (1.0 - 0.3 * sin_p) * along
    opening = _sigmoid((y - upper) * 1.5) * _sigmoid((lower - y) * 1.5)

    # Iris and pupil: a disc on the eyeball, displaced and foreshortened by the rotation.
    eyeball = 0.85 * user.half_width
    ix = _column(-eyeball * np.sin(eye_y) * np.cos(eye_p))
    iy = _column(-eyeball * np.sin(eye_p))
    rx = _column(user.iris_radius * np.cos(eye_y))
    ry = _column(user.iris_radius * np.cos(eye_p))
    radius = np.sqrt(((x - ix) / rx) ** 2 + ((y - iy) / ry) ** 2)
    iris = _sigmoid((1.0 - radius) * 8.0)
    pupil = _sigmoid((0.42 - radius) * 14.0)
    iris_texture = 1.0 + 0.15 * np.cos(9.0 * np.arctan2(y - iy, x - ix) + user.user_id)

    # Lighting: a directional ramp over the image, per-sample jitter around the user's habit.
    light_dir = _column(user.light_direction + rng.normal(0.0, 0.5, n))
    strength = _column(user.light_strength * rng.uniform(0.5, 1.5, n))
    shading = 1.0 + strength * (np.cos(light_dir) * dx / 30.0 + np.sin(light_dir) * dy / 18.0)
    glint = np.exp(
        -(((x - ix * 0.6 - 2.0 * np.cos(light_dir)) ** 2 + (y - iy * 0.6 - 2.0 * np.sin(light_dir)) ** 2) / 1.5)
    )

    crease = np.exp(-(((y - (upper - 4.0 - 0.15 * user.openness)) / 1.6) ** 2)) * (along > 0)
    lashes = np.exp(-(((y - upper) / 0.9) ** 2)) * (along > 0)
    skin = user.skin_tone * (1.0 - 0.25 * crease - 0.45 * lashes)
    eye = user.sclera_tone * (1.0 - iris) + user.iris_tone * iris_texture * iris * (1.0 - pupil)
    eye = eye + 0.04 * pupil
    image = (opening * eye + (1.0 - opening) * skin) * shading + 0.5 * glint * opening

    if user.blur > 0:
        padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
        box = sum(padded[:, i : i + HEIGHT, j : j + WIDTH] for i in range(3) for j in range(3)) / 9.0
        image = (1.0 - user.blur) * image + user.blur * box
    contrast = _column(user.contrast * rng.uniform(0.85, 1.15, n))
    brightness = _column(rng.normal(0.0, 0.05, n))
    image = (image - 0.5) * contrast + 0.5 + brightness
    image = image + rng.normal(0.0, user.noise_std, image.shape).astype(np.float32)
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    gaze = np.stack([eye_p + head_p + user.kappa[0], eye_y + head_y + user.kappa[1]], axis=1)
    pose = np.stack([head_p, head_y], axis=1)
    return GazeSamples(pixels, gaze.astype(np.float32), pose.astype(np.float32))


def generate_user(user_id: int, n: int, seed: int, heterogeneity: float = 1.0) -> GazeSamples:
    """All ``n`` samples of one user, deterministic in ``(seed, user_id, heterogeneity)``."""
    if n < 1:
        raise ValueError(f"samples per user must be >= 1, got {n}")
    user = sample_user(user_id, seed, heterogeneity)
    return render_eyes(user, n, np.random.default_rng([seed, user_id, 1]))
