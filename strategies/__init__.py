"""Server strategies by name; each module's ``build(cfg)`` returns a Flower Strategy."""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import Strategy

from fedpersonal.config import RunConfig, require_choice
from strategies import dua, face, fedavg, fedfr, fedopt

STRATEGIES: dict[str, Callable[[RunConfig], Strategy]] = {"fedavg": fedavg.build, "fedper": fedavg.build, **fedopt.BUILDERS, "dua": dua.build,
    "fedfr": fedfr.build, "face-fedavg": face.build_fedavg, "face-finetune": face.build_fedavg, "face-local": face.build_local}
# Run-config sections the server half of an algorithm reads: name -> settings dataclass.
CONFIG_SECTIONS: dict[str, type] = {**fedopt.SECTIONS, "dua": dua.DUASettings}


def build_strategy(cfg: RunConfig) -> Strategy:
    """The strategy named by run-config key ``strategy``."""
    require_choice("strategy", cfg.strategy, STRATEGIES)
    return STRATEGIES[cfg.strategy](cfg)


__all__ = ["CONFIG_SECTIONS", "STRATEGIES", "build_strategy"]
