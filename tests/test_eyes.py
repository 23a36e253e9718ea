import dataclasses

import numpy as np
import pytest

from fedpersonal.data.synthetic.eyes import generate_user, render_eyes, sample_user


def test_deterministic_per_seed_and_user():
    a, b = generate_user(3, 50, seed=7), generate_user(3, 50, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.gaze, b.gaze)
    assert not np.array_equal(a.images, generate_user(3, 50, seed=8).images)
    assert not np.array_equal(a.images, generate_user(4, 50, seed=7).images)


def test_shapes_dtypes_and_label_ranges():
    samples = generate_user(0, 200, seed=0)
    assert samples.images.shape == (200, 36, 60) and samples.images.dtype == np.uint8
    assert samples.gaze.shape == (200, 2) and samples.pose.shape == (200, 2)
    assert np.all(np.abs(samples.gaze) < np.radians(90))
    assert samples.images.std() > 10  # not a blank image


def _dark_centroid(user, eye_pitch, eye_yaw):
    fixed = dataclasses.replace(
        user,
        eye_mean=(np.radians(eye_pitch), np.radians(eye_yaw)),
        eye_std=(1e-6, 1e-6),
        head_mean=(0.0, 0.0),
        head_std=(1e-6, 1e-6),
        noise_std=0.0,
        light_strength=0.0,
    )
    samples = render_eyes(fixed, 20, np.random.default_rng(0))
    mean_image = samples.images.astype(float).mean(0)
    rows, cols = np.nonzero(mean_image <= np.percentile(mean_image, 1.5))  # the pupil
    return cols.mean(), rows.mean(), samples


def test_iris_follows_mpiigaze_conventions():
    user = sample_user(1, seed=0)
    x_left_yaw, _, looking = _dark_centroid(user, 0.0, 25.0)
    x_right_yaw, _, _ = _dark_centroid(user, 0.0, -25.0)
    # Negative yaw = looking towards the camera's +x = the image's right.
    assert x_right_yaw > x_left_yaw + 5
    _, y_up, _ = _dark_centroid(user, 20.0, 0.0)
    _, y_down, _ = _dark_centroid(user, -20.0, 0.0)
    # Positive pitch = looking up = smaller image row.
    assert y_up < y_down - 3
    # Label = eye rotation + head pose + the user's kappa.
    np.testing.assert_allclose(looking.gaze[0], [user.kappa[0], np.radians(25.0) + user.kappa[1]], atol=1e-4)


def test_users_differ_unless_heterogeneity_is_zero():
    users = [sample_user(u, seed=0) for u in range(5)]
    assert len({round(u.skin_tone, 6) for u in users}) == 5
    assert len({u.kappa for u in users}) == 5
    flat = [sample_user(u, seed=0, heterogeneity=0.0) for u in range(5)]
    assert {u.kappa for u in flat} == {(0.0, 0.0)}
    assert len({u.half_width for u in flat}) == 1


def test_rejects_empty_request():
    with pytest.raises(ValueError, match="samples per user"):
        generate_user(0, 0, seed=0)
