"""The vectorized clients backend: the same run as the sequential in-process runner, its functional
SGD step, and the settings it refuses."""

import dataclasses
import math

import pytest
import torch

from fedpersonal.config import ConfigError
from fedpersonal.tasks import ClientData
from fedpersonal.tasks.gaze import GazeTask
from fedpersonal.training import SGDSettings
from fedpersonal.vectorized_sgd import clip_gradients, sgd_step
from simulations.inprocess import run_inprocess
from simulations.registry import ALGORITHMS, plain_sgd
from simulations.vectorized import check_vectorized, supported_strategies
from tests.small_configs import SMALL

# 3 clients with 20 training samples each before trimming, batches of 8, 2 local epochs, 2 rounds.
UNEVEN = {**SMALL["gaze"], "num-clients": 3, "num-rounds": 2, "samples-per-client": 25, "batch-size": 8,
          "local-epochs": 2, "weight-decay": 0.001}  # fmt: skip
TOLERANCE = 1e-5


@pytest.fixture
def uneven_clients(monkeypatch):
    """Client p keeps 20 - 5 p training samples: batches (8, 8, 4), (8, 7), (8, 2) per epoch, so
    clients run out of batches at different steps and last batches differ in size."""
    original = GazeTask.client_data

    def trimmed(self, partition_id):
        data = original(self, partition_id)
        keep = data.num_train - 5 * (partition_id % 3)
        return ClientData(tuple(t[:keep] for t in data.train), data.test)

    monkeypatch.setattr(GazeTask, "client_data", trimmed)


@pytest.fixture
def float64_gaze(monkeypatch):
    """The gaze LeNet in float64: without float32 round-off (which training amplifies, see
    docs/performance.md) both runs must agree to the last digits."""
    from fedpersonal.models.lenet import GazeLeNet

    monkeypatch.setattr(GazeTask, "build_model", lambda self: GazeLeNet().double())
    monkeypatch.setattr(GazeTask, "forward", lambda self, model, inputs: model(inputs[0].double() / 255.0,
                                                                               inputs[1].double()))  # fmt: skip


def _numbers(row):
    return {key: value for key, value in row.items() if isinstance(value, int | float) and key != "time-s"}


def _differences(first, second, rows=("rounds.jsonl", "clients.jsonl")):
    """The largest absolute difference between two runs' final weights, and between their metrics
    in ``rows`` (the rows must match one to one, with the same keys)."""
    weights = [torch.load(run.path / "model.pt") for run in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    weight_difference = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    metric_difference = 0.0
    for name in rows:
        tables = [[_numbers(row) for row in run.read_rows(name)] for run in (first, second)]
        assert len(tables[0]) == len(tables[1])
        for one, other in zip(*tables):
            assert one.keys() == other.keys(), name
            metric_difference = max([metric_difference, *(abs(one[key] - other[key]) for key in one)])
    return weight_difference, metric_difference


def _both_ways(tmp_path, config, record=False):
    sequential, _ = run_inprocess({**config, "results-dir": str(tmp_path / "sequential")})
    vectorized, grid = run_inprocess({**config, "results-dir": str(tmp_path / "vectorized")}, vectorized=True,
                                     record=record)  # fmt: skip
    return sequential, vectorized, grid


@pytest.mark.parametrize(
    "overrides",
    [
        {"strategy": "fedavg"},
        {"strategy": "fedprox", "fedprox.mu": 0.5},
        {"strategy": "fedadam"},
        {"strategy": "fedper"},
    ],
    ids=lambda overrides: overrides["strategy"],
)
def test_the_vectorized_run_equals_the_sequential_one(tmp_path, uneven_clients, float64_gaze, overrides):
    config = {**UNEVEN, **overrides}
    sequential, vectorized, grid = _both_ways(tmp_path, config, record=True)
    assert max(_differences(sequential, vectorized)) <= 1e-9  # float64: the same computation
    trained = [row for row in vectorized.read_rows("clients.jsonl") if row["phase"] == "train"]
    assert sorted(row["num-examples"] for row in trained) == [10, 10, 15, 15, 20, 20]
    assert all(math.isfinite(row["train-loss"]) and row["train-loss"] > 0 for row in trained)
    metric = "personalized-angular-error" if config["strategy"] == "fedper" else "global-angular-error"
    rounds = vectorized.read_rows("rounds.jsonl")
    assert rounds[-1][metric] < rounds[0][metric]
    if config["strategy"] == "fedper":  # the head never left the devices
        sent = [reply.content.array_records["arrays"] for reply in grid.replies if reply.content.array_records]
        assert sent and all(not any(key.startswith("head.") for key in arrays) for arrays in sent)


def test_in_float32_the_runs_agree_within_1e_5(tmp_path, uneven_clients):
    """The model's own dtype: batched kernels sum in another order, so the last float32 digits differ;
    final weights within 1e-5, per-round metrics within 1e-5 relative (they are degrees, about 15)."""
    sequential, vectorized, _ = _both_ways(tmp_path, {**UNEVEN, "num-rounds": 1})
    weights, _ = _differences(sequential, vectorized, rows=())
    assert weights <= 1e-5
    for one, other in zip(*(run.read_rows("rounds.jsonl") for run in (sequential, vectorized)), strict=True):
        one, other = _numbers(one), _numbers(other)
        assert all(math.isclose(one[key], other[key], rel_tol=1e-5, abs_tol=1e-5) for key in one), (one, other)


def test_a_changed_step_is_detected(tmp_path, uneven_clients, float64_gaze, monkeypatch):
    """The comparison above can fail: a vectorized step with a learning rate 1e-6 larger differs."""
    from simulations import vectorized

    original = vectorized.sgd_step

    def larger_step(params, grads, momenta, settings):
        return original(params, grads, momenta, dataclasses.replace(settings, lr=settings.lr * (1 + 1e-6)))

    monkeypatch.setattr(vectorized, "sgd_step", larger_step)
    sequential, changed, _ = _both_ways(tmp_path, {**UNEVEN, "num-rounds": 1})
    assert max(_differences(sequential, changed)) > 1e-9


def test_the_functional_sgd_step_equals_torch_sgd_with_momentum_weight_decay_and_clipping():
    torch.manual_seed(0)
    settings = SGDSettings(lr=0.1, momentum=0.9, weight_decay=0.01)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    momenta = {name: torch.zeros_like(value) for name, value in params.items()}
    inputs, targets = torch.randn(3, 4, 3), torch.randn(3, 4, 2)
    for step in range(3):  # the first step starts the momentum buffers; later ones use them
        loss = ((model(inputs[step]) - targets[step]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        grads = torch.func.grad(
            lambda p, x=inputs[step], y=targets[step]: ((torch.func.functional_call(model, p, (x,)) - y) ** 2).mean()
        )(params)
        params, momenta = sgd_step(params, clip_gradients(grads, 0.5), momenta, settings)
        for name, value in model.named_parameters():
            torch.testing.assert_close(params[name], value.detach(), rtol=0, atol=1e-7)
            torch.testing.assert_close(momenta[name], optimizer.state[value]["momentum_buffer"], rtol=0, atol=1e-7)
    # By hand: no momentum, weight decay 0.5, lr 0.1: w - 0.1 (g + 0.5 w) = 1 - 0.1 (2 + 0.5) = 0.75.
    one, ones = {"w": torch.ones(1)}, {"w": torch.full((1,), 2.0)}
    stepped, kept = sgd_step(one, ones, {}, SGDSettings(lr=0.1, weight_decay=0.5))
    assert stepped["w"].item() == pytest.approx(0.75) and kept == {}
    # Clipping to norm 1 of a gradient with norm 5 (3, 4): (0.6, 0.8); a small one is left as it is.
    clipped = clip_gradients({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, 1.0)
    assert clipped["a"].item() == pytest.approx(0.6, abs=1e-6) and clipped["b"].item() == pytest.approx(0.8, abs=1e-6)
    assert clip_gradients({"a": torch.tensor([0.1])}, 1.0)["a"].item() == pytest.approx(0.1)


def test_every_vectorized_algorithm_runs_the_plain_sgd_step():
    assert supported_strategies() == sorted(
        ["fedavg", "fedprox", "fedper", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedopt"]
    )
    for name in supported_strategies():
        entry = ALGORITHMS[name]
        assert plain_sgd(entry) or name == "fedprox", name


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ({"strategy": "scaffold"}, "'strategy' = 'scaffold'", "fedadagrad"),
        ({"strategy": "ditto"}, "'strategy' = 'ditto'", "fedper"),
        ({"dp.mode": "server-fixed"}, "'dp.mode' = 'server-fixed'", "expected 'none'"),
        ({"dpsgd.enabled": True}, "'dpsgd.enabled' = True", "expected False"),
        ({"secagg.enabled": True}, "'secagg.enabled' = True", "expected False"),
        ({"poison.attack": "sign-flip", "poison.share": 0.2}, "'poison.attack' = 'sign-flip'", "expected 'none'"),
        ({"faults.dropout": 0.1}, "'faults.dropout' = 0.1", "expected 0.0"),
        ({"gaze.batchnorm": True}, "'gaze.batchnorm' = True", "BatchNorm2d"),
        ({"task": "classify"}, "'task' = 'classify'", "BatchNorm2d"),
    ],
)
def test_unsupported_settings_are_config_errors(tmp_path, overrides, key, expected):
    with pytest.raises(ConfigError, match="vectorized") as caught:
        run_inprocess({**UNEVEN, **overrides, "results-dir": str(tmp_path)}, vectorized=True)
    assert f"run config key {key}" in str(caught.value) and expected in str(caught.value)
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_the_default_gaze_run_is_supported():
    from simulations.registry import parse_run_config

    check_vectorized(parse_run_config({}))


def test_the_matrix_backend_refuses_unsupported_cells_before_any_runs(tmp_path):
    from simulations.matrix import Variant, plan_cells, run_matrix
    from simulations.matrix.backends import make_backend

    assert make_backend("vectorized", tmp_path).vectorized and not make_backend("inprocess", tmp_path).vectorized
    strategies = [Variant("fedavg", {"strategy": "fedavg"}), Variant("scaffold", {"strategy": "scaffold"})]
    cells = plan_cells([Variant("small", UNEVEN)], strategies, [0])
    with pytest.raises(ConfigError, match="'strategy' = 'scaffold'"):
        run_matrix(cells, tmp_path / "out", backend="vectorized", write=lambda _: None)
    assert not (tmp_path / "out").exists()
