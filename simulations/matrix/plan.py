"""What a matrix runs: scenarios x algorithms x seeds, each cell a set of run-config overrides.

A *scenario* is a TOML file of run-config overrides, flat (``num-clients = 8``) or nested
(``[fedadam]`` / ``server-lr = 0.001``), exactly as ``flwr run --run-config file.toml`` accepts;
its label is the file's stem. An *algorithm* is a registered strategy name (label = the name) or a
TOML file of overrides that sets ``strategy`` and its hyperparameters (label = the stem). A cell's
overrides are, later ones winning: scenario, algorithm, ``--set`` pairs, then its seed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from flwr.common.config import flatten_dict

from fedpersonal.config import ConfigError, RunConfig, require_choice

# Keys the runner sets itself for every cell; scenarios, algorithms and --set must not.
RUNNER_KEYS = ("seed", "results-dir", "resume")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Variant:
    """A named set of run-config overrides: one scenario or one algorithm."""

    name: str
    keys: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: a scenario, an algorithm and a seed, with its overrides."""

    scenario: str
    algorithm: str
    seed: int
    keys: Mapping[str, Any]  # run-config overrides, seed included; results-dir and resume excluded

    @property
    def name(self) -> str:
        """The cell's directory name, ``<scenario>__<algorithm>__seed<seed>``."""
        return f"{self.scenario}__{self.algorithm}__seed{self.seed}"


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The flat run-config keys of a TOML file (nested tables become ``table.key``)."""
    path = Path(path)
    try:
        return flatten_dict(tomllib.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"scenario file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise ConfigError(f"scenario file {str(path)!r} is not valid run-config TOML: {error}") from None


def scenario(path: str | Path) -> Variant:
    """The scenario in a TOML file, labelled by the file's stem."""
    return Variant(Path(path).stem, load_overrides(path))


def algorithm(spec: str) -> Variant:
    """A registered strategy name, or a TOML file of overrides (labelled by its stem)."""
    if spec.endswith(".toml"):
        return scenario(spec)
    from simulations.registry import ALGORITHMS

    require_choice("strategy", spec, ALGORITHMS)
    return Variant(spec, {"strategy": spec})


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs with TOML values, as ``flwr run --run-config`` reads them
    (``num-rounds=5 dataset='mpiigaze' fedadam.server-lr=0.01``)."""
    lines = []
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. num-rounds=5")
        lines.append(f"{key.strip()} = {value.strip()}")
    try:
        return flatten_dict(tomllib.loads("\n".join(lines)))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"--set {' '.join(pairs)!r} is not valid: {error}; values are TOML (quote strings: key='text')"
        ) from None


def _check_labels(kind: str, variants: Sequence[Variant]) -> None:
    names = [variant.name for variant in variants]
    bad = [name for name in names if not _LABEL.match(name) or "__" in name]
    if bad:
        raise ConfigError(f"{kind} label(s) {bad} must be letters, digits, '.', '-' or single '_'")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{kind} label(s) {repeated} appear more than once; rename the files")


def _check_runner_keys(where: str, keys: Mapping[str, Any], also: Sequence[str] = ()) -> None:
    owned = sorted(set(keys) & {*RUNNER_KEYS, *also})
    if owned:
        raise ConfigError(
            f"{where} sets {owned}; the matrix sets these itself (seeds with --seeds, the strategy with --strategies, "
            f"directories under --out)"
        )


def plan_cells(
    scenarios: Sequence[Variant],
    algorithms: Sequence[Variant],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
) -> list[Cell]:
    """Every (seed, scenario, algorithm) cell, seeds outermost (so early cells compare every
    algorithm). No scenarios: one ``default`` scenario. No algorithms: each scenario's own
    ``strategy`` (or the default) is its algorithm."""
    overrides = dict(overrides or {})
    scenarios = list(scenarios) or [Variant("default")]
    if not seeds or len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ConfigError(f"seeds {list(seeds)}: expected one or more distinct integers >= 0")
    _check_labels("scenario", scenarios)
    _check_labels("algorithm", algorithms)
    for variant in scenarios:
        _check_runner_keys(f"scenario {variant.name!r}", variant.keys)
    for variant in algorithms:
        _check_runner_keys(f"algorithm {variant.name!r}", variant.keys)
    _check_runner_keys("--set", overrides, also=("strategy",) if algorithms else ())

    cells = []
    for seed in seeds:
        for setting in scenarios:
            for method in algorithms or [Variant(str(setting.keys.get("strategy", RunConfig().strategy)))]:
                keys = {**setting.keys, **method.keys, **overrides, "seed": seed}
                cells.append(Cell(setting.name, method.name, seed, keys))
    return cells
