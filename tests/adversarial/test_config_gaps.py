"""Config validation closes its gaps: every number finite and in a stated range, cross-key rules
checked before training, results-dir checked writable, keys the run never reads reported."""

import math

import pytest
from real_data_files import private_cache, write_mpiigaze  # noqa: F401

from fedpersonal.config import ConfigError
from simulations.inprocess import run_inprocess
from simulations.registry import parse_run_config

SMALL = {"num-clients": 2, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}


@pytest.mark.parametrize(
    ("keys", "bad"),
    [
        ({"lr": math.inf}, "'lr' = inf is invalid; expected a finite number"),
        ({"lr": math.nan}, "'lr' = nan is invalid; expected a finite number"),
        ({"strategy": "fedadam", "fedadam.server-lr": math.inf}, "'fedadam.server-lr' = inf"),
        ({"weight-decay": math.inf}, "'weight-decay' = inf"),
        ({"strategy": "fedopt", "fedopt.options": '{"momentum": 1e309}'}, "'fedopt.options' = .*finite numbers"),
        ({"heterogeneity": 1e308}, r"'heterogeneity' = 1e\+308 is invalid; expected a number in \[0, 10\]"),
        ({"samples-per-client": 10**9}, r"'samples-per-client' = 1000000000 is invalid; expected an integer in"),
        ({"adapt.method": "tent"}, "'adapt.method' = 'tent' needs class probabilities, but task 'gaze'"),
    ],
)
def test_bad_values_stop_before_anything_runs(keys, bad):
    with pytest.raises(ConfigError, match=bad):
        parse_run_config({**SMALL, **keys})


def run_capturing_grid(config):
    grids = []
    with pytest.raises(ConfigError) as error:
        run_inprocess(config, on_grid=grids.append, record=True)
    return str(error.value), grids[0]


def test_an_unwritable_results_dir_stops_the_run_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    message, grid = run_capturing_grid({**SMALL, "results-dir": str(blocker / "runs")})
    assert f"'results-dir' = '{blocker / 'runs'}' is not a writable directory" in message
    assert grid.sent == []  # no client was asked to do anything


def test_a_data_path_with_a_dangling_symlink_is_a_clear_error(tmp_path, private_cache):  # noqa: F811
    write_mpiigaze(tmp_path, participants=2, days=1, per_day=3)
    gone = tmp_path / "Data" / "Normalized" / "p00" / "day09.mat"
    gone.symlink_to(tmp_path / "nowhere.mat")
    message, grid = run_capturing_grid({**SMALL, "dataset": "mpiigaze", "data-path": str(tmp_path)})
    assert f"cannot read '{gone}'" in message and grid.sent == []


def test_keys_the_run_never_reads_are_named_in_a_warning_and_in_config_json(tmp_path, caplog):
    config = {**SMALL, "data-path": "/data/unused", "fedadam.server-lr": 0.5, "face.image-size": 64,
              "results-dir": str(tmp_path)}  # fmt: skip
    run_dir, _ = run_inprocess(config)
    unused = ["data-path", "face.image-size", "fedadam.server-lr"]
    assert run_dir.read_json("config.json")["unused-keys"] == unused
    assert f"run config key(s) {unused} are set but never read by task 'gaze'" in caplog.text
    defaults, _ = run_inprocess({**SMALL, "results-dir": str(tmp_path / "defaults")})
    assert defaults.read_json("config.json")["unused-keys"] == []
