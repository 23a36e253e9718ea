import numpy as np
import pytest

from fedpersonal.metrics.angular import angular_error_deg, pitchyaw_to_vector, vector_to_pitchyaw


def test_straight_at_camera_is_minus_z():
    np.testing.assert_allclose(pitchyaw_to_vector([0.0, 0.0]), [0.0, 0.0, -1.0], atol=1e-12)


def test_mpiigaze_sign_conventions():
    # Looking up (y negative, camera y points down) is positive pitch.
    np.testing.assert_allclose(vector_to_pitchyaw([0.0, -1.0, -1.0]), [np.pi / 4, 0.0], atol=1e-12)
    # Looking towards the camera's +x is negative yaw: yaw = atan2(-x, -z).
    np.testing.assert_allclose(vector_to_pitchyaw([1.0, 0.0, -1.0]), [0.0, -np.pi / 4], atol=1e-12)


def test_round_trip():
    rng = np.random.default_rng(0)
    angles = rng.uniform([-1.2, -2.5], [1.2, 2.5], size=(100, 2))
    np.testing.assert_allclose(vector_to_pitchyaw(pitchyaw_to_vector(angles)), angles, atol=1e-10)
    # Vectors of any length give the same angles.
    np.testing.assert_allclose(vector_to_pitchyaw(3.0 * pitchyaw_to_vector(angles)), angles, atol=1e-10)


def test_angular_error_known_angles():
    deg = np.radians
    assert angular_error_deg([0.0, 0.0], [0.0, deg(90)]) == pytest.approx(90.0)
    assert angular_error_deg([deg(10), 0.0], [deg(-5), 0.0]) == pytest.approx(15.0)
    # 3-4-5 construction: vectors (0,0,-1) and (0.6,0,-0.8) are acos(0.8) apart.
    tilted = vector_to_pitchyaw([0.6, 0.0, -0.8])
    assert angular_error_deg([0.0, 0.0], tilted) == pytest.approx(np.degrees(np.arccos(0.8)))
    errors = angular_error_deg([[0.0, 0.0], [0.1, 0.2]], [[0.0, 0.0], [0.1, 0.2]])
    np.testing.assert_allclose(errors, [0.0, 0.0], atol=1e-5)


def test_zero_vector_is_rejected():
    with pytest.raises(ValueError, match="zero length"):
        vector_to_pitchyaw([0.0, 0.0, 0.0])
