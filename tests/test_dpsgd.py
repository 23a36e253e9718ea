"""Sample-level DP-SGD with Opacus (section dpsgd): per-example clipping, the noise of a step, the
accountant across rounds, a federated run, and the configuration errors. Tests that need Opacus (the
optional extra 'opacus') skip without it."""

import json
import sys

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fedpersonal.config import ConfigError
from fedpersonal.privacy.dpsgd import EPSILON, STATE_RECORD, AccountantHistory, state_metrics
from simulations.inprocess import run_inprocess
from simulations.registry import parse_run_config


@pytest.fixture
def opacus():
    return pytest.importorskip("opacus")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))


def mse(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.mean((net(batch[0]) - batch[1]) ** 2)


def tiny_data(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return 3 * torch.randn(count, 6, generator=generator), torch.randn(count, 2, generator=generator)


def dp_step(model: nn.Module, batch, noise: float, clip: float, expected: int, generator=None) -> list[torch.Tensor]:
    """The gradient one DP-SGD step applies (p.grad after the DP optimizer's step, lr 0: no move)."""
    from fedpersonal.privacy.opacus_sgd import private_sgd

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with private_sgd(model, optimizer, noise, clip, expected, generator) as (private_model, private_optimizer):
        private_optimizer.zero_grad(set_to_none=True)
        mse(private_model, batch).backward()
        private_optimizer.step()
        return [p.grad.detach().clone() for p in model.parameters()]


def per_example_gradients(model: nn.Module, batch) -> list[list[torch.Tensor]]:
    """Each example's gradient, one autograd pass per example (no Opacus)."""
    gradients = []
    for index in range(len(batch[0])):
        model.zero_grad()
        mse(model, tuple(t[index : index + 1] for t in batch)).backward()
        gradients.append([p.grad.detach().clone() for p in model.parameters()])
    return gradients


def flat_norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


def test_every_example_gradient_is_clipped_to_max_grad_norm(opacus):
    model, batch, clip = tiny_model(), tiny_data(8), 4.0
    exact = per_example_gradients(model, batch)
    norms = [flat_norm(g) for g in exact]
    assert min(norms) < clip < max(norms)  # some examples are clipped, some are not
    for index, (gradient, norm) in enumerate(zip(exact, norms)):  # one example a step: its gradient, clipped
        applied = dp_step(model, tuple(t[index : index + 1] for t in batch), 0.0, clip, 1)
        assert flat_norm(applied) == pytest.approx(min(norm, clip), rel=1e-4)
        assert flat_norm(applied) <= clip * (1 + 1e-5)
        scale = min(1.0, clip / norm)
        for a, g in zip(applied, gradient):
            torch.testing.assert_close(a, g * scale, rtol=1e-4, atol=1e-6)
    whole = dp_step(model, batch, 0.0, clip, 8)  # a batch: the mean of the clipped example gradients
    clipped = [[g * min(1.0, clip / n) for g in gradient] for gradient, n in zip(exact, norms)]
    for position, applied in enumerate(whole):
        torch.testing.assert_close(applied, sum(c[position] for c in clipped) / 8, rtol=1e-4, atol=1e-6)
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "summed_grad") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_the_noise_of_a_step_has_std_noise_multiplier_times_max_grad_norm_over_the_batch(opacus):
    torch.manual_seed(0)
    model = nn.Linear(200, 200)  # 40,200 entries: the std to about 1 %
    batch = (torch.zeros(4, 200), torch.zeros(4, 200))
    for p in model.parameters():  # a zero output and target: every example's gradient is zero
        nn.init.zeros_(p)
    noise, clip, expected = 0.8, 0.5, 4
    applied = torch.cat([g.flatten() for g in dp_step(model, batch, noise, clip, expected, torch.Generator())])
    assert float(applied.std()) == pytest.approx(noise * clip / expected, rel=0.03)
    assert abs(float(applied.mean())) < 3 * noise * clip / expected / len(applied) ** 0.5


def private_config(**extra):
    run_config = {"batch-size": 8, "local-epochs": 2, "dpsgd.enabled": True, "dpsgd.noise-multiplier": 1.1}
    return parse_run_config({**run_config, "dpsgd.delta": 1e-4, **extra})


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_opacus_accountant_for_the_steps_taken_and_grows_over_rounds(opacus, accountant):
    from opacus.accountants import create_accountant

    from fedpersonal.privacy.opacus_sgd import train_private

    cfg = private_config(**{"dpsgd.accountant": accountant})
    model, data, state = tiny_model(), tiny_data(64), RecordDict()
    reported = []
    for server_round in (1, 2):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        loss = train_private(model, data, mse, optimizer, 2, torch.Generator().manual_seed(server_round), cfg, state)
        assert loss == loss and loss > 0  # a number (an empty Poisson sample adds no nan)
        metrics = state_metrics(state)
        steps = 2 * server_round * 8  # 2 epochs of int(1 / q) steps, q = 8 / 64
        expected = create_accountant(mechanism=accountant)
        expected.history = [(1.1, 8 / 64, steps)]
        assert metrics["dpsgd-steps"] == steps and metrics["dpsgd-noise-multiplier"] == 1.1
        assert metrics[EPSILON] == pytest.approx(expected.get_epsilon(1e-4), rel=1e-9)
        reported.append(metrics[EPSILON])
    assert 0 < reported[0] < reported[1]
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_a_target_epsilon_picks_the_noise_for_the_clients_planned_steps(opacus):
    from opacus.accountants import RDPAccountant

    from fedpersonal.privacy.opacus_sgd import client_noise_multiplier

    cfg = private_config(**{"dpsgd.target-epsilon": 2.0, "num-rounds": 3, "local-epochs": 1})
    z = client_noise_multiplier(cfg, 64)
    accountant = RDPAccountant()
    accountant.history = [(z, 8 / 64, 3 * 8)]  # 3 rounds of 1 epoch of 8 steps
    assert 1.95 < accountant.get_epsilon(1e-4) <= 2.0
    with pytest.raises(ConfigError, match="dpsgd.target-epsilon"):
        client_noise_multiplier(private_config(**{"dpsgd.target-epsilon": 1e-7}), 64)


def test_a_gaze_run_reports_each_clients_epsilon_which_grows_over_rounds(opacus, tmp_path):
    from opacus.accountants import RDPAccountant

    run_config = {
        "task": "gaze", "num-clients": 3, "num-rounds": 2, "samples-per-client": 30, "local-epochs": 1,
        "batch-size": 8, "dpsgd.enabled": True, "dpsgd.delta": 1e-3, "results-dir": str(tmp_path),
        "client-state": "disk",  # the accountant's history goes through the saved client state
    }  # fmt: skip
    run_dir, _ = run_inprocess(run_config)
    rows = [json.loads(line) for line in (run_dir.path / "clients.jsonl").read_text().splitlines()]
    train = [row for row in rows if row["phase"] == "train"]
    assert len(train) == 6 and all(EPSILON in row for row in train)
    for partition in range(3):
        mine = sorted((row for row in train if row["partition-id"] == partition), key=lambda row: row["round"])
        rate = 8 / mine[0]["num-examples"]
        for row in mine:
            accountant = RDPAccountant()
            accountant.history = [(1.0, rate, row["round"] * int(1 / rate))]
            assert row[EPSILON] == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9)
        assert mine[0][EPSILON] < mine[1][EPSILON]
    rounds = [json.loads(line) for line in (run_dir.path / "rounds.jsonl").read_text().splitlines()]
    assert [row["dpsgd-epsilon-max"] for row in rounds[1:]] == [
        max(row[EPSILON] for row in train if row["round"] == r) for r in (1, 2)
    ]
    summary = json.loads((run_dir.path / "summary.json").read_text())
    assert summary["sample-privacy"]["dpsgd-epsilon-max"] == rounds[-1]["dpsgd-epsilon-max"]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"strategy": "fedprox"}, "dpsgd.enabled"),  # a proximal term: not the plain SGD loop
        ({"strategy": "scaffold"}, "dpsgd.enabled"),
        ({"strategy": "pfedme"}, "dpsgd.enabled"),
        ({"gaze.batchnorm": True}, "dpsgd.enabled"),  # BatchNorm mixes the examples of a batch
        ({"task": "classify"}, "dpsgd.enabled"),  # its CNN has BatchNorm
        ({"dpsgd.accountant": "gdp"}, "dpsgd.accountant"),
        ({"dpsgd.max-grad-norm": 0.0}, "dpsgd.max-grad-norm"),
        ({"dpsgd.noise-multiplier": 0.0}, "dpsgd.noise-multiplier"),
        ({"dpsgd.delta": 1.0}, "dpsgd.delta"),
        ({"dpsgd.target-epsilon": -1.0}, "dpsgd.target-epsilon"),
    ],
)
def test_bad_dpsgd_settings_are_config_errors_naming_the_key(opacus, extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_run_config({"dpsgd.enabled": True, **extra})


def test_the_plain_sgd_algorithms_accept_dpsgd(opacus):
    for strategy in ("fedavg", "fedper", "lg-fedavg", "fedbn", "local", "fedadam", "krum"):
        assert parse_run_config({"strategy": strategy, "dpsgd.enabled": True})


def test_another_accountant_than_the_clients_history_is_a_config_error():
    state = RecordDict({STATE_RECORD: ConfigRecord({"mechanism": "rdp", "epsilon": 1.0, "delta": 1e-5})})
    with pytest.raises(ConfigError, match="dpsgd.accountant"):
        AccountantHistory.from_state(state, "prv")
    assert AccountantHistory.from_state(state, "rdp").entries == ()


def test_without_opacus_dpsgd_is_a_config_error_and_the_rest_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus now raises ImportError
    with pytest.raises(ConfigError, match=r"dpsgd\.enabled.*fedpersonal\[opacus\]"):
        parse_run_config({"dpsgd.enabled": True})
    assert parse_run_config({}).to_dict()["dpsgd.enabled"] is False
