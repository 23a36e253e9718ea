"""SCAFFOLD: control variates on both sides, checked against the paper's option-II update by hand."""

import math

import pytest
import torch
from flwr.app import MessageType

from simulations.inprocess import run_inprocess

CONFIG = {"strategy": "scaffold", "num-clients": 2, "num-rounds": 2, "samples-per-client": 40, "local-epochs": 2,
          "batch-size": 8, "lr": 0.05, "momentum": 0.0, "grad-clip": 0.0}  # fmt: skip
CONTROL = "control/"


def split(arrays):
    state = arrays.to_torch_state_dict()
    model = {k: v for k, v in state.items() if not k.startswith(CONTROL)}
    control = {k[len(CONTROL) :]: v for k, v in state.items() if k.startswith(CONTROL)}
    return model, control


@pytest.fixture(scope="module")
def scaffold_run(tmp_path_factory):
    return run_inprocess({**CONFIG, "results-dir": str(tmp_path_factory.mktemp("runs"))}, record=True)


def exchanges(grid, server_round):
    sent = {
        m.metadata.dst_node_id: m
        for m in grid.sent
        if m.metadata.message_type == MessageType.TRAIN and m.content["config"]["server-round"] == server_round
    }
    replies = [
        r for r in grid.replies
        if r.metadata.message_type == MessageType.TRAIN and r.metadata.src_node_id in sent
        and r.metadata.reply_to_message_id == sent[r.metadata.src_node_id].metadata.message_id
    ]  # fmt: skip
    return [(sent[r.metadata.src_node_id], r) for r in replies]


def test_client_control_update_is_option_two_by_hand(scaffold_run):
    _, grid = scaffold_run
    for server_round in (1, 2):
        pairs = exchanges(grid, server_round)
        assert len(pairs) == 2
        for message, reply in pairs:
            x, c = split(message.content["arrays"])
            y, delta = split(reply.content["arrays"])
            assert set(delta) == set(c) and set(y) == set(x)
            n_train = int(reply.content["metrics"]["num-examples"])
            steps = CONFIG["local-epochs"] * math.ceil(n_train / CONFIG["batch-size"])
            for key in c:  # Delta c_i = c_i+ - c_i = -c + (x - y) / (K lr)
                expected = -c[key] + (x[key] - y[key]) / (steps * CONFIG["lr"])
                torch.testing.assert_close(delta[key], expected, rtol=1e-4, atol=1e-6)
            if server_round == 1:
                assert all(float(v.abs().sum()) == 0 for v in c.values())  # c starts at zero


def test_server_control_moves_by_the_average_client_update(scaffold_run):
    _, grid = scaffold_run
    first = exchanges(grid, 1)
    weights = [float(reply.content["metrics"]["num-examples"]) for _, reply in first]
    deltas = [split(reply.content["arrays"])[1] for _, reply in first]
    _, c_round_two = split(exchanges(grid, 2)[0][0].content["arrays"])
    for key, value in c_round_two.items():  # |S| = N = 2: c = 0 + average Delta c
        expected = sum(w * d[key] for w, d in zip(weights, deltas)) / sum(weights)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    assert any(float(v.abs().sum()) > 0 for v in c_round_two.values())


def test_the_client_variate_stays_on_the_device(scaffold_run):
    _, grid = scaffold_run
    for context in grid.contexts.values():
        own = context.state["scaffold-control"].to_torch_state_dict()
        assert own and all(torch.isfinite(v).all() for v in own.values())
    for _, reply in exchanges(grid, 2):  # replies hold y and Delta c_i only, never c_i itself
        _, delta = split(reply.content["arrays"])
        node_state = grid.contexts[reply.metadata.src_node_id].state["scaffold-control"].to_torch_state_dict()
        assert any(not torch.equal(delta[k], node_state[k]) for k in delta)
