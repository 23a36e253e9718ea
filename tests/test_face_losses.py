"""CosFace, FedFR's DFC branch and loss, MOON term and hard-negative selection, by hand."""

import math

import pytest
import torch

from fedpersonal.losses.face import NO_POSITIVE, cosface_loss, dfc_g, dfc_loss, hard_negatives, moon_loss
from fedpersonal.models.face import DFCBranch, cosine


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dfc_branch_starts_as_the_identity_with_rows_from_the_classifier():
    torch.manual_seed(0)
    rows = torch.randn(3, 8)
    branch = DFCBranch(rows)
    features = torch.randn(5, 8)
    torch.testing.assert_close(branch(features), features)
    torch.testing.assert_close(branch.weight.detach(), rows)
    torch.testing.assert_close(branch.bias.detach(), torch.zeros(3))
    torch.testing.assert_close(branch.cosines(features), cosine(features, rows))
    rows.add_(1.0)  # the branch owns a copy
    assert not torch.allclose(branch.weight.detach(), rows)


def test_g_by_hand():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    # g(x) = 2((x+1)/2)^3 - 1: -1, 2/8 - 1, 2 * 0.75^3 - 1, 1
    torch.testing.assert_close(dfc_g(x), torch.tensor([-1.0, -0.75, -0.15625, 1.0]))


def test_dfc_loss_by_hand():
    cosines = torch.tensor([[0.5, 0.0], [0.2, -0.3]])
    labels = torch.tensor([0, NO_POSITIVE])  # the second sample is a public image: all negative
    bias = torch.tensor([0.1, -0.2])
    r, m, lam = 30.0, 0.4, 0.7
    # Sample 1: true class 0 with z = r(g(0.5) - m) + b0, class 1 negative with z = r(g(0) + m) + b1.
    z_pos = r * (-0.15625 - m) + 0.1
    z_neg = r * (-0.75 + m) - 0.2
    first = lam / r * softplus(-z_pos) + (1 - lam) / r * softplus(z_neg)
    # Sample 2: both classes negative.
    g02, gm03 = 2 * 0.6**3 - 1, 2 * 0.35**3 - 1
    second = (1 - lam) / r * (softplus(r * (g02 + m) + 0.1) + softplus(r * (gm03 + m) - 0.2))
    loss = dfc_loss(cosines, labels, bias, r, m, lam)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_cosface_loss_by_hand():
    cosines = torch.tensor([[0.6, 0.2]])
    # logits s(cos - m [true]) = 30 * (0.2, 0.2): equal logits, loss log 2.
    assert cosface_loss(cosines, torch.tensor([0]), 30.0, 0.4).item() == pytest.approx(math.log(2))
    # s = 10, m = 0.1: logits (10 * 0.5, 10 * 0.2), loss log(1 + e^(2 - 5)).
    assert cosface_loss(cosines, torch.tensor([0]), 10.0, 0.1).item() == pytest.approx(softplus(-3.0), rel=1e-5)


def test_moon_loss_by_hand():
    features = torch.tensor([[1.0, 0.0]])
    global_features = torch.tensor([[2.0, 0.0]])  # cos 1
    previous = torch.tensor([[0.0, 3.0]])  # cos 0
    # -log(e^(1/T) / (e^(1/T) + e^(0/T))) = softplus(-1/T) with T = 0.5.
    assert moon_loss(features, global_features, previous, 0.5).item() == pytest.approx(softplus(-2.0))
    # With the previous model equal to the global one the term is log 2 (and has no gradient).
    assert moon_loss(features, global_features, global_features, 0.5).item() == pytest.approx(math.log(2))


def test_hard_negatives_keep_public_images_above_the_threshold_only():
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def at(cos_to_e1: float) -> list[float]:
        return [cos_to_e1, -math.sqrt(1 - cos_to_e1**2)]  # negative to e2: only e1 can select it

    public = torch.tensor([at(0.99), at(0.41), at(0.4), at(0.39), at(-1.0)]) * 5.0  # scale is irrelevant
    assert hard_negatives(local, public, 0.4).tolist() == [0, 1]  # strictly above 0.4
    assert hard_negatives(local, public, 0.38).tolist() == [0, 1, 2, 3]
