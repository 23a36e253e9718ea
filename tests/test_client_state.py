"""Personal state kept on disk between calls (run-config key client-state) gives the same run as in memory."""

import json

import pytest

from simulations.client_state import PARKED, on_disk
from simulations.inprocess import run_inprocess
from simulations.registry import parse_run_config

RUN = {"task": "gaze", "strategy": "fedper", "num-clients": 3, "num-rounds": 2, "samples-per-client": 30,
       "local-epochs": 1, "fraction-train": 0.67}  # fmt: skip


def final_rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir.path / "clients.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("node-id", "time-s")} for row in rows]


def test_state_on_disk_gives_the_same_run_and_leaves_only_a_marker_in_memory(tmp_path):
    memory_dir, memory_grid = run_inprocess({**RUN, "client-state": "memory", "results-dir": str(tmp_path / "m")})
    disk_dir, disk_grid = run_inprocess({**RUN, "client-state": "disk", "results-dir": str(tmp_path / "d")})
    assert final_rows(disk_dir) == final_rows(memory_dir)
    trained = [ctx for ctx in memory_grid.contexts.values() if ctx.state]
    assert trained and all(PARKED not in ctx.state and len(ctx.state) >= 1 for ctx in trained)
    parked = [ctx for ctx in disk_grid.contexts.values() if ctx.state]
    assert len(parked) == len(trained) and all(list(ctx.state.keys()) == [PARKED] for ctx in parked)


@pytest.mark.parametrize(("setting", "clients", "expected"), [("auto", 1000, False), ("auto", 1001, True),
                                                              ("memory", 5000, False), ("disk", 2, True)])  # fmt: skip
def test_auto_keeps_state_on_disk_only_for_many_clients(setting, clients, expected):
    assert on_disk(parse_run_config({"client-state": setting, "num-clients": clients})) is expected
