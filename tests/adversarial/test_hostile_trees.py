"""The data command survives hostile trees: every case is a DataError naming the file (exit
status 2, one line), never a traceback, and nothing outside the dataset root is read."""

import json
import os

import pytest
from real_data_files import private_cache, write_femnist, write_imagefolder, write_lfw  # noqa: F401

from fedpersonal.data.__main__ import main as data_cli
from fedpersonal.data.errors import DataError
from fedpersonal.data.real import femnist, load_dataset


def stats(dataset, path, tmp_path):
    return data_cli(["stats", "--dataset", dataset, "--path", str(path), "--plot", str(tmp_path / "p.png")])


def assert_refused(capsys, status, *fragments):
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("dataset", ["femnist", "imagefolder"])
def test_a_symlink_loop_is_a_data_error(dataset, tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    (write_femnist if dataset == "femnist" else write_imagefolder)(root)
    folder = root if dataset == "femnist" else next(p for p in root.iterdir() if p.is_dir())
    loop = folder / ("loop.json" if dataset == "femnist" else "loop.jpg")
    loop.symlink_to(loop)  # a link to itself
    assert_refused(capsys, stats(dataset, root, tmp_path), str(loop), "broken or looping symbolic link")


@pytest.mark.parametrize("dataset", ["femnist", "imagefolder"])
def test_a_directory_link_back_to_the_root_is_not_followed(dataset, tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    (write_femnist if dataset == "femnist" else write_imagefolder)(root)
    (root / "cycle").symlink_to(root, target_is_directory=True)
    assert_refused(capsys, stats(dataset, root, tmp_path), str(root / "cycle"), "symbolic link")


def test_a_dangling_symlink_is_a_data_error(tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    write_femnist(root)
    (root / "gone.json").symlink_to(tmp_path / "missing.json")
    assert_refused(capsys, stats("femnist", root, tmp_path), str(root / "gone.json"))


def test_a_directory_named_like_a_json_file_is_a_data_error(tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    write_femnist(root)
    (root / "a.json").mkdir()
    assert_refused(capsys, stats("femnist", root, tmp_path), str(root / "a.json"), "not a regular file")


def test_femnist_rows_of_unequal_length_are_a_data_error(tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    root.mkdir()
    rows = {"users": ["w"], "num_samples": [2], "user_data": {"w": {"x": [[0.0] * 784, [0.0] * 5], "y": [1, 2]}}}
    (root / "ragged.json").write_text(json.dumps(rows))
    assert_refused(capsys, stats("femnist", root, tmp_path), str(root / "ragged.json"), "user 'w'")


def test_femnist_files_too_large_to_parse_in_memory_are_refused(tmp_path, monkeypatch, private_cache):  # noqa: F811
    root = tmp_path / "data"
    write_femnist(root)
    monkeypatch.setattr(femnist, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError, match=r"bytes; FEMNIST json is parsed in memory"):
        load_dataset("femnist", str(root))


@pytest.mark.parametrize(
    ("line", "why"),
    [("Aaron_Eckhart\t1\t\u00b2", "pair"), ("/etc/passwd\t1\t2", "name"), ("..\t1\t2", "name")],
)
def test_hostile_pairs_lines_are_data_errors(line, why, tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "lfw"
    write_lfw(root, folds=1, per_half=1)
    lines = (root / "pairs.txt").read_text().splitlines()
    lines[1] = line
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"pairs.txt' line 2.*{why}"):
        load_dataset("lfw", str(root))


def test_the_layout_is_checked_before_the_tree_is_walked(tmp_path, capsys, monkeypatch):
    from fedpersonal.data import cache

    walked = []
    monkeypatch.setattr(cache, "file_fingerprint", lambda path: walked.append(path) or [])
    assert_refused(capsys, stats("mpiigaze", "/", tmp_path), "no participant directories pXX found under '/'")
    assert_refused(capsys, stats("femnist", "/", tmp_path), "expected")
    assert walked == []  # neither walked the file system


def test_a_symlink_out_of_the_dataset_root_is_not_followed(tmp_path, capsys, private_cache):  # noqa: F811
    root = tmp_path / "data"
    write_imagefolder(root)
    outside = tmp_path / "secret.jpg"
    (root / os.listdir(root)[0] / "x.jpg").symlink_to(outside)
    outside.write_bytes((root / os.listdir(root)[0] / sorted(os.listdir(root / os.listdir(root)[0]))[0]).read_bytes())
    assert_refused(capsys, stats("imagefolder", root, tmp_path), "outside the dataset root")
