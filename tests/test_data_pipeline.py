"""The cache, the stats command, and real data through the gaze task and a whole run."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from real_data_files import private_cache, write_cifar10, write_femnist, write_mpiifacegaze, write_mpiigaze  # noqa: F401

from fedpersonal.data import cache
from fedpersonal.data.__main__ import main as data_cli
from fedpersonal.data.containers import ImageSet
from fedpersonal.data.errors import DataError
from fedpersonal.data.real import forget_loaded

ROOT = Path(__file__).resolve().parents[1]


def test_cache_decodes_once_memory_maps_and_invalidates_on_change(tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    (source / "a.bin").write_bytes(b"1234")
    calls = []

    def build():
        calls.append(1)
        return ImageSet(np.full((3, 2, 2), len(calls), np.uint8), np.arange(3), ("x", "y", "z"))

    first = cache.cached("toy", source, {"size": 2}, ImageSet, build)
    second = cache.cached("toy", source, {"size": 2}, ImageSet, build)
    assert len(calls) == 1 and isinstance(second.images, np.memmap) and second.class_names == ("x", "y", "z")
    assert np.array_equal(first.images, second.images) and second.groups is None
    cache.cached("toy", source, {"size": 3}, ImageSet, build)  # other options: another entry
    assert len(calls) == 2
    (source / "a.bin").write_bytes(b"12345")  # a changed file: the old entry is never read
    assert cache.cached("toy", source, {"size": 2}, ImageSet, build).images[0, 0, 0] == 3
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 3 and all(name.startswith("toy-") for name in entries)


def test_stats_prints_sizes_and_histograms_and_saves_a_plot(tmp_path, capsys):
    write_cifar10(tmp_path, per_batch=40)
    plot = tmp_path / "plot.png"
    status = data_cli(
        [
            "stats",
            "--dataset",
            "cifar10",
            "--path",
            str(tmp_path),
            "--partition",
            "pathological",
            "--classes-per-client",
            "2",
            "--num-clients",
            "4",
            "--plot",
            str(plot),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and plot.stat().st_size > 1000
    assert "dataset cifar10" in out and "200 samples; partition pathological, 4 clients" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4 and all(len(row[5:]) <= 2 for row in rows)  # at most 2 "class:count" entries
    assert all(int(row[1]) + int(row[2]) == int(row[3]) for row in rows)


def test_stats_plot_goes_to_the_results_directory_never_the_working_directory(tmp_path, monkeypatch):
    write_femnist(tmp_path / "femnist")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert (
        data_cli(
            [
                "stats",
                "--dataset",
                "femnist",
                "--path",
                str(tmp_path / "femnist"),
                "--results-dir",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    assert (tmp_path / "results" / "data-stats" / "partition-femnist-natural.png").stat().st_size > 1000
    assert not any((tmp_path / "cwd").iterdir())


def test_stats_natural_clients_default_to_every_writer(tmp_path, capsys):
    write_femnist(tmp_path / "femnist")
    assert (
        data_cli(
            ["stats", "--dataset", "femnist", "--path", str(tmp_path / "femnist"), "--plot", str(tmp_path / "p.png")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "partition natural, 3 clients" in out and "f_c" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"], "'dataset' = 'imagenet' is unknown"),
        (["--dataset", "cifar10", "--path", "/no/such/dir"], "'data-path' = '/no/such/dir' does not exist"),
        (["--dataset", "digits", "--partition", "dirichlet", "--alpha", "0"], "'partition.alpha' = 0.0 is invalid"),
        (
            ["--dataset", "digits", "--partition", "iid", "--num-clients", "5000"],
            "'num-clients' = 5000 but dataset 'digits' has 1797 samples",
        ),
        (["--dataset", "digits", "--partition", "natural"], "'natural' needs per-sample users"),
    ],
)
def test_stats_bad_input_exits_non_zero_with_the_reason(args, message, capsys):
    assert data_cli(["stats", *args]) == 2
    assert message in capsys.readouterr().err


def test_stats_command_line_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fedpersonal.data", "stats", "--dataset", "cifar10", "--path", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"FEDPERSONAL_CACHE_DIR": str(tmp_path / "c"), "PATH": ""},
    )
    assert result.returncode == 2 and "missing file" in result.stderr and "data_batch_1" in result.stderr


def test_gaze_task_reads_mpiigaze_participants_as_clients(tmp_path, monkeypatch):
    from fedpersonal.config import parse_config
    from fedpersonal.data import federated as federated_module
    from fedpersonal.data.real import mpiigaze
    from fedpersonal.tasks import TASK_SECTIONS, get_task

    write_mpiigaze(tmp_path, participants=3, days=2, per_day=5)
    cfg = parse_config({"dataset": "mpiigaze", "data-path": str(tmp_path), "num-clients": 2}, TASK_SECTIONS)
    task = get_task("gaze", cfg)
    task.prepare_data()
    # A client process finds the partition on disk: nothing is decoded or partitioned again.
    monkeypatch.setattr(federated_module, "make_partition", None)
    monkeypatch.setattr(mpiigaze, "read_day", None)
    forget_loaded()
    federated_module.federated.cache_clear()
    data = task.client_data(1)
    assert data.num_train == 16 and data.num_test == 4 and data.train[0].shape[1:] == (1, 36, 60)
    unseen = task.unseen_user_data(0)  # participant p02 never trains
    assert unseen.num_train + unseen.num_test == 20
    monkeypatch.undo()
    subset = parse_config({**cfg.to_dict(), "gaze.evaluation-subset": True}, TASK_SECTIONS)
    subset_data = get_task("gaze", subset).client_data(0)
    assert subset_data.num_train + subset_data.num_test == 4


def test_gaze_task_reads_mpiifacegaze_at_the_lenet_size(tmp_path):
    pytest.importorskip("h5py")
    from fedpersonal.config import parse_config
    from fedpersonal.tasks import TASK_SECTIONS, get_task

    write_mpiifacegaze(tmp_path, participants=2, count=5)
    cfg = parse_config({"dataset": "mpiifacegaze", "data-path": str(tmp_path), "num-clients": 2}, TASK_SECTIONS)
    data = get_task("gaze", cfg).client_data(0)
    assert data.train[0].shape == (4, 1, 36, 60) and data.test[0].shape == (1, 1, 36, 60)


def test_a_run_on_mpiigaze_trains_and_bad_data_stops_it_before_training(tmp_path):
    from simulations.inprocess import run_inprocess

    write_mpiigaze(tmp_path / "mpii", participants=2, days=2, per_day=6)
    config = {
        "dataset": "mpiigaze",
        "data-path": str(tmp_path / "mpii"),
        "num-clients": 2,
        "num-rounds": 1,
        "batch-size": 8,
        "local-epochs": 1,
        "results-dir": str(tmp_path / "runs"),
        "node-wait-s": 1.0,
    }
    run_dir, _ = run_inprocess(config)
    rows = run_dir.read_rows("clients.jsonl")
    assert [row["num-examples"] for row in rows if row["phase"] == "train"] == [19, 19]
    assert not any("error" in row for row in rows)

    day = tmp_path / "mpii" / "Data" / "Normalized" / "p01" / "day02.mat"
    day.write_bytes(day.read_bytes()[:300])
    grids = []
    with pytest.raises(DataError, match=r"cannot read '.*p01/day02.mat'"):
        run_inprocess({**config, "results-dir": str(tmp_path / "runs2")}, on_grid=grids.append, record=True)
    assert grids[0].sent == [] and not (tmp_path / "runs2").exists()


def test_classify_on_partitioned_cifar10_and_femnist_writers(tmp_path):
    from fedpersonal.config import ConfigError
    from simulations.inprocess import run_inprocess

    write_cifar10(tmp_path / "cifar", per_batch=24)
    common = {
        "task": "classify",
        "classify.user-shift": "none",
        "num-rounds": 1,
        "batch-size": 16,
        "local-epochs": 1,
        "results-dir": str(tmp_path / "runs"),
        "node-wait-s": 1.0,
    }
    cifar = {
        **common,
        "dataset": "cifar10",
        "data-path": str(tmp_path / "cifar"),
        "num-clients": 3,
        "partition.name": "dirichlet",
        "partition.alpha": 0.5,
        "partition.min-size": 5,
    }
    run_dir, grid = run_inprocess(cifar, record=True)
    rows = run_dir.read_rows("clients.jsonl")
    train = [row["num-examples"] for row in rows if row["phase"] == "train"]
    test = [row["num-examples"] for row in rows if row["phase"] == "evaluate" and row["round"] == 1]
    assert len(train) == 3 and sum(train) + sum(test) == 120  # the 5 training batches, all in clients
    assert not any("error" in row for row in rows)
    assert grid.sent[0].content.array_records["arrays"].to_torch_state_dict()["body.0.weight"].shape[1] == 3

    from fedpersonal.config import parse_config
    from fedpersonal.tasks import TASK_SECTIONS, get_task

    write_femnist(tmp_path / "femnist")
    femnist = parse_config(
        {**common, "dataset": "femnist", "data-path": str(tmp_path / "femnist"), "num-clients": 3}, TASK_SECTIONS
    )
    task = get_task("classify", femnist)
    task.prepare_data()
    writers = [task.client_data(client) for client in range(3)]
    assert [data.num_train for data in writers] == [2, 3, 4]  # writers of 3, 4 and 5 samples
    assert writers[2].train[0].shape[1:] == (1, 28, 28) and task.build_model()(writers[2].train[0].float()).shape == (
        4,
        62,
    )
    with pytest.raises(ConfigError, match=r"'classify.user-shift' = 'corruption' is invalid with dataset 'cifar10'"):
        run_inprocess({**cifar, "classify.user-shift": "corruption"})
