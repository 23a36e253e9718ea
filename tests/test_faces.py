"""Embedded faces: deterministic, disjoint identity sets, per-client cameras, task splits."""

import numpy as np
import pytest

from fedpersonal.config import ConfigError, parse_config
from fedpersonal.data.synthetic import faces
from fedpersonal.tasks.face import FaceSettings, FaceTask


def test_generation_is_deterministic_per_seed():
    first = faces.client_faces(0, 3, 4, 5, 32, 1.0)
    again = faces.client_faces(0, 3, 4, 5, 32, 1.0)
    other = faces.client_faces(1, 3, 4, 5, 32, 1.0)
    assert first.images.shape == (20, 32, 32) and first.images.dtype == np.uint8
    assert list(first.labels) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def test_identity_sets_are_disjoint_and_stable():
    def rows(namespace, group, count):
        params = faces.sample_identities(0, namespace, group, count)
        return {tuple(np.round(values, 6)) for values in zip(*(params[name] for name in faces.IDENTITY_RANGES))}

    client0, client1 = rows(faces.CLIENT, 0, 20), rows(faces.CLIENT, 1, 20)
    public, unseen = rows(faces.PUBLIC, 0, 50), rows(faces.UNSEEN, 0, 50)
    sets = [client0, client1, public, unseen]
    assert all(len(s) in (20, 50) for s in sets)
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            assert not a & b
    # Identity k is the same whatever the batch it is drawn in.
    assert rows(faces.PUBLIC, 0, 10) <= public


def test_images_vary_within_an_identity_and_cameras_differ_between_clients():
    samples = faces.client_faces(0, 0, 2, 6, 32, 1.0)
    first_identity = samples.images[:6].astype(float)
    assert np.abs(first_identity - first_identity.mean(0)).mean() > 5  # pose, light, expression, ...
    neutral = [faces.client_camera(0, client, 0.0) for client in (0, 1)]
    styled = [faces.client_camera(0, client, 1.0) for client in (0, 1)]
    assert neutral[0]["gamma"] == neutral[1]["gamma"] == 1.0
    assert styled[0]["gamma"] != styled[1]["gamma"]


def test_face_task_splits_identities_into_train_and_test():
    cfg = parse_config(
        {"test-fraction": 0.25, "face.identities-min": 3, "face.identities-max": 5, "face.images-per-identity": 8},
        [FaceSettings],
    )
    data = FaceTask(cfg).client_data(2)
    train_ids, test_ids = data.train[1].numpy(), data.test[1].numpy()
    count = len(np.unique(train_ids))
    assert 3 <= count <= 5 and set(test_ids) == set(train_ids)
    assert np.bincount(test_ids).tolist() == [2] * count and np.bincount(train_ids).tolist() == [6] * count
    assert tuple(data.train[0].shape[1:]) == (1, 32, 32)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"face.identities-min": 8, "face.identities-max": 4},
            r"'face.identities-max' = 4 is invalid; expected >= face.identities-min = 8",
        ),
        (
            {"face.images-per-identity": 5, "test-fraction": 0.2},
            r"'face.images-per-identity' = 5 and 'test-fraction' = 0.2 give 1 test image",
        ),
        ({"face.image-size": 8}, r"'face.image-size' = 8 is invalid; expected an integer in \[16, 128\]"),
    ],
)
def test_bad_face_settings_name_the_keys(config, message):
    with pytest.raises(ConfigError, match=message):
        FaceTask(parse_config(config, [FaceSettings]))
