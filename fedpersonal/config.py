"""Typed, validated view of Flower's run config: the one place for defaults and config errors.

Every key of ``[tool.flwr.app.config]`` in pyproject.toml is a field of :class:`RunConfig`
(``num-rounds`` <-> ``num_rounds``) with its default, its type and the values it allows.
:func:`parse_config` checks every key and raises :class:`ConfigError` naming the key, the bad
value and what is allowed, before anything trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A run-config key has a bad value, is unknown, or is inconsistent with the federation."""


@dataclass(frozen=True)
class Rule:
    """What a key allows: a predicate on the (type-checked) value and its description."""

    allowed: str
    check: Callable[[Any], bool] = lambda _value: True


def _key(default: Any, allowed: str, check: Callable[[Any], bool] | None = None) -> Any:
    rule = Rule(allowed, check) if check else Rule(allowed)
    return field(default=default, metadata={"rule": rule})


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction(value: float) -> bool:
    return 0 < value <= 1


def _open_fraction(value: float) -> bool:
    return 0 < value < 1


@dataclass(frozen=True)
class RunConfig:
    """All run-config keys of a fedpersonal run, with their defaults (mirrors pyproject.toml)."""

    task: str = _key("gaze", "a registered task name")
    strategy: str = _key("fedavg", "a registered strategy name")
    dataset: str = _key("synthetic", "a dataset name the task supports")
    data_path: str = _key("", "a local path ('' for embedded data)")
    num_clients: int = _key(15, "an integer >= 1 equal to the federation's num-supernodes", _positive)
    num_rounds: int = _key(10, "an integer >= 1", _positive)
    fraction_train: float = _key(1.0, "a number in (0, 1]", _fraction)
    fraction_evaluate: float = _key(1.0, "a number in (0, 1]", _fraction)
    local_epochs: int = _key(2, "an integer >= 1", _positive)
    batch_size: int = _key(16, "an integer >= 1", _positive)
    lr: float = _key(0.03, "a number > 0", _positive)
    momentum: float = _key(0.9, "a number in [0, 1)", lambda v: 0 <= v < 1)
    weight_decay: float = _key(0.0, "a number >= 0", _non_negative)
    grad_clip: float = _key(1.0, "a number >= 0 (max gradient L2 norm; 0: off)", _non_negative)
    samples_per_client: int = _key(600, "an integer >= 2", lambda v: v >= 2)
    test_fraction: float = _key(0.2, "a number in (0, 1)", _open_fraction)
    heterogeneity: float = _key(1.0, "a number >= 0 (0: all users alike)", _non_negative)
    seed: int = _key(0, "an integer >= 0", _non_negative)
    results_dir: str = _key("runs", "a directory path")
    node_wait_s: float = _key(60.0, "a number > 0 (seconds to wait for all clients)", _positive)

    def to_dict(self) -> dict[str, Any]:
        """The config as Flower run-config keys (kebab-case)."""
        return {_flower_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def _flower_key(field_name: str) -> str:
    return field_name.replace("_", "-")


_FIELDS = {_flower_key(f.name): f for f in dataclasses.fields(RunConfig)}


def config_keys() -> list[str]:
    """Every accepted run-config key."""
    return list(_FIELDS)


def _coerce(key: str, value: Any, expected: type) -> Any:
    """Type-check ``value``; ints are accepted where floats are expected, bools never as numbers."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"run config key '{key}' = {value!r} has type {type(value).__name__}; "
        f"expected {expected.__name__}"
    )


def parse_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate Flower's run config (missing keys take their defaults) into a :class:`RunConfig`."""
    unknown = sorted(set(run_config) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown run config key(s) {unknown}; allowed keys: {', '.join(sorted(_FIELDS))}"
        )
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        spec = _FIELDS[key]
        expected = type(spec.default)
        value = _coerce(key, value, expected)
        rule: Rule = spec.metadata["rule"]
        if not rule.check(value):
            raise ConfigError(f"run config key '{key}' = {value!r} is invalid; expected {rule.allowed}")
        values[spec.name] = value
    return RunConfig(**values)


def require_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (for registry names)."""
    options = sorted(choices)
    if value not in options:
        raise ConfigError(f"run config key '{key}' = {value!r} is unknown; choose one of {options}")
