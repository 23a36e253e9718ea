"""FedProx: the proximal term and its gradient by hand, mu from the message, and its pull to the global model."""

import pytest
import torch
from torch import nn

from clients.fedprox import proximal_term
from simulations.inprocess import run_inprocess

SMALL = {"num-clients": 2, "num-rounds": 1, "samples-per-client": 40, "local-epochs": 2, "lr": 0.05}


def test_proximal_term_and_its_gradient_by_hand():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    anchor = [p.detach().clone() + 0.5 for p in model.parameters()]  # w - anchor = -0.5 everywhere
    mu = 0.3
    loss = mu / 2 * proximal_term(model, anchor)
    assert loss.item() == pytest.approx(mu / 2 * 0.25 * (6 + 2))  # 8 parameters, each (-0.5)^2
    loss.backward()
    for param in model.parameters():  # d/dw mu/2 ||w - a||^2 = mu (w - a)
        torch.testing.assert_close(param.grad, torch.full_like(param, mu * -0.5))


def distances_to_global(config, tmp_path):
    """L2 distance of each client's trained model from the model the server sent."""
    _, grid = run_inprocess({**SMALL, **config, "results-dir": str(tmp_path)}, record=True)
    sent = next(m for m in grid.sent if m.metadata.message_type == "train")
    start = sent.content["arrays"].to_torch_state_dict()
    replies = [r.content["arrays"].to_torch_state_dict() for r in grid.replies if r.content.array_records]
    distances = [sum(float(((r[k] - start[k]) ** 2).sum()) for k in start) ** 0.5 for r in replies]
    return distances, sent.content["config"]


def test_a_large_mu_keeps_clients_close_to_the_global_model(tmp_path):
    plain, _ = distances_to_global({"strategy": "fedavg"}, tmp_path / "fedavg")
    prox, config = distances_to_global({"strategy": "fedprox", "fedprox.mu": 5.0}, tmp_path / "fedprox")
    assert config["proximal-mu"] == 5.0  # Flower's FedProx sends mu in the train config
    assert all(p < 0.7 * q for p, q in zip(prox, plain))
    zero, _ = distances_to_global({"strategy": "fedprox", "fedprox.mu": 0.0}, tmp_path / "zero")
    assert zero == pytest.approx(plain, rel=1e-5)  # mu = 0 is FedAvg
