"""DUA through the real strategy and client: Omega messages, per-node merged models, adaptation."""

import pytest
import torch

from fedpersonal.adaptation import AdaptSettings
from fedpersonal.adaptation.dua import DUASettings
from fedpersonal.adaptation.experts import unpack_states
from fedpersonal.adaptation.imm import imm_merge
from fedpersonal.config import ConfigError
from fedpersonal.tasks import get_task
from simulations.inprocess import run_inprocess
from simulations.registry import build_strategy
from simulations.server_app import parse_run_config

# 45 samples: 36 train and 9 test, sizes no parameter of the CNN has.
TINY = {
    "task": "classify",
    "strategy": "dua",
    "num-clients": 3,
    "num-rounds": 2,
    "samples-per-client": 45,
    "classify.corruptions": "gaussian-noise,contrast",
    "dua.server-samples": 40,
    "dua.generic-epochs": 1,
    "dua.expert-epochs": 1,
    "adapt.method": "adabn",
}


@pytest.fixture(scope="module")
def dua_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield run_inprocess({**TINY, "results-dir": str(tmp_path_factory.mktemp("runs"))}, record=True)
    finally:
        torch.set_num_threads(threads)


def by_type(messages, kind):
    return [msg for msg in messages if msg.metadata.message_type == kind]


def test_omega_replies_carry_no_data_shaped_array_and_no_label(dua_run):
    _, grid = dua_run
    cfg = parse_run_config(TINY)
    task = get_task("classify", cfg)
    body_shapes = {
        name: tuple(p.shape) for name, p in task.build_model().named_parameters() if not name.startswith("head.")
    }
    data = task.client_data(0)
    data_shapes = {tuple(t.shape) for t in (*data.train, *data.test)}
    sizes = {data.num_train, data.num_test}

    replies = [reply for reply in grid.replies if reply.content.array_records]
    assert len(replies) == 3  # one Omega request per node, and only in round 1
    for reply in replies:
        assert set(reply.content.keys()) == {"arrays", "metrics"}
        assert set(reply.content.metric_records["metrics"]) == {"num-examples", "partition-id"}
        arrays = reply.content.array_records["arrays"].to_torch_state_dict()
        assert set(arrays) == {f"{k}/{name}" for k in range(2) for name in body_shapes}  # no head
        for key, value in arrays.items():
            shape = tuple(value.shape)
            assert shape == body_shapes[key.partition("/")[2]]
            assert shape not in data_shapes and shape[0] not in sizes, key
            assert value.dtype.is_floating_point and bool((value >= 0).all())


def test_each_node_gets_the_imm_merge_of_its_own_omegas(dua_run):
    run_dir, grid = dua_run
    train_messages = by_type(grid.sent, "train")
    experts = unpack_states(train_messages[0].content.array_records["arrays"])
    assert len(experts) == 2
    omega_of = {
        r.metadata.src_node_id: unpack_states(r.content.array_records["arrays"])
        for r in grid.replies
        if r.content.array_records
    }
    evaluations = by_type(grid.sent, "evaluate")
    round0 = [m for m in evaluations if m.content.config_records["config"]["server-round"] == 0]
    generic = round0[0].content.array_records["arrays"].to_torch_state_dict()
    for msg in round0:  # before any Omega: everyone evaluates the generic model
        for key, value in msg.content.array_records["arrays"].to_torch_state_dict().items():
            assert torch.equal(value, generic[key])
    merged_of = {}
    for msg in (m for m in evaluations if m.content.config_records["config"]["server-round"] == 1):
        node = msg.metadata.dst_node_id
        expected = imm_merge(experts, omega_of[node])
        received = msg.content.array_records["arrays"].to_torch_state_dict()
        for key, value in expected.items():
            torch.testing.assert_close(received[key], value)
        merged_of[node] = received
    first, second = sorted(merged_of)[:2]  # users 0 and 1 have different corruptions
    assert not torch.allclose(merged_of[first]["body.0.weight"], merged_of[second]["body.0.weight"])

    rounds = run_dir.read_rows("rounds.jsonl")
    assert rounds[2]["skipped"]  # DUA is one-shot: round 2 asks nobody again
    assert all("worst-client-personalized-accuracy" in row for row in rounds)
    evaluated = [row for row in run_dir.read_rows("clients.jsonl") if row["phase"] == "evaluate"]
    assert len(evaluated) == 9 and all(0 <= row["personalized-accuracy"] <= 1 for row in evaluated)


def test_dua_config_errors_name_the_key():
    from fedpersonal.adaptation.dua import experts_for
    from fedpersonal.config import parse_config

    with pytest.raises(
        ConfigError, match=r"'strategy' = 'dua' does not support task = 'gaze' \(it supports \['classify'\]\)"
    ):
        parse_run_config({"strategy": "dua"})
    with pytest.raises(ConfigError, match="task 'gaze' does not provide; expected task 'classify'"):
        experts_for(parse_config({"strategy": "dua"}, [DUASettings]))
    with pytest.raises(ConfigError, match="'dua.importance' = 'fisher' needs class probabilities"):
        experts_for(parse_config({"strategy": "dua", "dua.importance": "fisher"}, [DUASettings]))
    with pytest.raises(ConfigError, match=r"'dua.experts-path' = '/nonexistent/experts.pt'"):
        build_strategy(
            parse_run_config({"task": "classify", "strategy": "dua", "dua.experts-path": "/nonexistent/experts.pt"})
        )


def test_the_dua_scenario_is_a_valid_run_config():
    from pathlib import Path

    import tomllib
    from flwr.common.config import flatten_dict

    scenario = Path(__file__).resolve().parents[1] / "simulations" / "scenarios" / "classify_dua.toml"
    cfg = parse_run_config(flatten_dict(tomllib.loads(scenario.read_text())))
    assert (cfg.task, cfg.strategy, cfg.section(AdaptSettings).method, cfg.section(DUASettings).importance) == (
        "classify",
        "dua",
        "adabn",
        "mas",
    )
