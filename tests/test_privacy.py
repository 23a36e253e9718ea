"""Client-level differential privacy (section dp): noise, clipping and accounting, checked on the
actual messages and against published values."""

import json
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from scipy.optimize import brentq
from scipy.stats import norm

from fedpersonal.config import ConfigError
from fedpersonal.privacy.accounting import ReleasePlan, noise_multiplier
from simulations.inprocess import InProcessGrid, run_inprocess
from simulations.registry import build_strategy, parse_run_config

SIZE = 40_000  # entries of the toy model: enough to measure a standard deviation to ~1 %


def toy_arrays() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(SIZE, np.float32)), "count": Array(np.array(7, np.int64))})


def updating_client(updates: dict[int, np.ndarray]):
    """A ClientApp stand-in: node ``n`` sends back the received arrays plus ``updates[n]`` (and a
    changed counter, which must not be released)."""

    def app(message: Message, context) -> Message:
        received = message.content.array_records["arrays"]
        w = received["w"].numpy() + updates[context.node_id]
        arrays = ArrayRecord({"w": Array(w.astype(np.float32)), "count": Array(np.array(99, np.int64))})
        metrics = MetricRecord({"num-examples": 10 + context.node_id, "train-loss": 0.0})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    return app


def one_round(run_config: dict, updates: dict[int, np.ndarray]):
    """One private aggregation of the toy model: (sent, aggregated, metrics, strategy)."""
    cfg = parse_run_config(run_config)
    strategy = build_strategy(cfg)
    grid = InProcessGrid(updating_client(updates), cfg.to_dict(), cfg.num_clients)
    sent = toy_arrays()
    messages = strategy.configure_train(1, sent, ConfigRecord({"server-round": 1}), grid)
    replies = list(grid.send_and_receive(messages))
    aggregated, metrics = strategy.aggregate_train(1, replies)
    return sent, aggregated, metrics, strategy


def zero_updates(count: int) -> dict[int, np.ndarray]:
    return {100 + index: np.zeros(SIZE, np.float32) for index in range(count)}


DP = {"num-clients": 4, "dp.mode": "server-fixed", "dp.noise-multiplier": 2.0, "dp.clipping-norm": 0.5}


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed", "server-adaptive"])
def test_the_noise_added_has_the_configured_standard_deviation(mode):
    np.random.seed(20261203)  # Flower draws its noise from the global RNG: fix it, whatever ran before
    run_config = {**DP, "dp.mode": mode, "dp.noise-multiplier": 0.8, "dp.clipped-count-std": 1.0}
    sent, aggregated, metrics, strategy = one_round(run_config, zero_updates(4))
    noise = aggregated["w"].numpy().astype(np.float64)  # every client sent the model back unchanged
    expected = strategy.wrapper.noise_multiplier * 0.5 / 4  # Flower's z C / m (adaptive: z of the updates)
    assert np.std(noise) == pytest.approx(expected, rel=0.02) and abs(np.mean(noise)) < 4 * expected / SIZE**0.5
    assert metrics["dp-noise-std"] == pytest.approx(expected)
    assert int(aggregated["count"].numpy()) == 7, "a counter must keep the server's value, never a client's"


def test_server_side_clipping_bounds_every_update_that_reaches_the_mean():
    rng = np.random.default_rng(0)
    norms = {100: 0.1, 101: 0.5, 102: 3.0, 103: 40.0}
    updates = {}
    for node, size in norms.items():
        direction = rng.standard_normal(SIZE)
        updates[node] = (direction / np.linalg.norm(direction) * size).astype(np.float32)
    run_config = {**DP, "dp.noise-multiplier": 1e-6}
    sent, aggregated, _, strategy = one_round(run_config, updates)
    # the mean of the clipped updates: min(1, C / |u|) u, averaged uniformly (not by num-examples)
    expected = sum(u * min(1.0, 0.5 / norms[node]) for node, u in updates.items()) / 4
    assert np.allclose(aggregated["w"].numpy(), expected, atol=1e-5)
    weighted = sum(u * min(1.0, 0.5 / norms[n]) * (10 + n) for n, u in updates.items()) / sum(10 + n for n in norms)
    assert not np.allclose(aggregated["w"].numpy(), weighted, atol=1e-5)


@pytest.mark.parametrize("strategy", ["fedavg", "fedper"])
def test_client_side_clipping_bounds_every_update_that_leaves_a_device(strategy):
    run_config = {
        "task": "gaze", "strategy": strategy, "num-clients": 3, "num-rounds": 2, "samples-per-client": 40,
        "local-epochs": 1, "lr": 0.1, "dp.mode": "client-fixed", "dp.clipping-norm": 0.05, "dp.noise-multiplier": 0.1,
    }  # fmt: skip
    _, grid = run_inprocess(run_config, record=True)
    sent = {m.metadata.message_id: m for m in grid.sent if m.metadata.message_type == "train"}
    norms = []
    for reply in grid.replies:
        if reply.metadata.message_type != "train":
            continue
        received = sent[reply.metadata.reply_to_message_id].content.array_records["arrays"]
        arrays = reply.content.array_records["arrays"]
        update = [arrays[k].numpy() - received[k].numpy() for k in arrays if arrays[k].numpy().dtype.kind == "f"]
        norms.append(float(np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update))))
    assert len(norms) == 6 and max(norms) <= 0.05 * (1 + 1e-5)
    assert min(norms) == pytest.approx(0.05, rel=1e-4), "local training moves more than 0.05: every update is clipped"


def test_a_server_optimizer_steps_on_the_noisy_mean_never_noise_on_its_step():
    # FedAvgM with lr 1 and no momentum returns the noisy mean itself ...
    config = {**DP, "strategy": "fedavgm", "fedavgm.momentum": 0.0, "fedavgm.server-lr": 1.0}
    _, aggregated, metrics, _ = one_round(config, zero_updates(4))
    assert np.std(aggregated["w"].numpy()) == pytest.approx(metrics["dp-noise-std"], rel=0.02)
    # ... FedAdam normalises it: no coordinate moves by more than about eta, although the noise is 2.5x eta
    adam = {**DP, "strategy": "fedadam", "fedadam.server-lr": 0.1}
    _, aggregated, metrics, _ = one_round(adam, zero_updates(4))
    assert metrics["dp-noise-std"] == pytest.approx(0.25)
    assert np.abs(aggregated["w"].numpy()).max() <= 0.1 * 1.001


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Epsilon of a mu-GDP mechanism at delta (Balle & Wang 2018, Thm 8; Dong, Roth & Su 2019):
    R Gaussian releases with noise multiplier z compose to mu = sqrt(R) / z exactly."""
    return brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta, 0, 60)


@pytest.mark.parametrize(("z", "rounds", "delta"), [(4.530877, 1, 1e-6), (1.0, 10, 1e-5), (5.0, 100, 1e-5)])
def test_the_accountant_bounds_the_exact_epsilon_of_the_gaussian_mechanism_tightly(z, rounds, delta):
    plan = ReleasePlan(population=10, sample_size=10, delta=delta, amplify=True)  # m = N: no amplification
    exact = exact_gaussian_epsilon(math.sqrt(rounds) / z, delta)
    assert exact <= plan.epsilon(z, rounds) <= 1.1 * exact


def test_the_accountant_agrees_with_the_published_dp_sgd_mnist_value():
    """TensorFlow Privacy's MNIST tutorial: 60,000 examples, batches of 256 (Poisson), noise 1.1,
    60 epochs, delta 1e-5: epsilon 2.92 with the RDP-to-DP conversion of Mironov (2017). The same RDP
    curve with the conversion of Balle et al. (2020), which dp-accounting uses, can only be lower."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    config = PrivacyConfig(1e-5, 60_000, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.POISSON)
    accountant = RdpAccountant(config)
    accountant.compose(GaussianPrivacyEvent(1.1, 256, 60_000), count=math.ceil(60 * 60_000 / 256))
    assert 2.4 < accountant.get_epsilon(1e-5) < 2.92


def test_sampling_fewer_clients_amplifies_privacy():
    full = ReleasePlan(population=100, sample_size=100, delta=1e-5, amplify=True)
    sampled = ReleasePlan(population=100, sample_size=10, delta=1e-5, amplify=True)
    unamplified = ReleasePlan(population=100, sample_size=10, delta=1e-5, amplify=False)
    assert sampled.epsilon(1.0, 50) < 0.5 * full.epsilon(1.0, 50)
    assert unamplified.epsilon(1.0, 50) == pytest.approx(full.epsilon(1.0, 50))


def test_a_target_epsilon_fixes_the_noise_multiplier_and_the_run_reports_it(tmp_path):
    run_config = {
        "task": "gaze", "num-clients": 3, "num-rounds": 3, "samples-per-client": 30, "local-epochs": 1,
        "dp.mode": "server-fixed", "dp.target-epsilon": 8.0, "dp.delta": 1e-3, "results-dir": str(tmp_path),
    }  # fmt: skip
    cfg = parse_run_config(run_config)
    z = noise_multiplier(cfg)
    plan = ReleasePlan(3, 3, 1e-3, True)
    assert plan.epsilon(z, 3) <= 8.0 < plan.epsilon(z / 1.002, 3)
    run_dir, _ = run_inprocess(run_config)
    rounds = [json.loads(line) for line in (run_dir.path / "rounds.jsonl").read_text().splitlines()]
    epsilons = [row["dp-epsilon"] for row in rounds[1:]]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(8.0, rel=0.01) and epsilons[-1] <= 8.0
    summary = json.loads((run_dir.path / "summary.json").read_text())
    assert summary["privacy"]["dp-epsilon"] == epsilons[-1]
    assert summary["privacy"]["dp-noise-multiplier"] == pytest.approx(z, rel=1e-12)


def test_the_accountant_and_the_adaptive_norm_survive_a_checkpoint():
    config = {**DP, "dp.mode": "server-adaptive", "dp.noise-multiplier": 0.8, "dp.clipped-count-std": 1.0}
    _, _, metrics, strategy = one_round(config, zero_updates(4))
    state = strategy.state_dict()
    restored = build_strategy(parse_run_config(config))
    restored.load_state_dict(state)
    assert restored.accountant.num_releases == 1 and restored.wrapper.clipping_norm == strategy.wrapper.clipping_norm
    assert restored.wrapper.clipping_norm != 0.5  # it adapted (no update was clipped: the norm shrinks)


def test_bad_dp_settings_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match="dp.mode"):
        parse_run_config({"strategy": "scaffold", "dp.mode": "server-fixed"})
    with pytest.raises(ConfigError, match="dp.target-epsilon"):
        noise_multiplier(parse_run_config({"dp.mode": "server-fixed", "dp.target-epsilon": 1e-9, "dp.delta": 1e-12}))
    with pytest.raises(ConfigError, match="'dp'"):  # adaptive: z must stay below 2 x the count's noise
        build_strategy(parse_run_config({"dp.mode": "server-adaptive", "dp.noise-multiplier": 5.0}))
    with pytest.raises(ConfigError, match="dp.mode"):
        parse_run_config({"dp.mode": "local"})


def test_no_dp_leaves_the_strategies_as_they_were():
    strategy = build_strategy(parse_run_config({}))
    assert type(strategy).__name__ == "FedAvg" and strategy.weighted_by_key == "num-examples"
    adam = build_strategy(parse_run_config({"strategy": "fedadam"}))
    assert adam.averaging is None and build_strategy(parse_run_config({"strategy": "fedadam", **DP})).averaging


@pytest.mark.parametrize(("start", "moves"), [(0.5, "up"), (20.0, "down")])
def test_adaptive_clipping_tracks_the_target_quantile_of_the_update_norms(start, moves):
    """Updates of norms 1, 2, 3, 4 and target quantile 0.5: the norm heads for (2, 3] from either side
    (Flower's own norm bit would drive it away: all clipped, the norm would shrink)."""
    rng = np.random.default_rng(1)
    updates = {}
    for node, size in zip(range(100, 104), (1.0, 2.0, 3.0, 4.0), strict=True):
        direction = rng.standard_normal(SIZE)
        updates[node] = (direction / np.linalg.norm(direction) * size).astype(np.float32)
    config = {
        **DP, "dp.mode": "server-adaptive", "dp.clipping-norm": start, "dp.noise-multiplier": 0.01,
        "dp.clipped-count-std": 0.01, "dp.clip-lr": 0.5,
    }  # fmt: skip
    cfg = parse_run_config(config)
    strategy = build_strategy(cfg)
    grid = InProcessGrid(updating_client(updates), cfg.to_dict(), cfg.num_clients)
    norms = [start]
    for server_round in range(1, 16):
        messages = strategy.configure_train(
            server_round, toy_arrays(), ConfigRecord({"server-round": server_round}), grid
        )
        strategy.aggregate_train(server_round, list(grid.send_and_receive(messages)))
        norms.append(strategy.wrapper.clipping_norm)
    assert (norms[1] > norms[0]) if moves == "up" else (norms[1] < norms[0])
    assert 1.9 < norms[-1] < 3.1, norms
