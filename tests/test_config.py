from pathlib import Path

import pytest
import tomllib

from fedpersonal.config import ConfigError, RunConfig, config_keys, parse_config
from fedpersonal.tasks import get_task
from simulations.registry import build_strategy

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_defaults_are_the_config_defaults():
    from flwr.common.config import flatten_dict

    from simulations.registry import parse_run_config

    declared = flatten_dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    defaults = parse_run_config({})  # every section of every registry, at its defaults
    assert declared == defaults.to_dict()
    assert parse_run_config(declared) == defaults
    top_level = {key: value for key, value in declared.items() if "." not in key}
    assert parse_config(top_level) == RunConfig()


def test_every_key_is_accepted_and_types_are_kept():
    cfg = parse_config({"num-rounds": 3, "lr": 1, "fraction-train": 0.5, "strategy": "fedavg"})
    assert cfg.num_rounds == 3 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.fraction_train == 0.5
    assert set(config_keys()) == set(RunConfig().to_dict())


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num-rounds", 0, r"an integer in \[1, 1000000\]"),
        ("num-rounds", -3, r"an integer in \[1, 1000000\]"),
        ("fraction-train", 0.0, r"\(0, 1\]"),
        ("fraction-train", 1.5, r"\(0, 1\]"),
        ("fraction-evaluate", -0.1, r"\(0, 1\]"),
        ("test-fraction", 1.0, r"\(0, 1\)"),
        ("momentum", 1.0, r"\[0, 1\)"),
        ("lr", 0.0, r"\(0, 10\]"),
    ],
)
def test_out_of_range_values_name_key_value_and_allowed(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        parse_config({key: value})
    assert f"'{key}'" in str(error.value) and repr(value) in str(error.value)


def test_wrong_type_names_expected_type():
    with pytest.raises(ConfigError, match=r"'num-rounds' = '3'.*expected int"):
        parse_config({"num-rounds": "3"})
    with pytest.raises(ConfigError, match=r"'num-rounds' = 2.5.*expected int"):
        parse_config({"num-rounds": 2.5})
    with pytest.raises(ConfigError, match=r"'lr' = True.*expected float"):
        parse_config({"lr": True})


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown run config key\(s\) \['num-round'\]; allowed keys: .*num-rounds"):
        parse_config({"num-round": 3})


def test_unknown_strategy_and_task_name_the_choices():
    with pytest.raises(ConfigError, match=r"'strategy' = 'fedbogus' is unknown; choose one of \[.*'fedavg'"):
        build_strategy(parse_config({"strategy": "fedbogus"}))
    with pytest.raises(ConfigError, match=r"'task' = 'speech' is unknown; choose one of \["):
        get_task("speech")
    with pytest.raises(
        ConfigError,
        match=r"'dataset' = 'imagenet' is unknown; choose one of \['mpiifacegaze', 'mpiigaze', 'synthetic'\]",
    ):
        get_task("gaze", parse_config({"dataset": "imagenet"})).client_data(0)


def test_sections_parse_validate_and_flatten():
    from dataclasses import dataclass
    from typing import ClassVar

    from fedpersonal.config import setting

    @dataclass(frozen=True)
    class Demo:
        SECTION: ClassVar[str] = "demo"

        eta: float = setting(0.1, "a number > 0", lambda v: v > 0)
        name: str = setting("adam", "a name")

    cfg = parse_config({"num-rounds": 2, "demo.eta": 0.5}, [Demo])
    assert cfg.section(Demo) == Demo(eta=0.5, name="adam")
    assert cfg.to_dict()["demo.eta"] == 0.5 and cfg.to_dict()["demo.name"] == "adam"
    assert parse_config({}, [Demo]).section(Demo) == Demo()
    assert RunConfig().section(Demo) == Demo()  # built in code without the section: its defaults
    with pytest.raises(ConfigError, match=r"'demo.eta' = -1.0 is invalid; expected a number > 0"):
        parse_config({"demo.eta": -1.0}, [Demo])
    with pytest.raises(ConfigError, match=r"unknown run config key\(s\) \['demo.beta'\]; allowed keys: demo.eta"):
        parse_config({"demo.beta": 1.0}, [Demo])
    with pytest.raises(ConfigError, match=r"'other.x' belongs to unknown section 'other'"):
        parse_config({"other.x": 1})


def test_a_section_class_must_name_its_section():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Nameless:
        pass

    with pytest.raises(TypeError, match="Nameless declares no SECTION"):
        parse_config({}, [Nameless])
