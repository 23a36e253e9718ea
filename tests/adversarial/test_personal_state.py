"""Personal state stays personal on disk: its place is chosen by the client (node config, its
environment, or its run directory by default), never by a path in a server message."""

import stat

import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from fedpersonal.checkpoint import CLIENT_STATE_DIR
from simulations.client_app import STATE_DIR_ENV, state_base
from simulations.inprocess import run_inprocess
from simulations.registry import parse_run_config

FEDPER = {"strategy": "fedper", "num-clients": 2, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}


def context(node_config=None):
    return Context(run_id=1, node_id=5, node_config=node_config or {}, state=RecordDict(), run_config={})


def test_the_message_names_the_run_never_a_path(tmp_path):
    cfg = parse_run_config({"results-dir": str(tmp_path)})
    base, location = state_base(context(), cfg, ConfigRecord({"run-name": "20261202-gaze-fedper-seed0"}))
    assert base == tmp_path / "20261202-gaze-fedper-seed0" and location == "run-dir"
    for hostile in ("../../etc", "/etc", "a/b", ".hidden", ""):
        if hostile:
            with pytest.raises(ValueError, match="expected a plain directory name"):
                state_base(context(), cfg, ConfigRecord({"run-name": hostile}))
    assert state_base(context(), cfg, ConfigRecord({"run-dir": "/tmp/evil"})) == (None, "")


def test_a_server_message_pointing_elsewhere_writes_nothing_there(tmp_path):
    evil = tmp_path / "evil"

    def point_elsewhere(grid):
        honest = grid.client_app

        def client_app(message, ctx):
            message.content["config"]["run-dir"] = str(evil)  # what the server used to dictate
            return honest(message, ctx)

        grid.client_app = client_app

    run_dir, _ = run_inprocess({**FEDPER, "results-dir": str(tmp_path / "runs")}, on_grid=point_elsewhere)
    assert not evil.exists()
    saved = sorted((run_dir.path / CLIENT_STATE_DIR).iterdir())
    assert [p.name for p in saved] == ["0.r1.bin", "1.r1.bin"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved)


def test_the_node_config_or_environment_chooses_the_place_and_resume_uses_it(tmp_path, monkeypatch):
    phone = tmp_path / "phone"

    def on_device(grid):
        for ctx in grid.contexts.values():
            ctx.node_config["state-dir"] = str(phone)

    run_dir, _ = run_inprocess({**FEDPER, "results-dir": str(tmp_path / "runs")}, on_grid=on_device)
    assert not (run_dir.path / CLIENT_STATE_DIR).exists()
    assert sorted(p.name for p in (phone / run_dir.path.name / CLIENT_STATE_DIR).iterdir()) == ["0.r1.bin", "1.r1.bin"]
    rows = run_dir.read_rows("clients.jsonl")
    assert {row.get("state-location") for row in rows if row["phase"] == "train"} == {"custom"}

    monkeypatch.setenv(STATE_DIR_ENV, str(phone))  # the same place from the client's environment
    resumed, _ = run_inprocess(
        {**FEDPER, "num-rounds": 2, "results-dir": str(tmp_path / "runs"), "resume": str(run_dir.path)}
    )
    assert sorted(p.name for p in (phone / run_dir.path.name / CLIENT_STATE_DIR).iterdir())[-2:] == [
        "1.r1.bin",
        "1.r2.bin",
    ]
    assert [row["round"] for row in resumed.read_rows("rounds.jsonl")] == [0, 1, 2]
