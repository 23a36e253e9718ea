"""Gradient inversion (fedpersonal.privacy.inversion): metrics by hand, the attack with and without defences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedpersonal.losses.face import cosface_loss
from fedpersonal.models.face import FaceEmbeddingNet, cosine
from fedpersonal.models.lenet import GazeLeNet
from fedpersonal.privacy import inversion as inv

torch.set_num_threads(1)


def smooth_image(seed: int, size: int = 12) -> torch.Tensor:
    """A (1, 1, size, size) image in [0, 1]: a bright blob on a shaded background (what TV favours)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.03)
    image = 0.2 + 0.3 * x * rng.uniform(0.5, 1.0) + 0.5 * blob
    return torch.tensor(np.clip(image, 0, 1), dtype=torch.float32)[None, None]


class Tiny(nn.Module):
    """conv 4@3x3 + ReLU, then a linear layer to one output: a batch of one image reveals the linear
    layer's input, while the sum of several clients' gradients mixes theirs in one vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 12 * 12, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(images)).flatten(1))


def tiny_spec() -> inv.AttackSpec:
    """The generic attacker: whatever the loss, a linear loss on the output with the output gradient
    read from the last bias."""
    return inv.surrogate_spec(Tiny(), (0.0, 1.0))


def tiny_loss(image: torch.Tensor, target: float):
    return lambda net: torch.mean((net(image) - target) ** 2)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return Tiny()


SETTINGS = inv.AttackSettings(steps=300, lr=0.1, tv_weight=1e-2)


# --- metrics --------------------------------------------------------------------------------------


def test_psnr_identical_is_infinite_and_offset_follows_the_formula() -> None:
    image = smooth_image(0)
    assert math.isinf(float(inv.psnr(image, image)[0]))
    # a constant error d everywhere: MSE = d^2, PSNR = 10 log10(1 / d^2) = -20 log10(d)
    for d in (0.1, 0.01):
        assert float(inv.psnr(image + d, image)[0]) == pytest.approx(-20 * math.log10(d), abs=1e-4)
    # +-d noise (random signs) has the same MSE; one value per image of a batch
    signs = torch.where(torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    batch = torch.cat([image, image])
    assert inv.psnr(batch + 0.05 * signs, batch).tolist() == pytest.approx([-20 * math.log10(0.05)] * 2, abs=1e-4)


def test_ssim_identical_is_one_and_constants_follow_the_luminance_term() -> None:
    image = smooth_image(1, size=20)
    assert float(inv.ssim(image, image)[0]) == pytest.approx(1.0, abs=1e-9)
    # constant images a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2, L = 1
    a, b, c1 = 0.3, 0.6, 1e-4
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert float(inv.ssim(x, y)[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    # an inverted image anti-correlates: SSIM well below 0; noise lowers it
    assert float(inv.ssim(1 - image, image)[0]) < 0
    noisy = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 0 < float(inv.ssim(noisy, image)[0]) < 0.9


def test_match_undoes_the_batch_order() -> None:
    originals = torch.cat([smooth_image(seed) for seed in range(4)])
    shuffled = originals[[2, 0, 3, 1]] + 0.01
    assert inv.match(shuffled, originals).tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError):
        inv.match(shuffled[:2], originals)


# --- what the server observes ---------------------------------------------------------------------


def test_one_step_gradient_is_the_gradient_and_leaves_the_sent_model(tiny: nn.Module) -> None:
    before = [p.detach().clone() for p in tiny.parameters()]
    loss = tiny_loss(smooth_image(0), 0.7)
    observed = inv.one_step_gradient(tiny, loss, lr=0.05)
    expected = torch.autograd.grad(loss(tiny), list(tiny.parameters()))
    for o, e in zip(observed, expected):
        torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.parameters()))


def test_clipping_noise_and_secure_aggregation(tiny: nn.Module) -> None:
    losses = [tiny_loss(smooth_image(seed), 0.5) for seed in range(3)]
    single = inv.observe_none(tiny, losses[0], 0.1)
    clipped = inv.clip_and_noise(single, inv.norm(single) / 4, 0.0)
    assert inv.norm(clipped) == pytest.approx(inv.norm(single) / 4, rel=1e-5)
    assert inv.norm(inv.clip_and_noise(single, inv.norm(single) * 4, 0.0)) == pytest.approx(inv.norm(single))
    noisy = inv.observe_dp(tiny, losses[0], 0.1, 1.0, 3.0, torch.Generator().manual_seed(0))
    residual = torch.cat([(n - s * min(1.0, 1.0 / inv.norm(single))).flatten() for n, s in zip(noisy, single)])
    assert float(residual.std()) == pytest.approx(3.0, rel=0.05)  # noise std z * C
    summed = inv.observe_secagg(tiny, losses, 0.1)
    parts = [inv.observe_none(tiny, loss, 0.1) for loss in losses]
    for total, *each in zip(summed, *parts):
        torch.testing.assert_close(total, sum(each), atol=1e-5, rtol=1e-4)


def test_threat_model_conditions() -> None:
    threat = inv.ThreatModel(epsilon_a=8.0, epsilon_b=1.0, population=20, sample_size=20, amplify=False, rounds=2)
    assert threat.noise_multiplier(inv.Condition.NONE) == 0.0
    assert threat.noise_multiplier(inv.Condition.SECAGG) == 0.0
    z_a, z_b = threat.noise_multiplier(inv.Condition.DP_EPS_A), threat.noise_multiplier(inv.Condition.DP_EPS_B)
    assert 0 < z_a < z_b  # the smaller epsilon needs more noise
    assert [c.value for c in inv.Condition] == ["none", "dp-eps-A", "dp-eps-B", "secagg"]


# --- what the attacker reads off the update ---------------------------------------------------------


def test_linear_input_is_read_exactly_from_one_sample() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    x = torch.randn(1, 6)
    weight_grad, bias_grad = torch.autograd.grad(((layer(x) - 1.0) ** 2).sum(), [layer.weight, layer.bias])
    torch.testing.assert_close(inv.linear_input(weight_grad, bias_grad), x[0], atol=1e-5, rtol=1e-4)


def test_gaze_spec_reads_the_head_pose_and_the_label_follows() -> None:
    torch.manual_seed(0)
    model = GazeLeNet()
    images, pose, gaze = torch.rand(1, 1, 36, 60), torch.tensor([[0.1, -0.2]]), torch.tensor([[0.3, 0.2]])
    observed = inv.observe_none(model, lambda net: torch.mean((net(images, pose) - gaze) ** 2), 0.03)
    gradients, start_pose = inv.gaze_spec(model).init_latents(observed, 1, torch.Generator())
    torch.testing.assert_close(start_pose, pose, atol=1e-3, rtol=1e-3)
    # the true image with the read-off latents: the implied label is the true one, whatever the g scale
    exact = inv.Reconstruction(images, (gradients * 3.0, start_pose), 0.0)
    torch.testing.assert_close(inv.gaze_labels(model, exact, observed, 1), gaze, atol=1e-3, rtol=1e-3)


def test_face_surrogate_loss_gives_the_clients_gradient_without_its_classifier() -> None:
    """For one image, sum(<e, g>) with g read from the embedding layer's bias gradient has exactly the
    gradient of the client's CosFace loss against its private classifier."""
    torch.manual_seed(0)
    model = FaceEmbeddingNet()
    rows = F.normalize(torch.randn(5, 64), dim=1)  # the client's private classifier
    images, labels = torch.rand(1, 1, 32, 32) * 2 - 1, torch.tensor([3])
    observed = inv.observe_none(model, lambda net: cosface_loss(cosine(net(images), rows), labels, 30.0, 0.4), 0.03)
    spec = inv.face_spec(model)
    latents = spec.init_latents(observed, 1, torch.Generator())
    net = model.train()
    surrogate = torch.autograd.grad(spec.loss(net, images, latents), inv.trainable(net))
    for s, o in zip(surrogate, observed):
        torch.testing.assert_close(s, o, atol=2e-4, rtol=2e-3)


# --- the attack -----------------------------------------------------------------------------------


def test_attack_recovers_one_image_without_defence_and_not_under_heavy_noise(tiny: nn.Module) -> None:
    image = smooth_image(3)
    loss = tiny_loss(image, 0.8)
    clean = inv.reconstruct(tiny, inv.observe_none(tiny, loss, 0.1), tiny_spec(), (1, 12, 12), settings=SETTINGS)
    clean_psnr = float(inv.psnr(clean.images, image)[0])
    assert clean_psnr > 25 or float(inv.ssim(clean.images, image)[0]) > 0.8
    single = inv.observe_none(tiny, loss, 0.1)
    heavy = inv.observe_dp(tiny, loss, 0.1, inv.norm(single), 1.0, torch.Generator().manual_seed(0))
    noisy = inv.reconstruct(tiny, heavy, tiny_spec(), (1, 12, 12), settings=SETTINGS)
    assert float(inv.psnr(noisy.images, image)[0]) < clean_psnr - 8


def test_secure_aggregation_recovers_less_than_a_single_update(tiny: nn.Module) -> None:
    images = [smooth_image(seed) for seed in (3, 11, 12, 13)]
    losses = [tiny_loss(image, target) for image, target in zip(images, (0.8, -0.4, 0.3, -0.9))]
    single = inv.reconstruct(tiny, inv.observe_none(tiny, losses[0], 0.1), tiny_spec(), (1, 12, 12), settings=SETTINGS)
    summed = inv.observe_secagg(tiny, losses, 0.1)
    mixed = inv.reconstruct(tiny, summed, tiny_spec(), (1, 12, 12), groups=4, settings=SETTINGS)
    best = mixed.images[inv.match(mixed.images, images[0])]  # the attacker's best dummy for the target
    assert float(inv.psnr(best, images[0])[0]) < float(inv.psnr(single.images, images[0])[0]) - 5


def test_reconstruct_leaves_the_model_and_returns_unit_images() -> None:
    torch.manual_seed(0)
    model = FaceEmbeddingNet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    observed = inv.observe_none(model, lambda net: net(images).pow(2).sum(), 0.03)
    result = inv.reconstruct(
        model, observed, inv.face_spec(model), (1, 16, 16), batch_size=2, settings=inv.AttackSettings(steps=3)
    )
    assert result.images.shape == (2, 1, 16, 16) and 0 <= float(result.images.min()) <= float(result.images.max()) <= 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN running stats too


# --- identity verification ------------------------------------------------------------------------


def test_far_threshold_and_identity_verified() -> None:
    impostors = np.linspace(0.0, 0.99, 100)  # 100 impostor pairs: FAR 1% lets exactly one through
    threshold = inv.far_threshold(impostors, 0.01)
    assert threshold == pytest.approx(0.98) and np.sum(impostors > threshold) == 1
    with pytest.raises(ValueError):
        inv.far_threshold(impostors[:50], 0.01)
    torch.manual_seed(0)
    model = FaceEmbeddingNet()
    faces = torch.rand(3, 1, 32, 32)
    verified = inv.identity_verified(model, faces, faces, threshold=0.999)
    assert verified.tolist() == [True, True, True]  # an image is its own identity
    assert not inv.identity_verified(model, faces, faces, threshold=1.0).any()  # nothing passes cos > 1
