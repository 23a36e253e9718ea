"""Pseudo-gradient server optimizers: Reddi et al.'s equations, Flower's built-ins, state, errors."""

import io
import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import strategy as flower

from fedpersonal.config import ConfigError
from simulations.inprocess import InProcessGrid, run_inprocess
from simulations.registry import build_strategy, parse_run_config
from strategies import fedopt
from strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOptTorch, FedYogi, PseudoGradientFedAvg
from strategies.server_optimizers import FedAdamSettings

X0 = [1.0, -2.0, 0.5]
# Two rounds of hand-made client models as offsets from the global x_t: (offset, num-examples).
UPDATES = [
    [([0.4, -0.2, 0.0], 1), ([0.0, 0.2, -0.8], 3)],  # Delta_1 = [0.1, 0.1, -0.6]
    [([-0.2, 0.6, 0.4], 2), ([0.2, 0.2, 0.0], 2)],  # Delta_2 = [0.0, 0.4, 0.2]
]


@pytest.fixture()
def grid():
    """Two nodes to sample (the in-process grid also sets Flower's task identity for Messages)."""
    return InProcessGrid(client_app=None, run_config={}, num_nodes=2)


def train_reply(arrays: dict[str, torch.Tensor], num_examples: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": num_examples})})
    return Message(content, dst_node_id=100, message_type=MessageType.TRAIN)


def run_rounds(strategy, grid, rounds=UPDATES, first_round: int = 1, extra=None) -> list[np.ndarray]:
    """Feed the hand-made updates to ``strategy``; the global ``w`` after each round."""
    x = {"w": torch.tensor(X0), **(extra or {})}
    history = []
    for server_round, replies in enumerate(rounds, start=first_round):
        strategy.configure_train(server_round, ArrayRecord(x), ConfigRecord(), grid)
        messages = [train_reply({**x, "w": x["w"] + torch.tensor(offset)}, n) for offset, n in replies]
        new, _ = strategy.aggregate_train(server_round, messages)
        x = new.to_torch_state_dict()
        history.append(x["w"].numpy().copy())
    return history


def ours(name: str, **section) -> PseudoGradientFedAvg:
    keys = {f"{name}.{key}": value for key, value in section.items()}
    return build_strategy(parse_run_config({"strategy": name, "num-clients": 2, **keys}))


def deltas() -> list[list[float]]:
    """Delta_t = sum n_i (x_i - x_t) / sum n_i, per round, by hand."""
    return [[0.1, 0.1, -0.6], [0.0, 0.4, 0.2]]


def reddi(rule: str, eta: float, beta1: float, beta2: float, tau: float, bias_correction: bool = False, t0: int = 1):
    """Reddi et al.'s Algorithm 2, one coordinate at a time in plain floats; with ``bias_correction``
    eta_t = eta sqrt(1 - beta2^t) / (1 - beta1^t), t counting from ``t0``."""
    x, m, v, history = list(X0), [0.0] * 3, [0.0] * 3, []
    for t, delta in enumerate(deltas(), start=t0):
        for i, d in enumerate(delta):
            m[i] = beta1 * m[i] + (1 - beta1) * d
            if rule == "adam":
                v[i] = beta2 * v[i] + (1 - beta2) * d * d
            elif rule == "yogi":
                v[i] = v[i] - (1 - beta2) * d * d * math.copysign(1.0, v[i] - d * d) if v[i] != d * d else v[i]
            else:
                v[i] = v[i] + d * d
            lr = eta * math.sqrt(1 - beta2**t) / (1 - beta1**t) if bias_correction else eta
            x[i] = x[i] + lr * m[i] / (math.sqrt(v[i]) + tau)
        history.append(list(x))
    return history


def heavy_ball(eta: float, beta: float, nesterov: bool = False):
    """FedAvgM: v = beta v + (x_t - avg); x = x - eta v (Nesterov: x - eta (g + beta v))."""
    x, v, history = list(X0), [0.0] * 3, []
    for delta in deltas():
        for i, d in enumerate(delta):
            g = -d
            v[i] = beta * v[i] + g
            x[i] -= eta * (g + beta * v[i] if nesterov else v[i])
        history.append(list(x))
    return history


CASES = {
    "fedadam": ({"server-lr": 0.1}, reddi("adam", 0.1, 0.9, 0.99, 1e-3)),
    "fedadam-adam-bias-correction": (
        {"server-lr": 0.1, "bias-correction": "adam"},
        reddi("adam", 0.1, 0.9, 0.99, 1e-3, bias_correction=True),
    ),
    # Flower's convention: t = server_round + 1, so round 1 corrects with t = 2.
    "fedadam-flower-bias-correction": (
        {"server-lr": 0.1, "bias-correction": "flower"},
        reddi("adam", 0.1, 0.9, 0.99, 1e-3, True, t0=2),
    ),
    "fedyogi": ({"server-lr": 0.1, "beta2": 0.9, "tau": 0.01}, reddi("yogi", 0.1, 0.9, 0.9, 0.01)),
    "fedadagrad": ({"server-lr": 0.1}, reddi("adagrad", 0.1, 0.0, 0.0, 1e-3)),
    "fedadagrad-momentum": ({"server-lr": 0.1, "beta1": 0.5}, reddi("adagrad", 0.1, 0.5, 0.0, 1e-3)),
    "fedavgm": ({"server-lr": 0.5, "momentum": 0.9}, heavy_ball(0.5, 0.9)),
    "fedavgm-nesterov": ({"server-lr": 0.5, "momentum": 0.9, "nesterov": True}, heavy_ball(0.5, 0.9, True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_rounds_follow_the_equations(case, grid):
    section, expected = CASES[case]
    got = run_rounds(ours(case.split("-")[0], **section), grid)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_first_fedadam_step_by_hand(grid):
    # Delta_1 = 0.1: m = 0.01, v = 0.01 * 0.01, x = 1 + 0.1 * 0.01 / (0.01 + 0.001) = 1.0909091
    (first, _) = run_rounds(ours("fedadam", **{"server-lr": 0.1}), grid)
    assert first[0] == pytest.approx(1.0 + 0.1 / 1.1, rel=1e-6)


FLOWER = {
    # name, our section, Flower's strategy, round offset given to Flower
    "fedadam": (
        {"server-lr": 0.1, "bias-correction": "flower"},
        lambda: flower.FedAdam(eta=0.1, min_available_nodes=2),
        0,
    ),
    "fedyogi": ({"server-lr": 0.1}, lambda: flower.FedYogi(eta=0.1, min_available_nodes=2), 0),
    "fedadagrad": ({"server-lr": 0.1}, lambda: flower.FedAdagrad(eta=0.1, min_available_nodes=2), 0),
    "fedavgm": (
        {"server-lr": 0.5, "momentum": 0.9},
        lambda: flower.FedAvgM(server_learning_rate=0.5, server_momentum=0.9, min_available_nodes=2),
        0,
    ),
}


@pytest.mark.parametrize("name", list(FLOWER))
def test_equal_to_flowers_builtin_on_the_same_replies(name, grid):
    """Same rounds, same replies: ours (FedAdam with bias-correction 'flower') equals Flower 1.42's."""
    section, make_flower, offset = FLOWER[name]
    np.testing.assert_allclose(
        run_rounds(ours(name, **section), grid),
        run_rounds(make_flower(), grid, first_round=1 + offset),
        rtol=1e-5,
        atol=1e-6,
    )


def test_fedadam_without_bias_correction_differs_from_flower_by_its_eta_scale(grid):
    plain = np.array(run_rounds(ours("fedadam", **{"server-lr": 0.1}), grid)[0]) - X0
    corrected = np.array(run_rounds(flower.FedAdam(eta=0.1, min_available_nodes=2), grid, first_round=0)[0]) - X0
    np.testing.assert_allclose(corrected, plain * math.sqrt(1 - 0.99) / (1 - 0.9), rtol=1e-5)


def test_integer_buffers_are_averaged_never_optimized(grid):
    strategy = ours("fedadam", **{"server-lr": 0.1})
    counts = {"bn.num_batches_tracked": torch.tensor(10)}
    # Replies carry x_t's counter + 5 and + 8 (weights 1 and 3): 10 + 7.25, rounded to 17.
    rounds = [[(offset, n) for offset, n in UPDATES[0]]]
    x = {"w": torch.tensor(X0), **counts}
    strategy.configure_train(1, ArrayRecord(x), ConfigRecord(), grid)
    replies = [
        train_reply({"w": x["w"] + torch.tensor(offset), "bn.num_batches_tracked": torch.tensor(10 + bump)}, n)
        for (offset, n), bump in zip(rounds[0], (5, 8))
    ]
    new = strategy.aggregate_train(1, replies)[0].to_torch_state_dict()
    assert new["bn.num_batches_tracked"].dtype == torch.int64 and int(new["bn.num_batches_tracked"]) == 17
    assert list(strategy.weights) == ["w"]
    assert [p.shape for g in strategy.optimizer.param_groups for p in g["params"]] == [torch.Size([3])]
    np.testing.assert_allclose(new["w"].numpy(), reddi("adam", 0.1, 0.9, 0.99, 1e-3)[0], rtol=1e-5)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad", "fedavgm"])
def test_batchnorm_running_statistics_are_averaged_never_stepped(name, grid):
    strategy = ours(name, **{"server-lr": 0.5})
    stats = {"bn.running_mean": torch.tensor([0.0, 1.0]), "bn.running_var": torch.tensor([1.0, 1.0])}
    x = {"w": torch.tensor(X0), **stats}
    history = []
    for server_round, (means, variances) in enumerate((([0.4, 2.0], [0.1, 0.3]), ([0.6, 1.0], [0.2, 0.1])), 1):
        strategy.configure_train(server_round, ArrayRecord(x), ConfigRecord(), grid)
        replies = [
            train_reply({"w": x["w"] + torch.tensor(offset), "bn.running_mean": torch.tensor([m, m]),
                         "bn.running_var": torch.tensor([v, v])}, n)
            for (offset, n), m, v in zip(UPDATES[server_round - 1], means, variances, strict=True)
        ]  # fmt: skip
        x = strategy.aggregate_train(server_round, replies)[0].to_torch_state_dict()
        weights = [n for _, n in UPDATES[server_round - 1]]
        # the plain FedAvg average of the replies, by hand, even after momentum has built up
        assert x["bn.running_mean"].tolist() == pytest.approx([np.average(means, weights=weights)] * 2)
        assert x["bn.running_var"].tolist() == pytest.approx([np.average(variances, weights=weights)] * 2)
        history.append(x["w"].numpy().copy())
    assert list(strategy.weights) == ["w"]  # only the trainable weight reaches the optimizer
    assert bool(x["bn.running_var"].min() > 0)
    assert not np.allclose(history[-1], np.array(X0) + np.array(deltas()[0]) + np.array(deltas()[1]))  # w was stepped


def test_averaged_keys_can_be_named_explicitly(grid):
    strategy = FedAdam(eta=0.5, averaged_keys=["scale"], fraction_train=1.0, min_available_nodes=2)
    x = {"w": torch.tensor(X0), "scale": torch.tensor([1.0])}
    strategy.configure_train(1, ArrayRecord(x), ConfigRecord(), grid)
    replies = [train_reply({"w": x["w"] + torch.tensor(o), "scale": torch.tensor([s])}, n)
               for (o, n), s in zip(UPDATES[0], (2.0, 4.0), strict=True)]  # fmt: skip
    new = strategy.aggregate_train(1, replies)[0].to_torch_state_dict()
    assert float(new["scale"]) == pytest.approx((2.0 * 1 + 4.0 * 3) / 4)


def test_optimizer_state_carries_across_rounds_and_through_a_checkpoint(grid):
    name, section = "fedyogi", {"server-lr": 0.1}
    continuous = run_rounds(ours(name, **section), grid)

    first = ours(name, **section)
    (after_round_1,) = run_rounds(first, grid, rounds=UPDATES[:1])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    assert first.state_dict()["optimizer"]["state"][0]["step"] == 1

    def second_round(strategy):
        x = {"w": torch.tensor(after_round_1)}
        strategy.configure_train(2, ArrayRecord(x), ConfigRecord(), grid)
        replies = [train_reply({"w": x["w"] + torch.tensor(offset)}, n) for offset, n in UPDATES[1]]
        return strategy.aggregate_train(2, replies)[0].to_torch_state_dict()["w"].numpy()

    restored = ours(name, **section)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))  # before any configure_train
    np.testing.assert_allclose(second_round(restored), continuous[1], rtol=1e-6)
    fresh = second_round(ours(name, **section))  # without the moments the step differs
    assert not np.allclose(fresh, continuous[1], rtol=1e-4)


def test_any_torch_optimizer_by_name(grid):
    plain_sgd = ours("fedopt", **{"optimizer": "SGD", "server-lr": 1.0, "options": "{}"})
    fedavg = np.array(X0) + np.cumsum(deltas(), axis=0)  # SGD with eta = 1 is FedAvg
    np.testing.assert_allclose(run_rounds(plain_sgd, grid), fedavg, rtol=1e-6)
    nesterov = ours(
        "fedopt", **{"optimizer": "SGD", "server-lr": 0.5, "options": '{"momentum": 0.9, "nesterov": true}'}
    )
    np.testing.assert_allclose(run_rounds(nesterov, grid), heavy_ball(0.5, 0.9, True), rtol=1e-5)
    adam = ours("fedopt", **{"optimizer": "Adam", "server-lr": 0.01, "options": '{"betas": [0.9, 0.99]}'})
    (first, _) = run_rounds(adam, grid)
    # torch's bias-corrected Adam moves every coordinate by about eta in the direction of Delta_1.
    np.testing.assert_allclose(first - X0, 0.01 * np.sign(deltas()[0]), rtol=1e-3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"strategy": "fedadam", "fedadam.beta1": 1.0},
            r"'fedadam.beta1' = 1.0 is invalid; expected a number in \[0, 1\)",
        ),
        (
            {"strategy": "fedyogi", "fedyogi.server-lr": 0.0},
            r"'fedyogi.server-lr' = 0.0 is invalid; expected a number in \(0, 100\]",
        ),
        (
            {"strategy": "fedopt", "fedopt.optimizer": "Sgd"},
            r"'fedopt.optimizer' = 'Sgd' is invalid; expected the name of a torch.optim",
        ),
        (
            {"strategy": "fedopt", "fedopt.options": "momentum=0.9"},
            r"'fedopt.options' = 'momentum=0.9' is invalid; expected a JSON object",
        ),
        (
            {"strategy": "fedopt", "fedopt.options": '{"nestrov": true}'},
            r"section\(s\) \{'fedopt'.* rejected .*nestrov",
        ),
        (
            {"strategy": "fedavgm", "fedavgm.momentum": 0.0, "fedavgm.nesterov": True},
            r"section\(s\) \{'fedavgm'.* rejected .*Nesterov",
        ),
        (
            {"strategy": "fedadam", "fedadam.bias-correction": "yes"},
            r"'fedadam.bias-correction' = 'yes' is invalid; expected one of 'none'",
        ),
    ],
)
def test_bad_settings_stop_with_a_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_strategy(parse_run_config(settings))


def test_the_strategies_are_flower_strategies_built_without_a_run_config(grid):
    """Flower's constructor conventions: keyword hyperparameters plus FedAvg's sampling arguments."""
    sampling = FedAdam(fraction_train=0.5, min_available_nodes=7, min_train_nodes=3)
    assert (sampling.fraction_train, sampling.min_available_nodes, sampling.min_train_nodes) == (0.5, 7, 3)
    strategy = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3, min_available_nodes=2)
    np.testing.assert_allclose(run_rounds(strategy, grid), reddi("adam", 0.1, 0.9, 0.99, 1e-3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        run_rounds(FedAvgM(server_learning_rate=0.5, server_momentum=0.9), grid), heavy_ball(0.5, 0.9), rtol=1e-5
    )
    np.testing.assert_allclose(
        run_rounds(FedYogi(eta=0.1, beta_2=0.9, tau=0.01), grid), reddi("yogi", 0.1, 0.9, 0.9, 0.01), rtol=1e-5
    )
    np.testing.assert_allclose(run_rounds(FedAdagrad(eta=0.1), grid), reddi("adagrad", 0.1, 0.0, 0.0, 1e-3), rtol=1e-5)
    fedavg = np.array(X0) + np.cumsum(deltas(), axis=0)
    np.testing.assert_allclose(run_rounds(FedOptTorch(optimizer="SGD", eta=1.0), grid), fedavg, rtol=1e-6)
    with pytest.raises(ValueError, match="nestrov"):
        FedOptTorch(options={"nestrov": True})
    with pytest.raises(ValueError, match="unknown bias correction 'sometimes'"):
        FedAdam(bias_correction="sometimes")


def test_section_defaults_equal_the_constructor_defaults():
    """The run-config path and a plain constructor start from the same hyperparameters."""
    defaults = parse_run_config({"strategy": "fedadam"})
    s = defaults.section(FedAdamSettings)
    built, plain = build_strategy(defaults), fedopt.FedAdam()
    group_built, group_plain = (
        {k: v for k, v in strategy.make_optimizer([torch.zeros(1)]).param_groups[0].items() if k != "params"}
        for strategy in (built, plain)
    )
    assert group_built == group_plain and group_plain["lr"] == 0.01
    assert (s.server_lr, s.beta1, s.beta2, s.tau, s.bias_correction) == (0.01, 0.9, 0.99, 1e-3, "none")


def test_a_real_round_applies_the_step_to_the_clients_replies(tmp_path):
    """In-process run: the saved model is Reddi's FedYogi step from x_0 on the clients' actual replies."""
    config = {
        "strategy": "fedyogi",
        "num-clients": 3,
        "num-rounds": 1,
        "samples-per-client": 40,
        "local-epochs": 1,
        "results-dir": str(tmp_path),
        "fedyogi.server-lr": 0.01,
    }
    run_dir, grid = run_inprocess(config, record=True)
    x0 = grid.sent[0].content.array_records["arrays"].to_torch_state_dict()
    replies = [r.content for r in grid.replies if r.content.array_records]
    weights = np.array([r.metric_records["metrics"]["num-examples"] for r in replies], dtype=float)
    saved = torch.load(run_dir.path / "model.pt")
    for key, start in x0.items():
        models = np.stack([r.array_records["arrays"][key].numpy() for r in replies])
        delta = np.tensordot(weights / weights.sum(), models, axes=1) - start.numpy()
        m, v = 0.1 * delta, 0.01 * delta**2  # from m = v = 0: sign(0 - Delta^2) = -1
        expected = start.numpy() + 0.01 * m / (np.sqrt(v) + 1e-3)
        np.testing.assert_allclose(saved[key].numpy(), expected, rtol=1e-4, atol=1e-6)
    assert len(replies) == 3


def test_a_resumed_run_continues_with_the_saved_server_moments(tmp_path, monkeypatch):
    from crashing import crash_in_round

    from fedpersonal.checkpoint import load_checkpoint

    config = {
        "strategy": "fedyogi",
        "num-clients": 2,
        "num-rounds": 2,
        "samples-per-client": 40,
        "local-epochs": 1,
        "fedyogi.server-lr": 0.01,
    }
    full, _ = run_inprocess({**config, "results-dir": str(tmp_path / "full")})
    crashed = crash_in_round(monkeypatch, {**config, "results-dir": str(tmp_path / "crashed")}, 2)
    saved = load_checkpoint(crashed)["strategy"]
    assert saved["optimizer"]["state"][0]["step"] == 1 and saved["optimizer"]["state"][0]["v"].abs().sum() > 0

    resumed, _ = run_inprocess({**config, "results-dir": str(tmp_path / "crashed"), "resume": str(crashed)})
    for key, value in torch.load(full.path / "model.pt").items():
        torch.testing.assert_close(torch.load(resumed.path / "model.pt")[key], value, rtol=0, atol=0)


def test_the_gaze_scenarios_are_the_benchmarks_tuned_settings():
    """simulations/scenarios/gaze_<strategy>.toml = the client lr and the server settings that the
    recorded gaze_fedopt stages chose (benchmarks/results/gaze_fedopt_{client-lr,grid}.json)."""
    import json
    from pathlib import Path

    import tomllib
    from flwr.common.config import flatten_dict

    root = Path(__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    client = json.loads((results / "gaze_fedopt_client-lr.json").read_text())["chosen"]["fedavg"]
    chosen = {"fedavg": client, **json.loads((results / "gaze_fedopt_grid.json").read_text())["chosen"]}
    assert set(chosen) == {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"}
    for name, keys in chosen.items():
        scenario = flatten_dict(tomllib.loads((root / "simulations" / "scenarios" / f"gaze_{name}.toml").read_text()))
        expected = {**keys, "lr": client["lr"], "momentum": 0.0}
        assert parse_run_config(scenario).to_dict() == parse_run_config(expected).to_dict(), name
