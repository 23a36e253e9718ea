"""Secure aggregation with Flower's SecAgg+ (section secagg): the securely aggregated model equals the
plain aggregate within the quantisation bound, and the server never receives an individual update."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key

from fedpersonal.checkpoint import CLIENT_STATE_DIR, load_checkpoint, read_client_state
from fedpersonal.config import ConfigError
from fedpersonal.privacy.secagg import SecAggSettings, error_bound, quantized_weights
from simulations.inprocess import InProcessGrid, run_inprocess
from simulations.local_superlink import PrivateSuperLink
from simulations.registry import build_strategy, parse_run_config
from simulations.secagg import CLIPPED, REPLY, SecAggPlusGrid, secure_aggregation_mod

APP = Path(__file__).resolve().parents[1]
SETTINGS = SecAggSettings()  # Flower's defaults: clipping-range 8, quantization-range 2**22, modulus 2**32
FLOAT32 = 1e-7  # float32 rounding of parameters of magnitude < 1


# ---------------------------------------------------------------- toy clients: the protocol alone

SIZE = 3000
START = 0.5
EXAMPLES = {100: 10, 101: 35, 102: 80, 103: 200, 104: 60}


def toy_updates(nodes) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {node: (rng.standard_normal(SIZE) * 0.02 * (1 + i)).astype(np.float32) for i, node in enumerate(nodes)}


def toy_client(updates: dict[int, np.ndarray], examples: dict[int, int], crash=()) -> ClientApp:
    """A ClientApp (with the project's SecAgg+ mod) whose node n adds ``updates[n]`` to ``w``, counts
    3 more batches and reports ``examples[n]``; nodes in ``crash`` fail while training."""
    app = ClientApp(mods=[secure_aggregation_mod])

    @app.train()
    def train(message: Message, context) -> Message:
        node = context.node_id
        if node in crash:
            raise RuntimeError("the device crashed while training")
        received = message.content.array_records["arrays"]
        w = received["w"].numpy() + updates[node]
        count = np.asarray(received["count"].numpy() + 3)
        arrays = ArrayRecord({"w": Array(w.astype(np.float32)), "count": Array(count.astype(np.int64))})
        metrics = MetricRecord({"num-examples": examples[node], "train-loss": 0.1})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    return app


def toy_round(run_config: dict, updates, examples, crash=(), max_examples: float = 1000.0):
    """One train round of the run config's strategy over the toy clients: (aggregate, replies, grid)."""
    cfg = parse_run_config(run_config)
    strategy = build_strategy(cfg)
    grid = InProcessGrid(toy_client(updates, examples, crash), cfg.to_dict(), cfg.num_clients, record=True)
    loop_grid = SecAggPlusGrid.for_run(grid, cfg, max_examples)
    sent = ArrayRecord({"w": Array(np.full(SIZE, START, np.float32)), "count": Array(np.array(7, np.int64))})
    messages = strategy.configure_train(1, sent, ConfigRecord({"server-round": 1}), loop_grid)
    replies = list(loop_grid.send_and_receive(messages))
    aggregated, _ = strategy.aggregate_train(1, [reply for reply in replies if not reply.has_error()])
    return aggregated, replies, grid


def weighted_mean(updates, examples, nodes) -> np.ndarray:
    total = sum(examples[node] for node in nodes)
    return START + sum(updates[node].astype(np.float64) * examples[node] for node in nodes) / total


def test_the_weighted_mean_equals_flowers_fedavg_within_the_quantisation_bound():
    nodes = [100, 101, 102, 103]
    updates = toy_updates(nodes)
    plain, _, _ = toy_round({"num-clients": 4}, updates, EXAMPLES)
    secure, replies, _ = toy_round({"num-clients": 4, "secagg.enabled": True}, updates, EXAMPLES)
    assert not [reply for reply in replies if reply.has_error()]

    largest = max(float(np.abs(update).max()) for update in updates.values())
    bound = error_bound(SETTINGS, [EXAMPLES[node] for node in nodes], 1000.0, largest)
    difference = np.abs(secure["w"].numpy().astype(np.float64) - plain["w"].numpy()).max()
    assert 0 < difference <= bound + FLOAT32, f"{difference:.3g} vs bound {bound:.3g}"
    assert np.abs(secure["w"].numpy() - weighted_mean(updates, EXAMPLES, nodes)).max() <= bound + FLOAT32
    uniform = START + np.mean([updates[node] for node in nodes], axis=0)
    assert np.abs(secure["w"].numpy() - uniform).max() > 100 * bound, "the update must be weighted by num-examples"
    assert round(float(secure["count"].numpy())) == 10 == round(float(plain["count"].numpy()))  # 7 + 3 batches
    assert all(reply.content.array_records["arrays"]["count"].dtype == "int64" for reply in replies)


def test_a_rejected_and_a_crashed_client_drop_out_and_the_others_are_still_aggregated():
    nodes = list(EXAMPLES)
    updates = toy_updates(nodes)
    examples = {**EXAMPLES, 104: 5000}  # claims more samples than a client of the run can hold
    secure, replies, grid = toy_round({"num-clients": 5, "secagg.enabled": True}, updates, examples, crash={103})

    errors = {reply.metadata.src_node_id: reply.error.reason for reply in replies if reply.has_error()}
    assert set(errors) == {103, 104}
    assert "crashed" in errors[103] and "'num-examples' = 5000" in errors[104] and "rejected" in errors[104]
    survivors = [100, 101, 102]
    largest = max(float(np.abs(updates[node]).max()) for node in survivors)
    bound = error_bound(SETTINGS, [EXAMPLES[node] for node in survivors], 1000.0, largest)
    assert np.abs(secure["w"].numpy() - weighted_mean(updates, EXAMPLES, survivors)).max() <= bound + FLOAT32
    # Flower's unmask stage treats both as dropped: the survivors reveal the shares of their pairwise
    # keys, never of their private masks, so the rejected client's masked vector stays masked.
    unmask = [message for message in grid.sent if _is_unmask_request(message)]
    assert {message.metadata.dst_node_id for message in unmask} == set(survivors)
    for message in unmask:
        assert set(message.content.config_records[RECORD_KEY_CONFIGS][Key.DEAD_NODE_ID_LIST]) == {103, 104}


def _is_unmask_request(message: Message) -> bool:
    records = message.content.config_records  # (the client's mod pops the stage from what it received)
    return RECORD_KEY_CONFIGS in records and Key.DEAD_NODE_ID_LIST in records[RECORD_KEY_CONFIGS]


# ---------------------------------------------------------------- real rounds of the ServerApp and ClientApp

SMALL = {"num-clients": 3, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}
SECURE = {"secagg.enabled": True}


def pair(tmp_path_factory, config: dict, secure_extra: dict | None = None):
    """The same run without and with SecAgg+ (every message recorded): ((dir, grid), (dir, grid))."""
    root = tmp_path_factory.mktemp("runs")
    plain = run_inprocess({**config, "results-dir": str(root / "plain")}, record=True)
    secure = run_inprocess(
        {**config, **SECURE, **(secure_extra or {}), "results-dir": str(root / "secure")}, record=True
    )
    return plain, secure


@pytest.fixture(scope="module")
def fedavg(tmp_path_factory):
    return pair(tmp_path_factory, SMALL)


def model(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir.path / "model.pt")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[key].double() - b[key].double()).abs().max()) for key in a)


def train_rows(run_dir, server_round: int = 1) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir.path / "clients.jsonl").read_text().splitlines()]
    return [row for row in rows if row["phase"] == "train" and row["round"] == server_round]


def plain_updates(grid: InProcessGrid) -> dict[int, dict[str, np.ndarray]]:
    """Each client's update ``reply - sent`` in a plain run's recorded train round."""
    sent = next(message for message in grid.sent if message.metadata.message_type == "train")
    received = sent.content.array_records["arrays"]
    updates = {}
    for reply in grid.replies:
        if reply.metadata.message_type == "train" and "arrays" in reply.content.array_records:
            arrays = reply.content.array_records["arrays"]
            updates[reply.metadata.src_node_id] = {
                key: arrays[key].numpy().astype(np.float64) - received[key].numpy().astype(np.float64) for key in arrays
            }
    return updates


def bound_of(run_dir, plain_grid: InProcessGrid, max_weight: float, weights: list[float] | None = None) -> float:
    """The quantisation bound of a run's first round: its clients' weights, their largest update entry."""
    largest = max(float(np.abs(v).max()) for update in plain_updates(plain_grid).values() for v in update.values())
    weights = weights or [float(row["num-examples"]) for row in train_rows(run_dir)]
    return error_bound(SETTINGS, weights, max_weight, largest)


def test_secure_fedavg_equals_plain_fedavg_within_the_quantisation_bound(fedavg):
    (plain, plain_grid), (secure, _) = fedavg
    bound = bound_of(secure, plain_grid, max_weight=30.0)  # automatic max-weight: samples-per-client
    difference = max_difference(model(plain), model(secure))
    assert 0 < difference <= bound + FLOAT32, f"{difference:.3g} vs bound {bound:.3g}"
    assert bound < 1e-5  # Flower's defaults, 3 clients of 24 examples: 3 (16 + u) / (2**22 * 2.4)
    rows = train_rows(secure)
    assert len(rows) == 3 and all(row[CLIPPED] == 0 for row in rows)
    assert [row["train-loss"] for row in rows] == [row["train-loss"] for row in train_rows(plain)]


def test_the_server_never_receives_an_individual_update(fedavg):
    (_, plain_grid), (_, grid) = fedavg
    updates = plain_updates(plain_grid)  # the same clients trained the same round without SecAgg+
    train_replies = [reply for reply in grid.replies if reply.metadata.message_type == "train"]
    assert len(train_replies) == 4 * 3  # four SecAgg+ stages, three clients
    masked_seen = 0
    for reply in train_replies:
        content = reply.content
        assert "arrays" not in content.array_records
        assert all(len(record) == 0 for record in content.array_records.values())  # fitres.parameters emptied
        masked = content.config_records[RECORD_KEY_CONFIGS].get(Key.MASKED_PARAMETERS)
        if masked is None:
            continue
        masked_seen += 1
        node = reply.metadata.src_node_id
        keys = json.loads(str(content.config_records[REPLY]["keys"]))
        assert keys == list(updates[node])  # names only: every shared key, in order
        d = quantized_weights([24.0], 30.0, SETTINGS.quantization_range)[0]
        vectors = []
        for key, data in zip(keys, masked[1:], strict=True):
            vector = bytes_to_ndarray(data).astype(np.float64)
            plain = (d * updates[node][key] + SETTINGS.clipping_range) * SETTINGS.quantization_range / 16
            assert np.mean(np.abs(vector - plain) < 2) < 0.01  # the client's quantized update is not there ...
            vectors.append(vector.ravel())
        spread = np.concatenate(vectors) / SETTINGS.modulus_range  # ... only values uniform modulo 2**32
        assert 0.45 < spread.mean() < 0.55 and spread.min() >= 0 and spread.max() < 1
    assert masked_seen == 3


def test_two_secure_rounds_leave_no_protocol_state_behind(tmp_path):
    run_dir, grid = run_inprocess({**SMALL, **SECURE, "num-rounds": 2, "results-dir": str(tmp_path)})
    rounds = [json.loads(line) for line in (run_dir.path / "rounds.jsonl").read_text().splitlines()]
    assert [row.get("skipped") for row in rounds[1:]] == [False, False]
    assert all("error" not in row for server_round in (1, 2) for row in train_rows(run_dir, server_round))
    for context in grid.contexts.values():  # the clients' SecAgg+ keys and shares are gone
        assert RECORD_KEY_STATE not in context.state


def test_a_personalized_algorithm_aggregates_only_its_shared_keys(tmp_path_factory):
    (plain, plain_grid), (secure, grid) = pair(tmp_path_factory, {**SMALL, "strategy": "fedper"})
    final_plain, final_secure = model(plain), model(secure)
    assert max_difference(final_plain, final_secure) <= bound_of(secure, plain_grid, 30.0) + FLOAT32
    masked_keys = [
        json.loads(str(reply.content.config_records[REPLY]["keys"]))
        for reply in grid.replies
        if REPLY in reply.content.config_records
    ]
    assert len(masked_keys) == 3 and all(keys and not any(k.startswith("head.") for k in keys) for keys in masked_keys)
    states = sorted((secure.path / CLIENT_STATE_DIR).glob("*.bin"))
    assert states and all(RECORD_KEY_STATE not in read_client_state(path) for path in states)


def test_fedadam_with_secure_aggregation_equals_fedadam_without(tmp_path_factory):
    (plain, plain_grid), (secure, _) = pair(tmp_path_factory, {**SMALL, "strategy": "fedadam"})
    bound = bound_of(secure, plain_grid, 30.0)
    # The optimizer's first moment is (1 - beta1) times the mean update; the first step
    # eta m / (sqrt(v) + tau) moves by at most eta (1 - beta1) / tau per unit of mean update.
    moments = [load_checkpoint(run.path)["strategy"]["optimizer"]["state"] for run in (plain, secure)]
    for index, state in moments[0].items():
        m_plain, m_secure = state["m"].double(), moments[1][index]["m"].double()
        assert float((m_plain - m_secure).abs().max()) <= (1 - 0.9) * bound + FLOAT32
    lipschitz = 0.01 * (1 - 0.9) / 1e-3
    assert max_difference(model(plain), model(secure)) <= lipschitz * bound + FLOAT32


def test_client_side_differential_privacy_composes_with_secure_aggregation(tmp_path_factory):
    dp = {"dp.mode": "client-fixed", "dp.clipping-norm": 0.5, "dp.noise-multiplier": 0.5}
    (plain, plain_grid), (secure, _) = pair(tmp_path_factory, {**SMALL, **dp})
    bound = bound_of(secure, plain_grid, max_weight=1.0, weights=[1.0, 1.0, 1.0])  # uniform weights under DP
    assert max_difference(model(plain), model(secure)) <= bound + FLOAT32  # the same noise, the same clipping
    epsilons = [json.loads((run.path / "summary.json").read_text())["privacy"]["dp-epsilon"] for run in (plain, secure)]
    assert epsilons[0] == epsilons[1] > 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": "krum"}, "'secagg.enabled' = True is invalid with strategy 'krum'"),
        ({"strategy": "scaffold"}, "does not average the updates"),
        ({"dp.mode": "server-fixed"}, "the server cannot clip updates it never sees"),
        ({"dp.mode": "server-adaptive"}, "expected dp.mode 'client-fixed' or 'client-adaptive'"),
        ({"num-clients": 4, "fraction-train": 0.3}, "at least 2 clients per round"),
        ({"secagg.quantization-range": 2**31 - 1}, "could overflow"),
        ({"secagg.num-shares": 4}, "a round samples 3 clients"),
        ({"secagg.num-shares": 3, "secagg.reconstruction-threshold": 3}, "rejected by Flower's SecAgg+"),
        ({"secagg.modulus-range": 3 * 2**20}, "'secagg.modulus-range' = 3145728 is invalid"),
        ({"secagg.num-shares": 2.5}, "'secagg.num-shares' = 2.5 is invalid"),
    ],
)
def test_settings_secure_aggregation_cannot_honour_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_run_config({"num-clients": 3, **SECURE, **config})


def test_client_side_dp_and_the_averaging_strategies_are_accepted():
    for strategy in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedopt", "fedper", "ditto"):
        parse_run_config({"num-clients": 3, "strategy": strategy, **SECURE})
    parse_run_config({"num-clients": 3, "dp.mode": "client-adaptive", **SECURE})


# ---------------------------------------------------------------- the same round under `flwr run`


def test_secure_fedavg_under_flwr_run_equals_plain_fedavg(fedavg, tmp_path):
    (plain, plain_grid), _ = fedavg
    results = tmp_path / "runs"
    with PrivateSuperLink(tmp_path / "flwr-home", num_supernodes=3) as link:
        done = link.run(
            APP,
            "num-clients=3 num-rounds=1 samples-per-client=30 local-epochs=1 secagg.enabled=true "
            f"results-dir='{results}'",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Secure aggregation completed" in done.stdout, done.stdout + done.stderr
    (run_dir,) = [path for path in results.iterdir() if path.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "clients.jsonl").read_text().splitlines()]
    trained = [row for row in rows if row["phase"] == "train"]
    assert len(trained) == 3 and not [row for row in rows if "error" in row or "rejected" in row]
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 1
    secure = torch.load(run_dir / "model.pt")
    largest = max(float(np.abs(v).max()) for update in plain_updates(plain_grid).values() for v in update.values())
    bound = error_bound(SETTINGS, [float(row["num-examples"]) for row in trained], 30.0, largest)
    difference = max_difference(model(plain), secure)
    assert 0 < difference <= bound + FLOAT32, f"{difference:.3g} vs bound {bound:.3g}"
