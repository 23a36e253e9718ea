"""Gaze angle conventions (MPIIGaze) and the angular error metric.

A gaze direction is stored as (pitch, yaw) in radians. The camera looks along +z, the person
looks back towards the camera (-z), x points to the image's right and y downwards:

    pitch = asin(-y),  yaw = atan2(-x, -z)
    vector = (-cos(pitch) sin(yaw), -sin(pitch), -cos(pitch) cos(yaw))
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pitchyaw_to_vector(pitchyaw: ArrayLike) -> NDArray[np.float64]:
    """Convert (..., 2) pitch/yaw angles in radians to (..., 3) unit gaze vectors."""
    angles = np.asarray(pitchyaw, dtype=np.float64)
    pitch, yaw = angles[..., 0], angles[..., 1]
    return np.stack([-np.cos(pitch) * np.sin(yaw), -np.sin(pitch), -np.cos(pitch) * np.cos(yaw)], axis=-1)


def vector_to_pitchyaw(vectors: ArrayLike) -> NDArray[np.float64]:
    """Convert (..., 3) gaze vectors (any length) to (..., 2) pitch/yaw angles in radians."""
    vec = np.asarray(vectors, dtype=np.float64)
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("vector_to_pitchyaw: a gaze vector has zero length")
    unit = vec / norm
    pitch = np.arcsin(np.clip(-unit[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-unit[..., 0], -unit[..., 2])
    return np.stack([pitch, yaw], axis=-1)


def angular_error_deg(predicted: ArrayLike, target: ArrayLike) -> NDArray[np.float64]:
    """Per-sample angle in degrees between two (..., 2) pitch/yaw arrays."""
    cosine = np.sum(pitchyaw_to_vector(predicted) * pitchyaw_to_vector(target), axis=-1)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
