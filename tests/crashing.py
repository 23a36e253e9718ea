"""Interrupt an in-process run at the start of a round, as a kill would, for resume tests."""

from pathlib import Path

import pytest

from simulations.inprocess import run_inprocess
from simulations.loop import RoundLoop


def crash_in_round(monkeypatch: pytest.MonkeyPatch, config: dict, crash_round: int) -> Path:
    """Run ``config`` until round ``crash_round`` starts training, interrupt it there, and return
    the run directory it left behind (``config`` must name a fresh ``results-dir``)."""
    original = RoundLoop.train

    def train(self, server_round, arrays):
        if server_round == crash_round:
            raise KeyboardInterrupt("killed")
        return original(self, server_round, arrays)

    monkeypatch.setattr(RoundLoop, "train", train)
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(config)
    monkeypatch.setattr(RoundLoop, "train", original)
    (run_dir,) = Path(config["results-dir"]).iterdir()
    return run_dir
