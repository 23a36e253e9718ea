"""Real-dataset loaders on tiny format-faithful fixtures, and every bad-input case."""

import pickle

import numpy as np
import pytest
from real_data_files import (  # noqa: F401 (private_cache is an autouse fixture)
    private_cache,
    write_cifar10,
    write_femnist,
    write_imagefolder,
    write_lfw,
    write_mpiifacegaze,
    write_mpiigaze,
)

from fedpersonal.config import ConfigError
from fedpersonal.data.errors import DataError
from fedpersonal.data.real import load_dataset
from fedpersonal.data.real.cifar10 import load_cifar10
from fedpersonal.data.real.femnist import load_femnist
from fedpersonal.data.real.imagefolder import load_imagefolder
from fedpersonal.data.real.lfw import load_lfw
from fedpersonal.data.real.mpiifacegaze import load_mpiifacegaze
from fedpersonal.data.real.mpiigaze import load_mpiigaze


def test_mpiigaze_both_eyes_right_mirrored_with_yaw_negated(tmp_path):
    labels = write_mpiigaze(tmp_path, participants=2, days=2, per_day=3)
    data = load_mpiigaze(tmp_path)
    assert len(data) == 2 * 2 * 3 * 2 and data.images.shape[1:] == (36, 60)
    assert data.group_names == ("p00", "p01") and np.bincount(data.groups).tolist() == [12, 12]
    # Order: participant, day, left eyes then right eyes.
    left, right = slice(0, 3), slice(3, 6)
    pitch, yaw, head_pitch, head_yaw = np.array(labels[(0, 1, "left")]).T
    np.testing.assert_allclose(data.gaze[left], np.stack([pitch, yaw], 1), atol=1e-6)
    np.testing.assert_allclose(data.pose[left], np.stack([head_pitch, head_yaw], 1), atol=1e-6)
    pitch, yaw, head_pitch, head_yaw = np.array(labels[(0, 1, "right")]).T
    np.testing.assert_allclose(data.gaze[right], np.stack([pitch, -yaw], 1), atol=1e-6)
    np.testing.assert_allclose(data.pose[right], np.stack([head_pitch, -head_yaw], 1), atol=1e-6)
    # The fixture's eye is dark on the left, bright on the right with a mark at (0, 0).
    assert data.images[0, 10, 5] == 0 and data.images[0, 10, 55] == 200 and data.images[0, 0, 0] == 10
    assert data.images[3, 10, 5] == 200 and data.images[3, 10, 55] == 0 and data.images[3, 0, 59] == 10


def test_mpiigaze_evaluation_subset_takes_the_listed_samples(tmp_path):
    labels = write_mpiigaze(tmp_path, participants=2, days=2, per_day=3)
    data = load_mpiigaze(tmp_path, evaluation_subset=True)
    assert len(data) == 2 * 2 * 2  # per participant and day: first left eye, last right eye
    pitch, yaw = labels[(1, 2, "right")][-1][:2]
    np.testing.assert_allclose(data.gaze[-1], [pitch, -yaw], atol=1e-6)
    np.testing.assert_allclose(data.gaze[0], labels[(0, 1, "left")][0][:2], atol=1e-6)


def test_mpiigaze_bad_inputs_name_the_file(tmp_path):
    write_mpiigaze(tmp_path, participants=1, days=2, per_day=2)
    day = tmp_path / "Data" / "Normalized" / "p00" / "day02.mat"
    day.write_bytes(day.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match=r"cannot read '.*day02.mat'.*MPIIGaze root"):
        load_mpiigaze(tmp_path)
    import scipy.io

    scipy.io.savemat(
        day,
        {
            "data": {
                "left": {"image": np.zeros((1, 36, 60), np.uint8), "gaze": np.ones((1, 3)), "pose": np.ones((1, 3))}
            }
        },
    )
    with pytest.raises(DataError, match=r"'.*day02.mat' has no field 'data.right'"):
        load_mpiigaze(tmp_path)
    with pytest.raises(DataError, match=r"no participant directories pXX found under '.*empty'"):
        (tmp_path / "empty").mkdir()
        load_mpiigaze(tmp_path / "empty")


def test_mpiigaze_missing_evaluation_list_is_named(tmp_path):
    write_mpiigaze(tmp_path, participants=1, days=1, per_day=2)
    (tmp_path / "Evaluation Subset" / "sample list for eye image" / "p00.txt").unlink()
    with pytest.raises(DataError, match=r"missing file '.*p00.txt'; expected the MPIIGaze evaluation list of p00"):
        load_mpiigaze(tmp_path, evaluation_subset=True)


def test_mpiifacegaze_hdf5_faces_resized_rgb_and_labels(tmp_path):
    pytest.importorskip("h5py")
    write_mpiifacegaze(tmp_path, participants=2, count=5)
    data = load_mpiifacegaze(tmp_path, size=(6, 10))
    assert data.images.shape == (10, 6, 10, 3) and data.group_names == ("p00", "p01")
    assert (data.images[..., 2] == 255).all() and (data.images[..., 0] == 0).all()  # BGR -> RGB: blue
    np.testing.assert_allclose(data.gaze[5:, 0], 0.1) and np.testing.assert_allclose(
        data.gaze[:5, 1], np.arange(5) * 0.01, atol=1e-7
    )
    np.testing.assert_allclose(data.pose, np.tile([-0.05, 0.2], (10, 1)))
    gray = load_mpiifacegaze(tmp_path, size=(6, 10), gray=True)
    assert gray.images.shape == (10, 6, 10)
    (tmp_path / "p01.mat").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match=r"cannot read '.*p01.mat'"):
        load_mpiifacegaze(tmp_path)


def test_mpiifacegaze_without_h5py_says_how_to_install(tmp_path, monkeypatch):
    import sys

    (tmp_path / "p00.mat").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match=r"needs h5py.*pip install -e \"\.\[mpiifacegaze\]\""):
        load_mpiifacegaze(tmp_path)


def test_lfw_pairs_folds_and_images(tmp_path):
    lines = write_lfw(tmp_path, folds=2, per_half=2)
    data = load_lfw(tmp_path, size=(8, 8))
    assert data.pairs.shape == (8, 2) and data.same.tolist() == [True, True, False, False] * 2
    assert data.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.images.shape[1:] == (8, 8, 3)
    names = [data.class_names[label] for label in data.labels[data.pairs[2]]]
    assert names == [lines[3].split()[0], lines[3].split()[2]]
    assert all(data.labels[a] == data.labels[b] for a, b in data.pairs[data.same])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: ["ten 300"] + lines[1:], r"line 1: \['ten', '300'\]; expected '<folds> <pairs per half>'"),
        (lambda lines: lines[:-1], r"has 7 pair lines; expected 2 folds x 2 x 2 = 8"),
        (
            lambda lines: lines[:1] + ["Person_A\t1"] + lines[2:],
            r"line 2: 'Person_A 1'; expected a matched 'name n1 n2' pair",
        ),
        (
            lambda lines: lines[:1] + ["Person_Z\t1\t2"] + lines[2:],
            r"line 2 names '.*Person_Z_0001.jpg', which does not exist",
        ),
    ],
)
def test_lfw_bad_pairs_file(tmp_path, edit, message):
    lines = write_lfw(tmp_path, folds=2, per_half=2)
    (tmp_path / "pairs.txt").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(DataError, match=message):
        load_lfw(tmp_path)


def test_lfw_corrupted_image_and_missing_pairs(tmp_path):
    write_lfw(tmp_path)
    (tmp_path / "lfw" / "Person_A" / "Person_A_0001.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=r"cannot decode image '.*Person_A_0001.jpg'"):
        load_lfw(tmp_path)
    (tmp_path / "pairs.txt").unlink()
    with pytest.raises(DataError, match=r"missing file '.*pairs.txt'; expected a directory holding pairs.txt"):
        load_lfw(tmp_path)


def test_imagefolder_labels_groups_and_layout_errors(tmp_path):
    write_imagefolder(tmp_path / "casia", classes=3, per_class=2)
    (tmp_path / "casia" / "id001" / "notes.txt").write_text("not an image")
    data = load_imagefolder(tmp_path / "casia", size=(4, 4))
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2] and data.class_names == ("id000", "id001", "id002")
    assert data.groups.tolist() == data.labels.tolist() and data.images.shape == (6, 4, 4, 3)
    (tmp_path / "casia" / "id003").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['id003'\] .* hold no images"):
        load_imagefolder(tmp_path / "casia")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"'.*flat' has no class sub-directories; expected one sub-directory per class"):
        load_imagefolder(tmp_path / "flat")


def test_cifar10_planes_labels_and_splits(tmp_path):
    write_cifar10(tmp_path, per_batch=20)
    train = load_cifar10(tmp_path)
    assert train.images.shape == (100, 32, 32, 3) and train.class_names[1] == "automobile"
    assert (train.images[:, 5, 5] == [10, 20, 30]).all()  # R, G, B planes
    assert train.images[27, 0, 0, 0] == 27 and train.labels[27] == 7
    assert len(load_cifar10(tmp_path, split="test")) == 20 and len(load_cifar10(tmp_path, split="all")) == 120


def test_cifar10_truncated_missing_and_malformed(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=10)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cannot unpickle '.*data_batch_3'"):
        load_cifar10(tmp_path)
    batch.unlink()
    with pytest.raises(DataError, match=r"missing file '.*data_batch_3'; expected the CIFAR-10 python directory"):
        load_cifar10(tmp_path)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3': data has shape \(10, 100\).*expected uint8 \(N, 3072\)"):
        load_cifar10(tmp_path)


def test_femnist_writers_merged_across_files(tmp_path):
    counts = write_femnist(tmp_path / "femnist")
    data = load_femnist(tmp_path / "femnist")
    assert data.group_names == ("f_a", "f_b", "f_c") and np.bincount(data.groups).tolist() == list(counts.values())
    assert data.images.shape == (12, 28, 28) and data.images.dtype == np.uint8
    assert sorted(data.labels[data.groups == 1].tolist()) == [10, 11, 20, 21]
    assert data.class_names[10] == "A" and data.class_names[61] == "z"


def test_femnist_bad_json(tmp_path):
    import json

    write_femnist(tmp_path)
    path = tmp_path / "all_data_1.json"
    content = json.loads(path.read_text())
    content["num_samples"] = [2, 6]
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"all_data_1.json': user 'f_c' has x \(5, 784\).*expected \(6, 784\)"):
        load_femnist(tmp_path)
    path.write_text(json.dumps({"users": []}))
    with pytest.raises(DataError, match=r"lacks key\(s\) \['num_samples', 'user_data'\]"):
        load_femnist(tmp_path)
    path.write_text('{"users": [')
    with pytest.raises(DataError, match=r"cannot parse '.*all_data_1.json'"):
        load_femnist(tmp_path)


def test_load_dataset_checks_name_and_path(tmp_path):
    digits = load_dataset("digits")
    assert digits.images.shape == (1797, 8, 8) and digits.images.max() == 255 and digits.groups is None
    with pytest.raises(ConfigError, match=r"'dataset' = 'imagenet' is unknown; choose one of \['cifar10'"):
        load_dataset("imagenet", str(tmp_path))
    with pytest.raises(
        DataError, match=r"'data-path' is empty; dataset 'cifar10' needs the local path of the CIFAR-10"
    ):
        load_dataset("cifar10", "")
    with pytest.raises(DataError, match=r"'data-path' = '.*nowhere' does not exist; dataset 'lfw' expects"):
        load_dataset("lfw", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"dataset 'digits' is bundled; expected ''"):
        load_dataset("digits", str(tmp_path))
