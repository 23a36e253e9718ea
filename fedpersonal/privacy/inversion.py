"""Gradient inversion: what an honest-but-curious server can rebuild of a client's images from its update.

**Threat model.** The server sent weights ``w``; a client took one SGD step with learning rate ``lr`` on a
batch of ``B`` images and returned ``w'``. The server computes ``(w - w') / lr``, the gradient of the client's
loss at ``w`` (FedSGD; a single step is the attacker's best case). What it observes under each
:class:`Condition`:

* ``none``: that gradient (:func:`observe`);
* ``dp-eps-A`` / ``dp-eps-B``: the gradient clipped to L2 norm ``C`` with Gaussian noise of std ``z * C``
  added, ``z`` the noise multiplier of the DP mechanism for a target epsilon (:class:`ThreatModel`). This
  is noise the server *cannot remove*: the client's own (local) noise, or its share of distributed noise.
  Central DP, where the server adds the noise after seeing the updates, does not protect against the
  server at all: it then sees the ``none`` condition;
* ``secagg``: only the sum of ``m`` clients' gradients (secure aggregation).

Clipping norms and noise are in gradient units: an update clipped to ``C_u`` is a gradient clipped to
``C_u / lr``; scaling the observation changes nothing below, as the attack matches directions.

**Attack.** Inverting Gradients (Geiping et al., NeurIPS 2020), which refines DLG (Zhu et al., NeurIPS
2019): dummy images (and the unknowns of the loss, :class:`AttackSpec`) are optimised with Adam on the
signs of the gradients so that the gradient they produce matches the observed one in cosine distance, plus
a total-variation prior on the images, projected onto the input box after every step. Labels, iDLG-style
(Zhao et al. 2020): the gradient of any loss of the output ``y`` is that of the linear loss
``<y, dL/dy>``, and ``dL/dy`` summed over the batch is the gradient of the output layer's bias, read from
the update (exact for ``B = 1``; per-sample ``dL/dy`` are latents, optimised with the images). For gaze the
label follows from ``dL/dy`` (:func:`gaze_labels`) and the head pose is a latent, read off the head layer
for ``B = 1``; for a face the client's classifier is private, so its loss is unknown, and the linear loss
on the embedding stands in for it (:func:`face_spec`).

**Images.** The attack works in the model's input space (:attr:`AttackSpec.input_range`: gaze ``[0, 1]``,
faces ``[-1, 1]``); :class:`Reconstruction` holds images mapped to ``[0, 1]``, and :func:`psnr`,
:func:`ssim` and :func:`identity_verified` take images in ``[0, 1]`` (``uint8 / 255``).
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from fedpersonal.privacy.accounting import ReleasePlan

Gradient = tuple[torch.Tensor, ...]  # one tensor per trainable parameter, in ``model.parameters()`` order
ClientLoss = Callable[[nn.Module], torch.Tensor]  # a client's training loss on its own batch, given the model


class Condition(enum.Enum):
    """What the server observes of a client's update."""

    NONE = "none"  # one client's raw update
    DP_EPS_A = "dp-eps-A"  # clipped, with local Gaussian noise for target epsilon A (the larger)
    DP_EPS_B = "dp-eps-B"  # the same for target epsilon B (the smaller: more noise)
    SECAGG = "secagg"  # the sum of m clients' raw updates


@dataclass(frozen=True)
class ThreatModel:
    """The deployment the noise is calibrated for: the DP mechanism's plan and the two target epsilons,
    and how many clients secure aggregation sums."""

    epsilon_a: float = 8.0
    epsilon_b: float = 1.0
    delta: float = 1e-5
    rounds: int = 10
    population: int = 60
    sample_size: int = 15
    amplify: bool = True
    secagg_clients: int = 15

    def epsilon(self, condition: Condition) -> float | None:
        """The target epsilon of a DP condition (None for the others)."""
        return {Condition.DP_EPS_A: self.epsilon_a, Condition.DP_EPS_B: self.epsilon_b}.get(condition)

    def noise_multiplier(self, condition: Condition) -> float:
        """``z`` of the condition: the DP mechanism's noise multiplier for its target epsilon at :attr:`delta`
        after :attr:`rounds` releases (:meth:`ReleasePlan.noise_multiplier_for`); 0 without DP."""
        epsilon = self.epsilon(condition)
        if epsilon is None:
            return 0.0
        plan = ReleasePlan(self.population, self.sample_size, self.delta, self.amplify)
        return _noise_multiplier(plan, epsilon, self.rounds)


@lru_cache(maxsize=32)
def _noise_multiplier(plan: ReleasePlan, epsilon: float, rounds: int) -> float:
    return plan.noise_multiplier_for(epsilon, rounds)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a client trains (and the server sees move)."""
    return [p for p in model.parameters() if p.requires_grad]


def one_step_gradient(model: nn.Module, loss: ClientLoss, lr: float) -> Gradient:
    """What the server infers from a client's one SGD step: ``(sent - returned) / lr`` per trainable
    parameter. ``model`` (the sent weights) is left unchanged; the client trains a copy in train mode."""
    client = copy.deepcopy(model).train()
    sent = [p.detach().clone() for p in trainable(client)]
    optimizer = torch.optim.SGD(trainable(client), lr=lr)
    optimizer.zero_grad()
    loss(client).backward()
    optimizer.step()
    return tuple((before - after.detach()) / lr for before, after in zip(sent, trainable(client)))


def norm(gradient: Gradient) -> float:
    """The L2 norm of a whole gradient (all parameters together)."""
    return float(torch.sqrt(torch.stack([(g.double() ** 2).sum() for g in gradient]).sum()))


def clip_and_noise(
    gradient: Gradient, clip_norm: float | None, noise_std: float, generator: torch.Generator | None = None
) -> Gradient:
    """``gradient`` scaled to an L2 norm of at most ``clip_norm`` (None: not clipped), plus i.i.d. Gaussian
    noise of std ``noise_std`` on every coordinate."""
    scale = 1.0 if clip_norm is None else min(1.0, clip_norm / max(norm(gradient), 1e-12))
    noisy = []
    for g in gradient:
        noise = torch.randn(g.shape, generator=generator, dtype=g.dtype) if noise_std > 0 else torch.zeros_like(g)
        noisy.append(g * scale + noise_std * noise)
    return tuple(noisy)


def observe(
    model: nn.Module,
    losses: Sequence[ClientLoss],
    lr: float,
    clip_norm: float | None = None,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> Gradient:
    """The sum over clients of each client's one-step gradient (:func:`one_step_gradient`), each first
    clipped and noised on the client (:func:`clip_and_noise`)."""
    parts = [clip_and_noise(one_step_gradient(model, loss, lr), clip_norm, noise_std, generator) for loss in losses]
    return tuple(torch.stack(column).sum(dim=0) for column in zip(*parts))


def observe_none(model: nn.Module, loss: ClientLoss, lr: float) -> Gradient:
    """Condition ``none``: one client's raw update."""
    return observe(model, [loss], lr)


def observe_dp(
    model: nn.Module, loss: ClientLoss, lr: float, clip_norm: float, noise_multiplier: float, generator: torch.Generator
) -> Gradient:
    """Conditions ``dp-eps-*``: one client's update clipped to ``clip_norm`` with Gaussian noise of std
    ``noise_multiplier * clip_norm`` that the server cannot remove (local or distributed noise)."""
    return observe(model, [loss], lr, clip_norm, noise_multiplier * clip_norm, generator)


def observe_secagg(model: nn.Module, losses: Sequence[ClientLoss], lr: float) -> Gradient:
    """Condition ``secagg``: only the sum of the clients' raw updates (the target is one of ``losses``)."""
    return observe(model, losses, lr)


AttackLoss = Callable[[nn.Module, torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor]
LatentInit = Callable[[Gradient, int, torch.Generator], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class AttackSpec:
    """What the attacker assumes about a client's training.

    ``loss(model, images, latents)``: the loss of one client's batch of dummy images (in the model's input
    space) and the dummy unknowns ``latents`` (labels, head pose, ...), one row per image;
    ``init_latents(observed, count, generator)``: their starting values for ``count`` dummies, which may be
    read from the observed gradient; ``input_range``: the box of the model's input pixels.
    """

    loss: AttackLoss
    init_latents: LatentInit
    input_range: tuple[float, float]


def linear_input(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor:
    """The input of a linear layer recovered from its gradients when the batch holds one sample:
    ``dL/dW = (dL/dy) x^T`` and ``dL/db = dL/dy``, so ``x`` is the least-squares ratio over output rows."""
    return (bias_grad @ weight_grad) / torch.clamp(bias_grad @ bias_grad, min=1e-30)


def last_bias(model: nn.Module) -> int:
    """The position (in :func:`trainable` order) of the output layer's bias: the last trainable parameter
    named ``*bias``."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return max(i for i, name in enumerate(names) if name.endswith("bias"))


def output_gradients(observed: Gradient, bias: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """Starting values of the per-sample gradients of the loss at the output, ``(count, outputs)``: the
    output bias's gradient (their sum) shared equally, plus 10 % noise to tell the dummies apart when
    ``count > 1``. For one sample this *is* the output gradient (iDLG's observation, Zhao et al. 2020)."""
    shared = observed[bias] / count
    if count == 1:
        return shared[None].clone()
    spread = shared.abs().mean() * 0.1 * torch.randn(count, shared.numel(), generator=generator)
    return shared.expand(count, -1) + spread


def surrogate_spec(model: nn.Module, input_range: tuple[float, float]) -> AttackSpec:
    """Any single-input model whose last layer has a bias: the client's loss, whatever it is, is replaced by
    the linear loss ``sum_i <f(x_i), g_i>``, which has the same parameter gradient when ``g_i`` is the loss's
    gradient at output ``f(x_i)``; the ``g_i`` are latents started by :func:`output_gradients`."""
    bias = last_bias(model)

    def loss(net: nn.Module, images: torch.Tensor, latents: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.sum(net(images) * latents[0])

    def init(observed: Gradient, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (output_gradients(observed, bias, count, generator),)

    return AttackSpec(loss, init, input_range)


def gaze_spec(model: nn.Module) -> AttackSpec:
    """The gaze LeNet (:class:`fedpersonal.models.lenet.GazeLeNet`): images in ``[0, 1]``; latents: the
    output gradients ``g_i`` (as :func:`surrogate_spec`; the gaze label follows, :func:`gaze_labels`) and the
    head pose, which starts, with one dummy, at its value read from the head's gradient (:func:`linear_input`),
    else at 0."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    head_weight, head_bias = names.index("head.weight"), names.index("head.bias")

    def loss(net: nn.Module, images: torch.Tensor, latents: tuple[torch.Tensor, ...]) -> torch.Tensor:
        gradients, pose = latents
        return torch.sum(net(images, pose) * gradients)

    def init(observed: Gradient, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        pose = torch.zeros(count, 2)
        if count == 1:
            pose[0] = linear_input(observed[head_weight], observed[head_bias])[-2:]
        return output_gradients(observed, head_bias, count, generator), pose

    return AttackSpec(loss, init, (0.0, 1.0))


def gaze_labels(model: nn.Module, reconstruction: Reconstruction, observed: Gradient, batch_size: int) -> torch.Tensor:
    """The gaze labels (pitch, yaw) a :func:`gaze_spec` reconstruction implies: the task's loss is the mean
    of ``(pred - gaze)^2`` over ``B`` samples and 2 angles, so ``dL/dpred_i = (pred_i - gaze_i) / B`` and
    ``gaze_i = pred_i - B g_i``, with the ``g_i`` rescaled so that their sum best fits the observed head
    bias gradient (the cosine leaves their scale free). Under secure aggregation the gradients of the
    clients' means add up, so ``B`` is each client's batch. One row per dummy, as the reconstruction's."""
    gradients, pose = reconstruction.latents
    bias, total = observed[last_bias(model)], gradients.sum(dim=0)
    scale = float((total @ bias) / torch.clamp(total @ total, min=1e-30))
    model.eval()
    with torch.no_grad():
        return model(reconstruction.images, pose) - batch_size * scale * gradients


def face_spec(model: nn.Module) -> AttackSpec:
    """The face embedding net: images in ``[-1, 1]``; the client's private classifier and CosFace loss are
    replaced by the linear loss of :func:`surrogate_spec` on the embedding (exact for one image)."""
    return surrogate_spec(model, (-1.0, 1.0))


@dataclass(frozen=True)
class AttackSettings:
    """The optimisation: Adam steps on the signs of the gradients, the images' step size (relative to the
    input box's width) and the latents' (absolute; both divided by 10 at 3/8, 5/8 and 7/8 of the steps, as
    Geiping et al.), the total-variation weight, random restarts (the one with the lowest final cost is
    kept). A latent step as large as the images' can flip the sign of a label's error, which the cosine
    cannot undo."""

    steps: int = 300
    lr: float = 0.1
    latent_lr: float = 0.01
    tv_weight: float = 1e-2
    restarts: int = 1


@dataclass(frozen=True)
class Reconstruction:
    """The dummies after the attack: images in ``[0, 1]``, ``(groups * batch, C, H, W)``, group-major; the
    latents; the final cost (cosine distance + TV); the cost every 50 steps."""

    images: torch.Tensor
    latents: tuple[torch.Tensor, ...]
    cost: float
    history: list[float] = field(default_factory=list)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally adjacent pixels."""
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean()


def cosine_distance(gradient: Gradient, observed: Gradient) -> torch.Tensor:
    """``1 - cos`` between two whole gradients (all parameters as one vector)."""
    dot = torch.stack([(g * o).sum() for g, o in zip(gradient, observed)]).sum()
    g_norm = torch.sqrt(torch.stack([(g**2).sum() for g in gradient]).sum())
    o_norm = math.sqrt(sum(float((o**2).sum()) for o in observed))
    return 1.0 - dot / torch.clamp(g_norm * o_norm, min=1e-12)


def reconstruct(
    model: nn.Module,
    observed: Gradient,
    spec: AttackSpec,
    shape: tuple[int, ...],
    batch_size: int = 1,
    groups: int = 1,
    settings: AttackSettings | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Optimise ``groups * batch_size`` dummy images of ``shape`` (C, H, W) whose summed gradient (each
    group a client's batch, so BatchNorm statistics are per client) matches ``observed``.

    ``model`` holds the weights the server sent; it is not modified (the attack runs on a copy in train
    mode, as the client trained)."""
    settings = settings or AttackSettings()
    net = copy.deepcopy(model).train()
    params = trainable(net)
    low, high = spec.input_range
    count = groups * batch_size
    best: Reconstruction | None = None
    for restart in range(settings.restarts):
        generator = torch.Generator().manual_seed(seed * 1000 + restart)
        images = (low + (high - low) * torch.rand((count, *shape), generator=generator)).requires_grad_(True)
        latents = tuple(t.clone().requires_grad_(True) for t in spec.init_latents(observed, count, generator))
        optimizer = torch.optim.Adam(
            [{"params": [images], "lr": settings.lr * (high - low)}, {"params": latents, "lr": settings.latent_lr}]
        )
        milestones = [settings.steps * k // 8 for k in (3, 5, 7)]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
        history: list[float] = []
        cost = torch.tensor(float("inf"))
        for step in range(settings.steps):
            optimizer.zero_grad()
            parts = [slice(k * batch_size, (k + 1) * batch_size) for k in range(groups)]  # one client each
            total = torch.stack([spec.loss(net, images[p], tuple(t[p] for t in latents)) for p in parts]).sum()
            dummy = torch.autograd.grad(total, params, create_graph=True)
            cost = cosine_distance(dummy, observed) + settings.tv_weight * total_variation(images)
            cost.backward()
            for variable in (images, *latents):  # signed gradients, as Geiping et al.
                assert variable.grad is not None
                variable.grad.sign_()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                images.clamp_(low, high)
            if step % 50 == 0:
                history.append(float(cost.detach()))
        result = Reconstruction(
            ((images.detach() - low) / (high - low)).clamp(0, 1),
            tuple(t.detach() for t in latents),
            float(cost.detach()),
            history,
        )
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return best


def psnr(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in ``[0, 1]`` (peak 1), one value per image of the
    batch: ``10 log10(1 / MSE)``; ``inf`` for identical images."""
    mse = ((reconstructed.double() - original.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(reconstructed: torch.Tensor, original: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al., IEEE TIP 2004) of images in ``[0, 1]`` (``L = 1``,
    ``K1 = 0.01``, ``K2 = 0.03``), one value per image of an ``(N, C, H, W)`` batch: the mean of the SSIM
    map over the positions where the Gaussian window (``window`` x ``window``, std ``sigma``) fits, and over
    channels. Images smaller than the window use a window of their size."""
    x, y = reconstructed.double(), original.double()
    channels = x.shape[1]
    size = min(window, x.shape[-2], x.shape[-1])
    kernel = _gaussian_window(size, sigma).expand(channels, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)


def match(reconstructed: torch.Tensor, originals: torch.Tensor) -> np.ndarray:
    """For each original, the index of the reconstruction assigned to it: a one-to-one assignment that
    minimises the total MSE (the batch order is not identifiable; with more dummies than originals, as
    under secure aggregation, the attacker is given the best ones)."""
    if len(reconstructed) < len(originals):
        raise ValueError(f"{len(reconstructed)} reconstructions cannot match {len(originals)} originals")
    diff = originals.double().flatten(1)[:, None, :] - reconstructed.double().flatten(1)[None, :, :]
    rows, columns = linear_sum_assignment((diff**2).mean(dim=2).numpy())
    return columns[np.argsort(rows)]


def face_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Unit embeddings of face images in ``[0, 1]`` (mapped to the face task's ``[-1, 1]`` input), in
    evaluation mode."""
    model.eval()
    with torch.no_grad():
        return F.normalize(model(images.float() * 2.0 - 1.0), dim=1)


def far_threshold(impostor_scores: np.ndarray, far: float) -> float:
    """The verification threshold that accepts (score > threshold) at most ``floor(far * n)`` of ``n``
    impostor pairs, as :func:`fedpersonal.metrics.face.tar_at_far` sets it."""
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(far * len(scores) + 1e-9))
    if allowed < 1:
        raise ValueError(f"FAR {far:g} needs at least {math.ceil(1 / far)} impostor pairs, got {len(scores)}")
    return float(scores[allowed]) if allowed < len(scores) else -math.inf


def identity_verified(
    generic_model: nn.Module, reconstructed: torch.Tensor, original: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Whether the generic face model verifies each reconstruction as the identity of its original (both
    in ``[0, 1]``, aligned by row): cosine similarity of their embeddings above ``threshold``."""
    scores = (face_embeddings(generic_model, reconstructed) * face_embeddings(generic_model, original)).sum(dim=1)
    return scores > threshold
