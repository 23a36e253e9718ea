"""Procedural identity-labelled grayscale faces (vectorised numpy, deterministic per seed).

An *identity* is a parametric face (:data:`IDENTITY_RANGES`): head shape, skin albedo, hair
(tone, hairline, parting, volume, length, fringe), brows, eyes, nose, mouth, ears, beard,
glasses, and a private texture (low-frequency albedo waves and moles). An *image* of it draws a
variation: pose (yaw, pitch, roll, scale, shift), expression (smile, open mouth, squint, raised
brows), directional lighting on an ellipsoid head, occlusion (sunglasses, mask or a patch) and
blur. A *camera style* (:data:`CAMERA_SPREAD`) shapes every image a camera takes: tone curve,
contrast, brightness, noise, blur, vignetting, resolution loss, a fixed noise pattern, a lighting
habit and a background tone; ``heterogeneity`` scales how far cameras are from neutral.

Identities live in disjoint namespaces: ``(CLIENT, c, k)`` is identity ``k`` of client ``c``,
``(PUBLIC, 0, k)`` the server's public identities, ``(UNSEEN, 0, k)`` identities kept for
evaluation. Each identity's parameters come from its own random stream
``default_rng([seed, namespace, group, k])``, so the sets are disjoint by construction and an
identity looks the same whichever batch it is rendered in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

CLIENT, PUBLIC, UNSEEN = 1, 2, 3  # identity namespaces
_CAMERA, _IMAGES, _COUNT = 10, 11, 12  # stream tags

Params = dict[str, NDArray[np.float32]]
# Rendering intermediates: float32 at run time (float32 arrays times Python floats stay float32), which
# numpy's stubs cannot follow through the arithmetic.
Floats = NDArray[np.floating[Any]]

# Identity parameters: uniform in [low, high]; coordinates span [-1, 1], y pointing down.
IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "head_w": (0.58, 0.74),
    "head_h": (0.78, 0.94),
    "jaw": (0.0, 0.5),
    "square": (0.0, 2.0),
    "skin": (0.35, 0.85),
    "hair_tone": (0.05, 0.85),
    "hairline": (-0.78, -0.42),
    "hair_curve": (0.0, 0.7),
    "hair_part": (-0.3, 0.3),
    "hair_volume": (0.0, 0.16),
    "hair_length": (-0.5, 1.0),
    "fringe": (0.0, 1.0),
    "hair_stripes": (8.0, 22.0),
    "brow_gap": (0.07, 0.14),
    "brow_thick": (0.025, 0.06),
    "brow_slant": (-0.35, 0.35),
    "brow_dark": (0.35, 0.85),
    "brow_len": (0.1, 0.19),
    "eye_sep": (0.19, 0.3),
    "eye_y": (-0.2, -0.06),
    "eye_w": (0.075, 0.125),
    "eye_h": (0.03, 0.06),
    "eye_slant": (-0.25, 0.25),
    "iris_tone": (0.05, 0.5),
    "nose_len": (0.16, 0.3),
    "nose_w": (0.05, 0.11),
    "mouth_gap": (0.08, 0.18),
    "mouth_w": (0.12, 0.24),
    "lip_thick": (0.02, 0.05),
    "lip_tone": (-0.3, 0.05),
    "mouth_curve": (-0.12, 0.12),
    "beard": (0.0, 1.0),
    "glasses": (0.0, 1.0),
    "ear": (0.06, 0.12),
    "mole_x": (-0.45, 0.45),
    "mole_y": (-0.3, 0.55),
    "mole_dark": (-0.2, 0.35),
    "mole2_x": (-0.45, 0.45),
    "mole2_y": (-0.3, 0.55),
    "mole2_dark": (-0.2, 0.35),
}
TEXTURE_WAVES = 3

# Camera style: value = neutral + heterogeneity * spread * u, u ~ U(-1, 1) (or U(0, 1) if one-sided).
CAMERA_SPREAD: dict[str, tuple[float, float, bool]] = {
    "gamma": (1.0, 0.25, False),
    "contrast": (1.0, 0.2, False),
    "brightness": (0.0, 0.08, False),
    "noise": (0.005, 0.025, True),
    "blur": (0.0, 0.5, True),
    "vignette": (0.0, 0.4, True),
    "lowres": (0.0, 0.6, True),
    "pattern": (0.0, 0.02, True),
    "light_bias": (0.0, 0.6, True),
    "light_azimuth": (0.0, np.pi, False),
    "background": (0.5, 0.2, False),
}


@dataclass(frozen=True)
class FaceSamples:
    """Face images (N, size, size) uint8 and identity labels (N,) int64 (0..K-1 in the set)."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)


def sample_identities(seed: int, namespace: int, group: int, count: int) -> Params:
    """Parameters of identities ``0..count-1`` of ``(namespace, group)``, one row each."""
    names = list(IDENTITY_RANGES)
    low = np.array([IDENTITY_RANGES[n][0] for n in names], dtype=np.float32)
    high = np.array([IDENTITY_RANGES[n][1] for n in names], dtype=np.float32)
    waves = TEXTURE_WAVES * 4
    rows = [np.random.default_rng([seed, namespace, group, k]).random(len(names) + waves) for k in range(count)]
    draws = np.asarray(rows, dtype=np.float32).reshape(count, -1)
    params = {name: low[i] + (high[i] - low[i]) * draws[:, i] for i, name in enumerate(names)}
    texture = draws[:, len(names) :].reshape(count, TEXTURE_WAVES, 4)
    params["wave_freq"] = 2.0 + 6.0 * texture[..., 0]
    params["wave_angle"] = np.pi * texture[..., 1]
    params["wave_phase"] = 2.0 * np.pi * texture[..., 2]
    params["wave_amp"] = 0.07 * texture[..., 3]
    return params


def sample_cameras(rng: np.random.Generator, count: int, heterogeneity: float) -> Params:
    """``count`` camera styles drawn from ``rng`` (``heterogeneity`` 0: all neutral)."""
    styles: Params = {}
    for name, (neutral, spread, one_sided) in CAMERA_SPREAD.items():
        u = rng.random(count) if one_sided else rng.uniform(-1.0, 1.0, count)
        styles[name] = (neutral + heterogeneity * spread * u).astype(np.float32)
    styles["pattern_seed"] = rng.integers(0, 2**31, count).astype(np.float32)
    return styles


def client_camera(seed: int, client: int, heterogeneity: float) -> Params:
    """The camera style of client ``client`` (one row)."""
    return sample_cameras(np.random.default_rng([seed, _CAMERA, client]), 1, heterogeneity)


def _take(params: Params, index: NDArray[np.int64]) -> Params:
    return {name: values[index] for name, values in params.items()}


def sample_variations(rng: np.random.Generator, n: int) -> Params:
    """Per-image pose, expression, lighting, occlusion and blur."""
    deg = np.float32(np.pi / 180.0)
    return {
        "yaw": np.clip(rng.normal(0.0, 15.0, n), -50, 50) * deg,
        "pitch": np.clip(rng.normal(0.0, 8.0, n), -25, 25) * deg,
        "roll": rng.normal(0.0, 5.0, n) * deg,
        "scale": rng.normal(1.15, 0.04, n),
        "shift_x": rng.normal(0.0, 0.03, n),
        "shift_y": rng.normal(0.05, 0.03, n),
        "smile": rng.uniform(-0.3, 1.0, n),
        "mouth_open": np.clip(rng.normal(0.0, 0.3, n), 0.0, 1.0),
        "squint": rng.uniform(0.0, 0.7, n),
        "brow_raise": rng.normal(0.0, 0.35, n),
        "gaze_x": rng.normal(0.0, 0.25, n),
        "light_azimuth": rng.uniform(-np.pi, np.pi, n),
        "light_tilt": rng.uniform(0.0, 0.6, n),
        "ambient": rng.uniform(0.45, 0.8, n),
        "occlusion": rng.choice(4, n, p=[0.85, 0.05, 0.05, 0.05]),
        "occ_x": rng.uniform(-0.8, 0.8, n),
        "occ_y": rng.uniform(-0.8, 0.8, n),
        "occ_size": rng.uniform(0.2, 0.5, n),
        "occ_tone": rng.uniform(0.0, 1.0, n),
        "glasses_off": rng.random(n),
        "blur": rng.uniform(0.0, 0.3, n),
        "brightness": rng.normal(0.0, 0.05, n),
        "hair_jitter": rng.normal(0.0, 0.03, n),
        "background_tone": rng.normal(0.0, 0.08, n),
        "background_ramp": rng.normal(0.0, 0.15, n),
    }


def _sigmoid(x: Floats) -> Floats:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _col(values: NDArray) -> NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _blend(image: Floats, alpha: Floats, value) -> Floats:
    return image * (1.0 - alpha) + alpha * value


def _box_blur(image: Floats) -> Floats:
    size = image.shape[-1]
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
    total = sum(padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3))  # nine arrays: an array
    return cast(Floats, total) / 9.0


def _low_resolution(image: Floats) -> Floats:
    n, size, _ = image.shape
    half = image[:, : size // 2 * 2, : size // 2 * 2].reshape(n, size // 2, 2, size // 2, 2).mean((2, 4))
    up = np.repeat(np.repeat(half, 2, axis=1), 2, axis=2)
    return np.pad(up, ((0, 0), (0, size - up.shape[1]), (0, size - up.shape[2])), mode="edge")


class _Canvas:
    """Pixel grid in face coordinates for a batch of poses."""

    def __init__(self, size: int, v: Params) -> None:
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        self.gx, self.gy = grid[None, None, :], grid[None, :, None]
        self.sharp = size / 1.6  # edge steepness: about 1.6 pixels from 12% to 88%
        roll, scale = _col(v["roll"]), _col(v["scale"])
        x0, y0 = self.gx - _col(v["shift_x"]), self.gy - _col(v["shift_y"])
        self.x = (np.cos(roll) * x0 + np.sin(roll) * y0) / scale
        self.y = (-np.sin(roll) * x0 + np.cos(roll) * y0) / scale
        self.sin_yaw, self.cos_yaw = _col(np.sin(v["yaw"])), _col(np.cos(v["yaw"]))
        self.sin_pitch, self.cos_pitch = _col(np.sin(v["pitch"])), _col(np.cos(v["pitch"]))

    def at_depth(self, depth: float) -> tuple[Floats, Floats]:
        """Coordinates on the face surface at ``depth`` (turning shifts nearer parts further)."""
        return (self.x - depth * self.sin_yaw) / self.cos_yaw, (self.y - depth * self.sin_pitch) / self.cos_pitch

    def soft(self, distance: Floats) -> Floats:
        """Anti-aliased inside test: > 0 inside."""
        return _sigmoid(distance * self.sharp)


def _head(c: _Canvas, p: Params) -> tuple[Floats, ...]:
    """Head mask, head-normalised coordinates (hx, hy) and the head's half width per row."""
    x, y = c.at_depth(0.1)
    hy = y / _col(p["head_h"])
    narrowing = 1.0 - _col(p["jaw"]) * np.clip(hy, 0.0, None) ** 2
    half_width = _col(p["head_w"]) * np.clip(narrowing, 0.3, None)
    hx = x / half_width
    power = 2.0 + _col(p["square"])
    radius = (np.abs(hx) ** power + np.abs(hy) ** power) ** (1.0 / power)
    return c.soft((1.0 - radius) * _col(p["head_w"])), hx, hy, half_width


def _skin(c: _Canvas, p: Params, v: Params) -> Floats:
    """Albedo of the face surface: skin, private texture, brows, eyes, nose, mouth, beard."""
    x, y = c.at_depth(0.35)
    albedo = _col(p["skin"]) + 0.0 * x
    for w in range(TEXTURE_WAVES):
        angle = p["wave_angle"][:, w]
        phase = _col(p["wave_freq"][:, w]) * (_col(np.cos(angle)) * x + _col(np.sin(angle)) * y)
        albedo = albedo + _col(p["wave_amp"][:, w]) * np.cos(phase + _col(p["wave_phase"][:, w]))
    for prefix in ("mole", "mole2"):
        spot = np.exp(-((x - _col(p[f"{prefix}_x"])) ** 2 + (y - _col(p[f"{prefix}_y"])) ** 2) / 0.004)
        albedo = albedo - np.clip(_col(p[f"{prefix}_dark"]), 0.0, None) * spot

    eye_y, eye_sep = _col(p["eye_y"]), _col(p["eye_sep"])
    for side in (-1.0, 1.0):
        ex = x - side * eye_sep
        # Brows: a thick arc above each eye, raised by expression.
        by = (
            y
            - (eye_y - _col(p["brow_gap"]) - 0.05 * _col(v["brow_raise"]))
            + side * _col(p["brow_slant"]) * ex
            - 2.0 * ex**2
        )
        brow = np.exp(-((by / _col(p["brow_thick"])) ** 2)) * c.soft(_col(p["brow_len"]) - np.abs(ex + side * 0.02))
        albedo = albedo * (1.0 - _col(p["brow_dark"]) * brow)
        # Eyes: a sclera ellipse squinted by expression, a dark iris following the gaze.
        ey = y - eye_y - side * _col(p["eye_slant"]) * ex
        height = _col(p["eye_h"]) * (1.0 - _col(v["squint"]))
        opening = c.soft((1.0 - (ex / _col(p["eye_w"])) ** 2 - (ey / height) ** 2) * height)
        iris_x = ex - _col(v["gaze_x"]) * _col(p["eye_w"]) * 0.5
        iris = c.soft(0.55 * _col(p["eye_w"]) - np.sqrt(iris_x**2 + ey**2)) * opening
        albedo = _blend(albedo, opening, 0.78)
        albedo = _blend(albedo, iris, _col(p["iris_tone"]))

    # Nose: shadow along one side (the side away from the light) and two nostrils.
    nose_y = eye_y + _col(p["nose_len"])
    nx, ny = c.at_depth(0.55)
    along = c.soft(ny - eye_y) * c.soft(nose_y - ny)
    side = np.sign(_col(np.cos(v["light_azimuth"])) + 1e-3)
    ridge = np.exp(-(((nx + side * _col(p["nose_w"]) * 0.7) / 0.04) ** 2)) * along
    albedo = albedo - 0.12 * ridge
    for flank in (-1.0, 1.0):
        nostril = np.exp(-((nx - flank * 0.6 * _col(p["nose_w"])) ** 2 + (ny - nose_y) ** 2) / 0.0012)
        albedo = albedo - 0.3 * nostril

    # Mouth: a lip band curved by the smile, dark inside when open.
    mouth_y = nose_y + _col(p["mouth_gap"])
    mx, my = c.at_depth(0.4)
    mouth_w = _col(p["mouth_w"]) * (1.0 + 0.15 * _col(v["smile"]))
    curve = (_col(p["mouth_curve"]) + 0.12 * _col(v["smile"])) * (mx / mouth_w) ** 2
    dy = my - mouth_y + curve
    width = c.soft(mouth_w - np.abs(mx))
    gap = 0.06 * _col(v["mouth_open"])
    lips = np.exp(-((np.abs(dy) - gap / 2) ** 2) / _col(p["lip_thick"]) ** 2) * width
    albedo = albedo + _col(p["lip_tone"]) * lips
    inside = c.soft(gap / 2 - np.abs(dy)) * width
    albedo = _blend(albedo, inside, 0.08)

    # Beard: identities with beard > 0.6 have hair below the mouth line and on the jaw.
    density = np.clip((_col(p["beard"]) - 0.6) / 0.4, 0.0, 1.0)
    chin = c.soft(y - (mouth_y - 0.12)) * (1.0 - 0.7 * lips)
    albedo = _blend(albedo, density * chin * 0.85, _col(p["hair_tone"]))
    return albedo


def _hair(c: _Canvas, p: Params, v: Params, half_width, hy) -> tuple[Floats, ...]:
    """Alpha of the hair behind the head (its length frames the face), alpha of the hair on top
    of the head (above the hairline, with an optional fringe), and the hair's albedo."""
    x, y = c.at_depth(0.3)
    hairline = _col(p["hairline"]) + _col(p["hair_curve"]) * x**2 + _col(p["hair_part"]) * x
    hairline = hairline + _col(v["hair_jitter"])
    fringe = _col(p["fringe"]) > 0.7
    hairline = np.where(fringe, hairline + 0.18 * np.exp(-(x**2) / 0.08), hairline)
    volume = _col(p["hair_volume"])
    radius = np.sqrt(
        (c.x / (half_width + volume)) ** 2
        + (np.clip(hy, None, 0.0) * _col(p["head_h"]) / (_col(p["head_h"]) + volume)) ** 2
    )
    top = c.soft((1.0 - radius) * 0.6) * c.soft(hairline - y)
    back_radius = np.sqrt(
        (c.x / (_col(p["head_w"]) + volume + 0.08)) ** 2 + ((c.y + 0.05) / (_col(p["head_h"]) + volume)) ** 2
    )
    back = c.soft((1.0 - back_radius) * 0.6) * c.soft(_col(p["hair_length"]) - c.y)
    strands = 0.06 * np.cos(_col(p["hair_stripes"]) * (x - 0.4 * _col(p["hair_part"])) + 3.0 * y)
    return back, top, _col(p["hair_tone"]) * (1.0 + strands)


def _glasses(c: _Canvas, p: Params, v: Params) -> Floats:
    """Frame alpha for identities who wear glasses (sometimes taken off)."""
    x, y = c.at_depth(0.45)
    wears = (_col(p["glasses"]) > 0.8) & (_col(v["glasses_off"]) > 0.15)
    frame = 0.0 * x
    for side in (-1.0, 1.0):
        ring = np.sqrt(((x - side * _col(p["eye_sep"])) / 1.3) ** 2 + (y - _col(p["eye_y"])) ** 2)
        frame = np.maximum(frame, np.exp(-(((ring - 0.09) / 0.018) ** 2)))
    bridge = np.exp(-(((y - _col(p["eye_y"]) + 0.02) / 0.018) ** 2)) * (np.abs(x) < _col(p["eye_sep"]) - 0.1)
    return np.maximum(frame, bridge) * wears


def _occlusion(c: _Canvas, p: Params, v: Params) -> tuple[Floats, Floats]:
    """Alpha and tone of 1: sunglasses, 2: a mask over mouth and nose, 3: a patch (hand, object)."""
    x, y = c.at_depth(0.45)
    kind = _col(v["occlusion"])
    eye_y = _col(p["eye_y"])
    lenses = c.soft(0.11 - np.sqrt(((np.abs(x) - _col(p["eye_sep"])) / 1.2) ** 2 + (y - eye_y) ** 2))
    mask = c.soft(y - (eye_y + 0.5 * _col(p["nose_len"]))) * c.soft(_col(p["head_w"]) * 0.95 - np.abs(x))
    mask = mask * c.soft(0.75 - y)
    size = _col(v["occ_size"])
    patch = c.soft(size - np.abs(c.gx - _col(v["occ_x"]))) * c.soft(size * 0.7 - np.abs(c.gy - _col(v["occ_y"])))
    alpha = (kind == 1) * lenses + (kind == 2) * mask + (kind == 3) * patch
    tone = np.where(kind == 1, 0.05, np.where(kind == 2, 0.6 + 0.3 * _col(v["occ_tone"]), _col(v["occ_tone"])))
    return alpha, tone


def _shading(c: _Canvas, hx, hy, v: Params, cam: Params) -> Floats:
    """Lambert shading of an ellipsoid head lit from the image's light direction."""
    azimuth = _col(v["light_azimuth"])
    bias = _col(cam["light_bias"])
    lx = (1.0 - bias) * np.cos(azimuth) + bias * np.cos(_col(cam["light_azimuth"]))
    ly = (1.0 - bias) * np.sin(azimuth) + bias * np.sin(_col(cam["light_azimuth"]))
    tilt = np.clip(_col(v["light_tilt"]) + 0.5 * bias, 0.0, 0.95)
    norm = np.sqrt(lx**2 + ly**2) + 1e-6
    lx, ly, lz = tilt * lx / norm, tilt * ly / norm, np.sqrt(1.0 - tilt**2)
    nx, ny = np.clip(hx, -1.0, 1.0) * 0.9, np.clip(hy, -1.0, 1.0) * 0.9
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.05, None))
    lambert = np.clip(nx * lx + ny * ly + nz * lz, 0.0, None)
    ambient = _col(v["ambient"])
    return ambient + (1.0 - ambient) * lambert * 1.2


def _camera(c: _Canvas, image, v: Params, cam: Params) -> Floats:
    """Apply the camera: resolution loss, blur, vignetting, tone curve, noise, fixed pattern."""
    size = image.shape[-1]
    image = _blend(image, _col(cam["lowres"]), _low_resolution(image))
    blur = np.clip(_col(cam["blur"]) + _col(v["blur"]), 0.0, 1.6)
    once = _box_blur(image)
    image = np.where(blur <= 1.0, _blend(image, blur, once), _blend(once, blur - 1.0, _box_blur(once)))
    image = image * (1.0 - _col(cam["vignette"]) * (c.gx**2 + c.gy**2) / 2.0)
    image = np.clip(image, 0.0, 1.0) ** _col(cam["gamma"])
    image = (image - 0.5) * _col(cam["contrast"]) + 0.5 + _col(cam["brightness"]) + _col(v["brightness"])
    noise_rng = np.random.default_rng(int(v["noise_seed"]))
    image = image + _col(cam["noise"]) * noise_rng.standard_normal(image.shape, dtype=np.float32)
    seeds = cam["pattern_seed"].astype(np.int64)
    unique, inverse = np.unique(seeds, return_inverse=True)
    patterns = np.stack([np.random.default_rng(int(s)).standard_normal((size, size), dtype=np.float32) for s in unique])
    return image + _col(cam["pattern"]) * patterns[inverse.reshape(-1)]


def render_faces(p: Params, v: Params, cam: Params, size: int) -> NDArray[np.uint8]:
    """Render one image per row of the per-image identity ``p``, variation ``v`` and camera ``cam``."""
    c = _Canvas(size, v)
    background = _col(cam["background"] + v["background_tone"]) + _col(v["background_ramp"]) * c.gx
    head, hx, hy, half_width = _head(c, p)
    shade = _shading(c, hx, hy, v, cam)
    x, y = c.at_depth(0.0)
    image = background + 0.0 * hx
    for side in (-1.0, 1.0):  # ears, behind the head
        ear = c.soft(
            _col(p["ear"]) - np.sqrt(((x - side * (half_width + 0.02)) / 0.6) ** 2 + (y - _col(p["eye_y"]) - 0.08) ** 2)
        )
        image = _blend(image, ear, _col(p["skin"]) * 0.85 * shade)
    back, top, hair_tone = _hair(c, p, v, half_width, hy)
    image = _blend(image, back, hair_tone * shade)
    image = _blend(image, head, _skin(c, p, v) * shade)
    image = _blend(image, top, hair_tone * shade)
    image = _blend(image, _glasses(c, p, v), 0.1)
    alpha, tone = _occlusion(c, p, v)
    image = _blend(image, alpha, tone)
    image = _camera(c, image, v, cam)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def generate_faces(
    seed: int,
    namespace: int,
    group: int,
    num_identities: int,
    images_per_identity: int,
    size: int,
    camera: Params | None = None,
    heterogeneity: float = 1.0,
) -> FaceSamples:
    """``images_per_identity`` images of each identity of ``(namespace, group)``, identity-major.

    ``camera``: one style for every image (a client's device); None: a random camera per image
    (a collection gathered from many devices, like the public and evaluation sets).
    """
    if num_identities < 1 or images_per_identity < 1:
        raise ValueError(f"need >= 1 identity and image per identity, got {num_identities} and {images_per_identity}")
    if size < 16:
        raise ValueError(f"face images need size >= 16, got {size}")
    identities = sample_identities(seed, namespace, group, num_identities)
    labels = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    rng = np.random.default_rng([seed, namespace, group, _IMAGES])
    variations = sample_variations(rng, len(labels))
    variations["noise_seed"] = np.int64(rng.integers(0, 2**31))
    if camera is None:
        cameras = sample_cameras(rng, len(labels), heterogeneity)
    else:
        cameras = _take(camera, np.zeros(len(labels), dtype=np.int64))
    images = render_faces(_take(identities, labels), variations, cameras, size)
    return FaceSamples(images, labels)


def client_identity_count(seed: int, client: int, low: int, high: int) -> int:
    """How many identities client ``client`` holds: uniform in ``[low, high]``."""
    return int(np.random.default_rng([seed, _COUNT, client]).integers(low, high + 1))


def client_faces(
    seed: int, client: int, num_identities: int, images_per_identity: int, size: int, heterogeneity: float
) -> FaceSamples:
    """The faces of client ``client``: its own identities, all taken by its own camera."""
    camera = client_camera(seed, client, heterogeneity)
    return generate_faces(seed, CLIENT, client, num_identities, images_per_identity, size, camera)
