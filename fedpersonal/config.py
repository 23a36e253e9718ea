"""Typed, validated view of Flower's run config: the one place for defaults and config errors.

Every top-level key of ``[tool.flwr.app.config]`` in pyproject.toml is a field of
:class:`RunConfig` (``num-rounds`` <-> ``num_rounds``) with its default, its type and the values
it allows. Task- and algorithm-specific keys live in sections: the TOML table
``[tool.flwr.app.config.fedadam]`` becomes Flower keys ``fedadam.<key>``, parsed into the section's
own frozen dataclass (declared with :func:`setting` fields, exactly like :class:`RunConfig`, and
naming its section in the class variable ``SECTION``) and read with ``cfg.section(FedAdamSettings)``.
:func:`parse_config` checks every key and raises :class:`ConfigError` naming the key, the bad
value and what is allowed, before anything trains.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A run-config key has a bad value, is unknown, or is inconsistent with the federation."""


Section = TypeVar("Section")


@dataclass(frozen=True)
class Rule:
    """What a key allows: a predicate on the (type-checked) value and its description."""

    allowed: str
    check: Callable[[Any], bool] = lambda _value: True


def setting(default: Any, allowed: str, check: Callable[[Any], bool] | None = None) -> Any:
    """A config field: its default, what it allows (for errors) and the check of a value."""
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


DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")  # run-config key 'device' (fedpersonal.device resolves it)


def _device_name(value: str) -> bool:
    return DEVICE_NAMES.fullmatch(value) is not None


@dataclass(frozen=True)
class RunConfig:
    """All run-config keys of a fedpersonal run, with their defaults (mirrors pyproject.toml)."""

    task: str = setting("gaze", "a registered task name")
    strategy: str = setting("fedavg", "a registered strategy name")
    dataset: str = setting("synthetic", "a dataset name the task supports")
    data_path: str = setting("", "a local path ('' for embedded data)")
    num_clients: int = setting(15, "an integer >= 1 equal to the federation's num-supernodes", _positive)
    num_rounds: int = setting(10, "an integer in [1, 1000000]", lambda v: 1 <= v <= 1_000_000)
    fraction_train: float = setting(1.0, "a number in (0, 1]", _fraction)
    fraction_evaluate: float = setting(1.0, "a number in (0, 1]", _fraction)
    local_epochs: int = setting(2, "an integer in [1, 10000]", lambda v: 1 <= v <= 10_000)
    batch_size: int = setting(16, "an integer in [1, 1000000]", lambda v: 1 <= v <= 1_000_000)
    lr: float = setting(0.03, "a number in (0, 10]", lambda v: 0 < v <= 10)
    momentum: float = setting(0.9, "a number in [0, 1)", lambda v: 0 <= v < 1)
    weight_decay: float = setting(0.0, "a number in [0, 1]", lambda v: 0 <= v <= 1)
    grad_clip: float = setting(1.0, "a number >= 0 (max gradient L2 norm; 0: off)", _non_negative)
    samples_per_client: int = setting(600, "an integer in [2, 100000]", lambda v: 2 <= v <= 100_000)
    test_fraction: float = setting(0.2, "a number in (0, 1)", _open_fraction)
    heterogeneity: float = setting(1.0, "a number in [0, 10] (0: all users alike)", lambda v: 0 <= v <= 10)
    seed: int = setting(0, "an integer >= 0", _non_negative)
    results_dir: str = setting("runs", "a directory path")
    node_wait_s: float = setting(60.0, "a number > 0 (seconds to wait for all clients)", _positive)
    round_timeout_s: float = setting(3600.0, "a number > 0 (seconds a round waits for replies)", _positive)
    min_train_replies: int = setting(
        1, "an integer >= 1 (fewer good replies: the round keeps the old model)", _positive
    )
    resume: str = setting("", "'' (a new run) or the path of a run directory to continue")
    device: str = setting(
        "auto", "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' (GPU N)", _device_name
    )
    client_state: str = setting(
        "auto",
        "'auto' (on disk above 1,000 clients), 'memory' or 'disk' (where personal state waits between calls)",
        lambda v: v in ("auto", "memory", "disk"),
    )
    sections: dict[str, Any] = field(default_factory=dict, metadata={"section": True})

    def section(self, cls: type[Section]) -> Section:
        """The parsed settings of section ``cls.SECTION``, as a ``cls``; its defaults when the
        config was built without that section (e.g. ``RunConfig()`` in code)."""
        name = section_name(cls)
        value = self.sections.get(name)
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise TypeError(f"section '{name}' was parsed as {type(value).__name__}, not {cls.__name__}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The config as flat Flower run-config keys (kebab-case, ``section.key``)."""
        flat = settings_dict(self)
        for name, values in sorted(self.sections.items()):
            flat.update({f"{name}.{key}": value for key, value in settings_dict(values).items()})
        return flat


def section_name(cls: type) -> str:
    """The run-config section a settings dataclass declares in its ``SECTION`` class variable."""
    name = getattr(cls, "SECTION", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"settings class {cls.__name__} declares no SECTION name")
    return name


def _flower_key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _settings_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {_flower_key(f.name): f for f in dataclasses.fields(cls) if "rule" in f.metadata}


def settings_dict(values: Any) -> dict[str, Any]:
    """A settings dataclass instance as {flower-key: value}."""
    return {key: getattr(values, f.name) for key, f in _settings_fields(type(values)).items()}


def config_keys() -> list[str]:
    """Every accepted top-level run-config key."""
    return list(_settings_fields(RunConfig))


def _coerce(key: str, value: Any, expected: type) -> Any:
    """Type-check ``value``; ints are accepted where floats are expected, bools never as numbers."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"run config key '{key}' = {value!r} has type {type(value).__name__}; expected {expected.__name__}"
    )


def parse_settings(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Validate ``values`` (keys without ``prefix``) into the settings dataclass ``cls``."""
    fields = _settings_fields(cls)
    unknown = sorted(f"{prefix}{key}" for key in set(values) - set(fields))
    if unknown:
        allowed = ", ".join(f"{prefix}{key}" for key in sorted(fields))
        raise ConfigError(f"unknown run config key(s) {unknown}; allowed keys: {allowed}")
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        spec = fields[key]
        value = _coerce(f"{prefix}{key}", value, type(spec.default))
        rule: Rule = spec.metadata["rule"]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"run config key '{prefix}{key}' = {value!r} is invalid; expected a finite number: {rule.allowed}"
            )
        if not rule.check(value):
            raise ConfigError(f"run config key '{prefix}{key}' = {value!r} is invalid; expected {rule.allowed}")
        parsed[spec.name] = value
    return cls(**parsed)


def parse_config(run_config: Mapping[str, Any], sections: Iterable[type] = ()) -> RunConfig:
    """Validate Flower's run config (missing keys take their defaults) into a :class:`RunConfig`.

    ``sections`` are the settings dataclasses of every section the run may use; each is parsed
    (defaults where absent), and a key of any other section is an error naming the known ones.
    """
    known = {section_name(cls): cls for cls in sections}
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {name: {} for name in known}
    for key, value in run_config.items():
        name, dot, rest = key.partition(".")
        if not dot:
            top[key] = value
        elif name in known:
            grouped[name][rest] = value
        else:
            raise ConfigError(
                f"run config key '{key}' belongs to unknown section '{name}'; known sections: {sorted(known)}"
            )
    cfg: RunConfig = parse_settings(RunConfig, top)
    parsed = {name: parse_settings(known[name], grouped[name], f"{name}.") for name in known}
    from fedpersonal.device import resolve_device  # imports torch, and this module

    resolve_device(cfg)  # a GPU the machine does not have is a config error here, before anything trains
    return dataclasses.replace(cfg, sections=parsed)


def require_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (for registry names)."""
    options = sorted(choices)
    if value not in options:
        raise ConfigError(f"run config key '{key}' = {value!r} is unknown; choose one of {options}")
