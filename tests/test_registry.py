"""The algorithm registry: every entry is complete, configured in pyproject.toml, and runs."""

from pathlib import Path

import pytest
import tomllib
from flwr.common.config import flatten_dict
from flwr.serverapp.strategy import Strategy
from small_configs import PAIRS, small_run

from clients.base import ClientAlgorithm
from fedpersonal.config import section_name, settings_dict
from fedpersonal.tasks import TASKS
from simulations.inprocess import run_inprocess
from simulations.registry import ALGORITHMS, RUN_SECTIONS, all_sections, build_strategy, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_every_entry_has_both_halves_and_known_tasks():
    for name, entry in ALGORITHMS.items():
        assert entry.name == name
        assert callable(entry.server) and issubclass(entry.client, ClientAlgorithm), name
        assert entry.tasks and set(entry.tasks) <= set(TASKS), name
        assert entry.paper, name
        cfg = parse_run_config(small_run(name, entry.tasks[0]))
        if name != "dua":  # DUA's server trains its experts when built: covered by the runs below
            assert isinstance(build_strategy(cfg), Strategy)


def test_every_section_is_in_pyproject_with_the_validated_defaults():
    declared = flatten_dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    names = {section_name(cls) for cls in all_sections()}
    assert {key.split(".")[0] for key in declared if "." in key} == names
    for cls in all_sections():
        defaults = {f"{section_name(cls)}.{key}": value for key, value in settings_dict(cls()).items()}
        assert {key: declared[key] for key in defaults} == defaults, section_name(cls)
    for entry in ALGORITHMS.values():
        for cls in entry.sections:
            assert cls not in RUN_SECTIONS, f"{entry.name}: section '{section_name(cls)}' is read by every run"


@pytest.mark.parametrize(("name", "task"), PAIRS, ids=[f"{n}-{t}" for n, t in PAIRS])
def test_every_declared_pair_runs_one_round_with_two_clients(name, task, tmp_path, one_thread):
    unseen = {"evaluate.unseen-clients": 1, "evaluate.unseen-steps": 2} if task != "face" else {}
    config = {**small_run(name, task), "results-dir": str(tmp_path), **unseen}
    run_dir, _ = run_inprocess(config)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert [row["round"] for row in rounds] == [0, 1]
    assert rounds[1]["failures"] == 0 and not rounds[1]["skipped"]
    errors = [row["error"] for row in run_dir.read_rows("clients.jsonl") if "error" in row]
    assert not errors
    metric = TASKS[task].metric
    assert isinstance(rounds[1][f"personalized-{metric}"], float)
    views = run_dir.read_json("summary.json")["views"]
    assert set(views) >= {"personalized"} | ({"unseen"} if unseen else set())
    # global metrics exactly when the server holds the whole model (no personal parameters)
    assert (f"global-{metric}" in rounds[1]) == ("global" in views)
