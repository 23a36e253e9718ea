"""Run-config key ``device``: its validation, and every tensor of a run on the configured device.

Without a GPU the placement is checked on a virtual second device (:mod:`virtual_device`): the
resolver is patched to return it, so code that forgets a ``.to(device)`` or hard-codes the CPU mixes
devices in an operation, reads a device tensor on the host, or runs its convolutions on the host, and
the test says where.
"""

import io
import re

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from small_configs import small_run
from virtual_device import VIRTUAL, virtual_device

import fedpersonal.device as device_module
from fedpersonal import model_pool
from fedpersonal.config import ConfigError, RunConfig, parse_config
from fedpersonal.device import resolve_device, to_device, to_host
from fedpersonal.model_pool import seeded_model
from fedpersonal.params import to_arrays
from simulations.client_app import client_for
from simulations.inprocess import InProcessGrid, run_inprocess
from simulations.registry import ALGORITHMS, build_client, build_strategy, parse_run_config

# --- the key ------------------------------------------------------------------------------------


@pytest.fixture()
def fresh_resolution():
    """Forget the names resolved so far (resolution is cached per process)."""
    device_module._resolve.cache_clear()
    yield
    device_module._resolve.cache_clear()


@pytest.fixture()
def no_gpu(monkeypatch, fresh_resolution):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_a_gpu_the_machine_lacks_is_a_config_error_naming_the_key(no_gpu, name):
    expected = rf"run config key 'device' = '{name}' asks for a GPU, but torch.cuda.is_available\(\) is False"
    with pytest.raises(ConfigError, match=expected + r".*; expected 'auto' or 'cpu' here"):
        parse_config({"device": name})


def test_a_gpu_beyond_the_gpus_there_are_is_a_config_error(monkeypatch, fresh_resolution):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    expected = r"'device' = 'cuda:7' names GPU 7, but this process sees 2 GPU\(s\); expected 'cuda' or one of"
    with pytest.raises(ConfigError, match=expected + r" \['cuda:0', 'cuda:1'\]"):
        parse_config({"device": "cuda:7"})
    assert resolve_device(parse_config({"device": "cuda:1"})) == torch.device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cpu:0", " cpu", "meta", "mps", ""])
def test_malformed_device_names_are_rejected_naming_what_is_allowed(name, fresh_resolution):
    expected = (
        rf"run config key 'device' = {re.escape(repr(name))} is invalid; expected 'auto'.*'cpu', 'cuda' or 'cuda:N'"
    )
    with pytest.raises(ConfigError, match=expected):
        parse_config({"device": name})
    with pytest.raises(ConfigError, match=expected):  # a RunConfig built in code is checked when resolved
        resolve_device(RunConfig(device=name))
    with pytest.raises(ConfigError, match="'device' = 0 has type int; expected str"):
        parse_config({"device": 0})


def test_auto_is_cuda_when_available_else_the_cpu_and_is_resolved_once(monkeypatch, fresh_resolution):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: asked.append(1) is None and False)
    assert resolve_device(RunConfig()) == torch.device("cpu")
    parse_config({})
    resolve_device(RunConfig(device="auto"))
    assert len(asked) == 1
    device_module._resolve.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(RunConfig()) == torch.device("cuda")
    assert resolve_device(RunConfig(device="cpu")) == torch.device("cpu")


def test_a_run_asking_for_a_missing_gpu_stops_with_the_config_error_before_training(no_gpu, tmp_path):
    with pytest.raises(ConfigError, match="run config key 'device' = 'cuda' asks for a GPU"):
        run_inprocess({"device": "cuda", "num-clients": 2, "results-dir": str(tmp_path)})
    assert not list(tmp_path.iterdir())  # no run directory was created
    context = Context(
        0, 0, {"partition-id": 0, "num-partitions": 2}, RecordDict(), {"device": "cuda", "num-clients": 2}
    )
    with pytest.raises(ConfigError, match="run config key 'device' = 'cuda'"):  # the ClientApp says the same
        client_for(context)


def test_to_device_and_to_host_on_the_cpu():
    tensors = (torch.arange(4), torch.ones(2, 2))
    assert all(a is b for a, b in zip(to_device(tensors, torch.device("cpu")), tensors))  # no copy
    state = {
        "state": {0: {"step": 3, "m": torch.ones(2)}},
        "groups": [{"lr": 0.1, "params": [0]}],
        "t": (torch.zeros(1),),
    }
    host = to_host(state)
    assert host["groups"] == state["groups"] and host["state"][0]["step"] == 3
    assert torch.equal(host["state"][0]["m"], torch.ones(2)) and isinstance(host["t"], tuple)


# --- every tensor on the configured device -------------------------------------------------------


@pytest.fixture()
def virtual(monkeypatch):
    """Every run config resolves to the virtual device; no model pooled by another test is reused."""
    monkeypatch.setattr(device_module, "_resolve", lambda name: VIRTUAL)
    monkeypatch.setattr(model_pool, "_POOL", {})


@pytest.fixture()
def grid():
    """Two nodes (the in-process grid also sets Flower's task identity, which Messages need)."""
    return InProcessGrid(client_app=None, run_config={}, num_nodes=2)


def tensors_of(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    return [t for item in tree for t in tensors_of(item)] if isinstance(tree, list | tuple) else []


def message(arrays: ArrayRecord, kind: str) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "lr": 0.03})})
    return Message(content, dst_node_id=100, message_type=kind)


def test_a_client_step_trains_evaluates_and_adapts_on_the_configured_device(virtual, grid):
    cfg = parse_run_config({**small_run("fedavg", "gaze"), "gaze.batchnorm": True, "adapt.method": "adabn"})
    context = Context(0, 100, {"partition-id": 0, "num-partitions": 2}, RecordDict(), {})
    with virtual_device() as placement:
        client = build_client(cfg, context)
        sent = to_arrays(seeded_model(client.task, cfg.seed))  # host arrays, as the server sends them
        reply = client.train(message(sent, MessageType.TRAIN))
        evaluated = client.evaluate(message(reply.content["arrays"], MessageType.EVALUATE))
        model = client.model_of(sent)
        held = [*model.parameters(), *model.buffers(), *client.data.train, *client.data.test]
        assert {t.device for t in held} == {VIRTUAL}
    assert placement.violations == [] and placement.host_compute == []
    assert placement.device_compute > 0
    assert sorted(reply.content["arrays"].keys()) == sorted(sent.keys())  # what leaves is host arrays
    assert evaluated.content["metrics"]["personalized-angular-error"] > 0


SERVER_OPTIMIZERS = ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedopt"]


def train_reply(arrays: dict[str, torch.Tensor], num_examples: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": num_examples})})
    return Message(content, dst_node_id=100, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("name", SERVER_OPTIMIZERS)
def test_the_server_optimizer_steps_and_keeps_its_state_on_the_configured_device(name, virtual, grid):
    x = {
        "w": torch.tensor([1.0, -2.0, 0.5]),
        "bn.running_var": torch.ones(3),
        "bn.num_batches_tracked": torch.tensor(4),
    }
    with virtual_device() as placement:
        strategy = build_strategy(parse_run_config({"strategy": name, "num-clients": 2}))
        for server_round in (1, 2):
            strategy.configure_train(server_round, ArrayRecord(x), ConfigRecord(), grid)
            replies = [train_reply({**x, "w": x["w"] + offset}, n) for offset, n in ((0.5, 1), (-0.1, 3))]
            new, _ = strategy.aggregate_train(server_round, replies)
            x = new.to_torch_state_dict()
        moments = [t for t in tensors_of(strategy.optimizer.state_dict()["state"]) if t.shape == (3,)]
        assert moments and {t.device for t in [*strategy.weights.values(), *moments]} == {VIRTUAL}
        saved = strategy.state_dict()
        assert {t.device for t in tensors_of(saved)} == {torch.device("cpu")}  # a checkpoint loads anywhere
        torch.save(saved, io.BytesIO())
    assert placement.violations == []
    assert not torch.equal(x["w"], torch.tensor([1.0, -2.0, 0.5]))  # it stepped


def test_dua_keeps_its_experts_on_the_configured_device_and_merges_there(virtual, grid):
    with virtual_device() as placement:
        strategy = build_strategy(parse_run_config(small_run("dua", "classify")))
        experts = tensors_of(strategy.expert_states)
        assert experts and {t.device for t in experts} == {VIRTUAL}
        assert {t.device for t in tensors_of(list(strategy.experts.experts))} == {torch.device("cpu")}
    assert placement.violations == [] and placement.device_compute > 0  # the experts trained there


def client_classes() -> list[tuple[str, str]]:
    """One (algorithm, task) per client half: every client class on classification if it supports it
    (BatchNorm, every adaptation), else on its first task; plus FedAvg on gaze."""
    chosen, seen = [("fedavg", "gaze")], set()
    for name, entry in ALGORITHMS.items():
        if entry.client not in seen:
            seen.add(entry.client)
            chosen.append((name, "classify" if "classify" in entry.tasks else entry.tasks[0]))
    return chosen


# What a run adds to its small config: local adaptation and an unseen client (FedAvg runs every
# adaptation on both tasks; the other client halves share that code); face: a second round, which
# starts from the personal state the first one saved.
ADAPTED = {
    "gaze": {"gaze.batchnorm": True, "adapt.method": "adabn", "evaluate.unseen-clients": 1},
    "classify": {"adapt.method": "adabn+tent+pseudo-label", "adapt.threshold": 0.05, "evaluate.unseen-clients": 1},
}
EXTRA = {
    ("fedavg", "gaze"): ADAPTED["gaze"],
    ("fedavg", "classify"): ADAPTED["classify"],
    ("fedper", "classify"): ADAPTED["classify"],  # an unseen client with a personal part, then TENT
    ("fedfr", "face"): {"num-rounds": 2},
}


@pytest.mark.parametrize(("name", "task"), client_classes())
def test_every_tensor_of_a_run_stays_on_the_configured_device(name, task, virtual, tmp_path):
    config = {**small_run(name, task), **EXTRA.get((name, task), {}), "results-dir": str(tmp_path)}
    with virtual_device() as placement:
        _, grid = run_inprocess(config, record=True)
    assert placement.violations == []
    assert [reply.error.reason for reply in grid.replies if reply.has_error()] == []
    assert placement.host_compute == [], "convolutions or matrix products ran on the host"
    assert placement.device_compute > 0
