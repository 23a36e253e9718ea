"""What leaves a device, for every registered algorithm on every task it supports.

Each (algorithm, task) pair of the registry runs in-process with 2 clients (3 for Bulyan) for 2 rounds; every
client->server message is captured and checked: only arrays under keys the server sent (never a
personal key of the algorithm), no array equal to a private record of the client's state (its personal
parameters or personal model), no array shaped like a batch of the client's inputs, none equal to its
labels, and metrics that are single numbers. A new algorithm is covered by registering it.
"""

import pytest
import torch
from flwr.app import Message
from small_configs import PAIRS, small_run

from clients.base import ClientAlgorithm
from clients.fedper import FedPerClient
from fedpersonal.params import to_arrays
from simulations.inprocess import run_inprocess
from simulations.registry import build_client, parse_run_config


def private_tensors(client) -> list[torch.Tensor]:
    """The arrays of the client's private records (personal parameters, personal models)."""
    found = []
    for name in client.private_records:
        record = client.context.state.array_records.get(name)
        if record is not None:
            found += [value for value in record.to_torch_state_dict().values() if value.numel() > 1]
    return found


def data_tensors(client) -> tuple[list[torch.Size], list[torch.Tensor]]:
    """Shapes of one input sample (images and any other input tensor) and the label tensors."""
    inputs = client.task.inputs(client.data.train)
    shapes = [tensor.shape[1:] for tensor in inputs if tensor.ndim >= 2]
    labels = [tensor for split in (client.data.train, client.data.test) for tensor in split[len(inputs) :]]
    return shapes, labels


def check_reply(reply: Message, sent: Message, client, personal_keys: set[str]) -> None:
    for key, value in reply.content.metric_records["metrics"].items():
        assert isinstance(value, int | float), f"metric {key} = {value!r} is not a single number"
    if not reply.content.array_records:
        return
    arrays = reply.content.array_records["arrays"].to_torch_state_dict()
    allowed = set(sent.content.array_records["arrays"].keys())
    assert set(arrays) <= allowed, f"keys the server never sent: {sorted(set(arrays) - allowed)[:5]}"
    assert not set(arrays) & personal_keys, f"personal keys left the device: {sorted(set(arrays) & personal_keys)}"
    shapes, labels = data_tensors(client)
    secrets = private_tensors(client)
    for key, value in arrays.items():
        assert not (value.ndim >= 2 and value.shape[1:] in shapes), f"{key} {tuple(value.shape)} is shaped like inputs"
        for label in labels:
            assert not (value.shape == label.shape and torch.equal(value, label.to(value.dtype))), f"{key} = labels"
        for secret in secrets:
            assert not (value.shape == secret.shape and torch.equal(value, secret)), f"{key} equals a private array"


def check_run(name: str, task: str, tmp_path) -> None:
    """Run (name, task) with 2 clients for 2 rounds and check every reply."""
    config = {**small_run(name, task), "num-rounds": 2, "results-dir": str(tmp_path)}
    _, grid = run_inprocess(config, record=True)
    cfg = parse_run_config(config)
    clients = {node: build_client(cfg, context) for node, context in grid.contexts.items()}
    any_client = next(iter(clients.values()))
    personal = set(any_client.personal_keys(any_client.task.build_model()))
    sent_by_id = {msg.metadata.message_id: msg for msg in grid.sent}
    assert len(grid.replies) >= 8  # 2+ clients x (round-0 evaluation + 2 x (train, evaluate))
    trained = 0
    for reply in grid.replies:
        assert not reply.has_error(), reply.error.reason
        sent = sent_by_id[reply.metadata.reply_to_message_id]
        check_reply(reply, sent, clients[sent.metadata.dst_node_id], personal)
        trained += bool(reply.content.array_records)
    assert trained >= 2 or name in ("local", "face-local")


@pytest.mark.parametrize(("name", "task"), PAIRS, ids=[f"{n}-{t}" for n, t in PAIRS])
def test_only_shared_parameters_and_metrics_leave_the_device(name, task, tmp_path, one_thread):
    check_run(name, task, tmp_path)


def test_the_harness_catches_a_client_that_sends_its_personal_head(tmp_path, monkeypatch, one_thread):
    def leaky(self, model):
        ClientAlgorithm.outgoing_arrays(self, model)  # keeps the head in context.state as usual ...
        return to_arrays(model)  # ... and sends it anyway

    monkeypatch.setattr(FedPerClient, "outgoing_arrays", leaky)
    with pytest.raises(AssertionError, match="personal keys left the device"):
        check_run("fedper", "gaze", tmp_path)
