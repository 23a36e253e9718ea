"""Personalization baselines, each by its defining behaviour on the captured messages and state:
FedBN (BatchNorm stays local), LG-FedAvg (only the head is shared), FedRep (head epochs, then body
epochs), FedBABU (head frozen while federated, fine-tuned for the personal model), Ditto (a personal
model pulled towards the global one)."""

import copy

import pytest
import torch
from flwr.app import MessageType

from clients.base import ClientAlgorithm
from simulations.inprocess import run_inprocess

CLASSIFY = {"task": "classify", "num-clients": 2, "num-rounds": 1, "samples-per-client": 40, "local-epochs": 1,
            "classify.corruptions": "blur,contrast"}  # fmt: skip
BN_KEYS = {"running_mean", "running_var", "num_batches_tracked"}


def run(strategy, tmp_path, **extra):
    return run_inprocess({**CLASSIFY, "strategy": strategy, **extra, "results-dir": str(tmp_path)}, record=True)


def train_replies(grid):
    return [r for r in grid.replies if r.metadata.message_type == MessageType.TRAIN and not r.has_error()]


def sent_train(grid):
    return [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]


def test_fedbn_keeps_every_batchnorm_key_on_the_device(tmp_path):
    _, grid = run("fedbn", tmp_path, **{"num-rounds": 2})
    bn_layers = {"body.1", "body.5", "body.9"}  # the SmallCNN's BatchNorm layers
    for reply in train_replies(grid):
        keys = set(reply.content["arrays"].keys())
        assert not any(key.rsplit(".", 1)[0] in bn_layers for key in keys)
        assert {"body.0.weight", "head.weight"} <= keys
    personal = {key for ctx in grid.contexts.values() for key in ctx.state["personal"].keys()}
    assert {key.rsplit(".", 1)[1] for key in personal} == {"weight", "bias"} | BN_KEYS
    assert {key.rsplit(".", 1)[0] for key in personal} == bn_layers
    round_two = [m for m in sent_train(grid) if m.content["config"]["server-round"] == 2]
    assert all(not BN_KEYS & {k.rsplit(".", 1)[1] for k in m.content["arrays"].keys()} for m in round_two)


def test_lg_fedavg_shares_only_the_head(tmp_path):
    _, grid = run("lg-fedavg", tmp_path)
    for reply in train_replies(grid):
        assert set(reply.content["arrays"].keys()) == {"head.weight", "head.bias"}


def test_fedrep_trains_the_head_then_the_body(tmp_path, monkeypatch):
    calls = []
    original = ClientAlgorithm.local_train

    def recording(self, model, server_round, tensors=None, loss=None, epochs=None):
        trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
        calls.append((trainable, epochs))
        return original(self, model, server_round, tensors, loss, epochs)

    monkeypatch.setattr(ClientAlgorithm, "local_train", recording)
    _, grid = run("fedrep", tmp_path, **{"fedrep.head-epochs": 3})
    assert calls[:2] == [({"head"}, 3), ({"body"}, None)]  # per client: head (3 epochs), then body
    for reply in train_replies(grid):
        assert all(key.startswith("body.") for key in reply.content["arrays"].keys())


def test_fedbabu_never_trains_the_head_and_fine_tunes_it_for_the_personal_model(tmp_path):
    run_dir, grid = run("fedbabu", tmp_path)
    sent = sent_train(grid)[0].content["arrays"].to_torch_state_dict()
    for reply in train_replies(grid):
        got = reply.content["arrays"].to_torch_state_dict()
        assert torch.equal(got["head.weight"], sent["head.weight"]) and torch.equal(got["head.bias"], sent["head.bias"])
        assert not torch.equal(got["body.0.weight"], sent["body.0.weight"])
    evaluated = [row for row in run_dir.read_rows("clients.jsonl") if row["phase"] == "evaluate" and row["round"] == 1]
    assert all("personalized-accuracy" in row for row in evaluated)
    assert any(row["personalized-accuracy"] != row["accuracy"] for row in evaluated)


def test_ditto_sends_fedavgs_model_and_keeps_a_personal_model_pulled_to_the_global(tmp_path):
    _, fedavg = run("fedavg", tmp_path / "fedavg", **{"local-epochs": 3})
    _, ditto = run("ditto", tmp_path / "ditto", **{"ditto.lam": 10.0, "local-epochs": 3})
    for a, b in zip(train_replies(fedavg), train_replies(ditto)):  # the global half is plain FedAvg
        for key, value in a.content["arrays"].to_torch_state_dict().items():
            torch.testing.assert_close(b.content["arrays"].to_torch_state_dict()[key], value, rtol=0, atol=0)

    def distance(grid):
        sent = sent_train(grid)[0].content["arrays"].to_torch_state_dict()
        gaps = []
        for ctx in grid.contexts.values():
            personal = ctx.state["ditto-personal"].to_torch_state_dict()
            weights = [k for k in sent if sent[k].is_floating_point() and "running" not in k]  # parameters only
            gaps.append(sum(float(((personal[k] - sent[k]) ** 2).sum()) for k in weights))
        return gaps

    _, loose = run("ditto", tmp_path / "loose", **{"ditto.lam": 0.0, "local-epochs": 3})
    assert all(tight < 0.7 * free for tight, free in zip(distance(ditto), distance(loose)))


@pytest.mark.parametrize("strategy", ["fedbabu", "ditto", "perfedavg", "apfl", "pfedme"])
def test_personalized_metrics_are_reported_next_to_the_global_ones(strategy, tmp_path):
    run_dir, _ = run(strategy, tmp_path)
    last = run_dir.read_rows("rounds.jsonl")[-1]
    assert {"global-accuracy", "personalized-accuracy", "worst-client-personalized-accuracy"} <= set(last)


def test_local_only_shares_nothing_and_still_learns(tmp_path):
    run_dir, grid = run("local", tmp_path, **{"num-rounds": 2, "local-epochs": 2})
    for reply in train_replies(grid):
        assert len(reply.content["arrays"].keys()) == 0  # nothing leaves the device
    initial = sent_train(grid)[0].content["arrays"].to_torch_state_dict()
    final = torch.load(run_dir.path / "model.pt", weights_only=True)
    assert all(torch.equal(final[key], value) for key, value in initial.items())  # the global model never moves
    for ctx in grid.contexts.values():
        assert set(ctx.state["personal"].keys()) == set(initial)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert rounds[-1]["personalized-accuracy"] > rounds[0]["personalized-accuracy"]  # each client's own model learned


def test_per_fedavg_first_order_maml_step_by_hand():
    """temp = w - alpha grad f(w; D1); w' = w - beta grad f(temp; D2), for a linear model and MSE,
    with the gradients written out: d/dw mean((Xw + b - y)^2) = 2/n X^T r, d/db = 2/n sum r."""
    from torch import nn

    from clients.perfedavg import fo_maml_step

    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    first = (torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[1.0], [0.0]]))
    second = (torch.tensor([[-1.0, 0.5], [2.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.5], [1.0], [-1.0]]))
    alpha, beta = 0.1, 0.05

    def grad(w, b, batch):
        x, y = batch
        residual = x @ w + b - y
        return 2 / len(x) * x.T @ residual, 2 / len(x) * residual.sum(0)

    w, b = model.weight.detach().T.clone(), model.bias.detach().clone()
    gw, gb = grad(w, b, first)
    tw, tb = w - alpha * gw, b - alpha * gb
    ow, ob = grad(tw, tb, second)
    expected_w, expected_b = w - beta * ow, b - beta * ob

    fo_maml_step(model, lambda m, batch: ((m(batch[0]) - batch[1]) ** 2).mean(), first, second, alpha, beta)
    torch.testing.assert_close(model.weight.detach().T, expected_w)
    torch.testing.assert_close(model.bias.detach(), expected_b)


def test_apfl_step_by_hand():
    """Global step on its own loss; personal and mixing-weight steps on the mixture's loss, with the
    gradients written out for a linear model and MSE."""
    from torch import nn

    from clients.apfl import apfl_step

    torch.manual_seed(1)
    model, personal = nn.Linear(2, 1), nn.Linear(2, 1)
    batch = (torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]]), torch.tensor([[1.0], [0.0], [2.0]]))
    alpha, lr = 0.3, 0.1

    def grad(w, b):
        residual = batch[0] @ w + b - batch[1]
        return 2 / 3 * batch[0].T @ residual, 2 / 3 * residual.sum(0)

    w, b = model.weight.detach().T.clone(), model.bias.detach().clone()
    v, c = personal.weight.detach().T.clone(), personal.bias.detach().clone()
    gw, gb = grad(w, b)
    mw, mb = grad(alpha * v + (1 - alpha) * w, alpha * c + (1 - alpha) * b)
    expected_alpha = alpha - lr * float(((v - w) * mw).sum() + ((c - b) * mb).sum())

    new_alpha = apfl_step(personal, model, alpha, lambda m, x: ((m(x[0]) - x[1]) ** 2).mean(), batch, lr)
    assert new_alpha == pytest.approx(expected_alpha, rel=1e-5)
    torch.testing.assert_close(model.weight.detach().T, w - lr * gw)
    torch.testing.assert_close(personal.weight.detach().T, v - lr * alpha * mw)
    torch.testing.assert_close(personal.bias.detach(), c - lr * alpha * mb)


def test_pfedme_step_by_hand():
    """One inner step from w: theta = w - eta grad f(w) (the proximal gradient is zero at w); then
    w' = w - lr lam (w - theta), with the gradients written out for a linear model and MSE."""
    from torch import nn

    from clients.pfedme import PFedMeSettings, pfedme_step

    torch.manual_seed(2)
    model, personal = nn.Linear(2, 1), nn.Linear(2, 1)
    batch = (torch.tensor([[1.0, 0.5], [-2.0, 1.0]]), torch.tensor([[0.0], [1.0]]))
    settings = PFedMeSettings(lam=2.0, inner_steps=2, inner_lr=0.1)
    lr = 0.05

    def grad(w, b):
        residual = batch[0] @ w + b - batch[1]
        return 2 / 2 * batch[0].T @ residual, 2 / 2 * residual.sum(0)

    w, b = model.weight.detach().T.clone(), model.bias.detach().clone()
    tw, tb = w.clone(), b.clone()
    for _ in range(settings.inner_steps):  # grad of f + lam/2 ||theta - w||^2
        gw, gb = grad(tw, tb)
        tw, tb = tw - 0.1 * (gw + 2.0 * (tw - w)), tb - 0.1 * (gb + 2.0 * (tb - b))

    pfedme_step(model, personal, lambda m, x: ((m(x[0]) - x[1]) ** 2).mean(), batch, settings, lr)
    torch.testing.assert_close(personal.weight.detach().T, tw)
    torch.testing.assert_close(model.weight.detach().T, w - lr * 2.0 * (w - tw))
    torch.testing.assert_close(model.bias.detach(), b - lr * 2.0 * (b - tb))


def test_pfedme_global_copy_takes_the_batchnorm_statistics_of_the_personal_model():
    """Only the personal model sees data; without this the global model kept mean 0 / variance 1."""
    from torch import nn

    from clients.pfedme import PFedMeSettings, pfedme_step

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).train()
    personal = copy.deepcopy(model)
    batch = (torch.randn(8, 2) * 4 + 5, torch.randn(8, 1))
    pfedme_step(model, personal, lambda m, x: ((m(x[0]) - x[1]) ** 2).mean(), batch, PFedMeSettings(), 0.01)
    bn = model[1]
    assert not torch.allclose(bn.running_mean, torch.zeros(3))  # the statistics moved ...
    torch.testing.assert_close(bn.running_mean, personal[1].running_mean)  # ... to the personal model's
    assert int(bn.num_batches_tracked) == PFedMeSettings().inner_steps  # one update per inner forward pass
