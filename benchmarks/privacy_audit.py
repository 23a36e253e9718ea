"""Privacy audit: what an honest-but-curious server reconstructs of a client's images from one update.

    python -m benchmarks.privacy_audit [--seeds 0 1 2]

Gradient inversion (:mod:`fedpersonal.privacy.inversion`: Inverting Gradients, cosine matching + TV prior,
signed Adam) of the batch behind one client's one-step update, on the weights the server sends in round 1:

* ``gaze-eye-b1`` / ``gaze-eye-b4``: the gaze LeNet at its random initialisation, a batch of 1 or 4 of the
  client's eye images (36x60); the attack also recovers the head pose and the gaze label;
* ``face-b1``: the generic face backbone pretrained on the server's public identities, one face (32x32) of
  the client, whose loss is CosFace (s 30, m 0.4) against its private classifier imprinted from its own
  training images; the attack does not know the classifier (:func:`fedpersonal.privacy.inversion.face_spec`).
  Two target clients per seed.

Conditions (:class:`fedpersonal.privacy.inversion.Condition`): ``none`` (the raw update), ``dp-eps-8`` and
``dp-eps-1`` (the update clipped to ``C`` with Gaussian noise ``z * C`` the server cannot remove; ``z`` the
DP mechanism's noise multiplier for that epsilon at delta 1e-5 after 10 rounds of 15 of 60 clients; ``C``
the median one-step gradient norm of 8 other clients), ``secagg`` (the sum of the target's and 3 other
clients' updates; all dummies are reconstructed and the target's images get the best-matching ones).
References: ``prior`` (the mean image and label of the 8 other clients' batches: what the server knows
without the update), for faces ``original`` (the original image itself: how often the generic model
verifies two real images of the person), and on ``gaze-eye-b1`` a sweep of small noise multipliers showing
where the attack breaks.

Seed ``s``: data seed ``s`` (and the face pretraining), model initialisation ``s``, target clients
``s + 100 t``, attack seed ``s``. Writes ``benchmarks/results/privacy_audit.{json,md}``,
``privacy_audit.png`` (originals vs reconstructions) and ``privacy_audit_noise.png`` (PSNR against z).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from clients.face import imprinted_rows  # noqa: E402
from fedpersonal.config import RunConfig  # noqa: E402
from fedpersonal.figures import save_figure  # noqa: E402
from fedpersonal.losses.face import cosface_loss  # noqa: E402
from fedpersonal.metrics.angular import angular_error_deg  # noqa: E402
from fedpersonal.models.face import cosine  # noqa: E402
from fedpersonal.privacy import inversion as inv  # noqa: E402
from fedpersonal.privacy.accounting import ReleasePlan  # noqa: E402
from fedpersonal.tasks.face import FaceTask, pixels  # noqa: E402
from fedpersonal.tasks.gaze import GazeTask  # noqa: E402
from simulations.reporting import RESULTS_DIR, benchmark_row, invocation, write_benchmark  # noqa: E402

NAME = "privacy_audit"
THREAT = inv.ThreatModel(
    epsilon_a=8.0, epsilon_b=1.0, delta=1e-5, rounds=10, population=60, sample_size=15, amplify=True, secagg_clients=4
)
SETTINGS = {
    "gaze": inv.AttackSettings(steps=300, lr=0.1, latent_lr=0.01, tv_weight=1e-2),
    "face": inv.AttackSettings(steps=1000, lr=0.1, latent_lr=0.01, tv_weight=0.2),
}
# (name, task, batch, targets per seed): faces attack two clients' images per seed, for the verified rates
SCENARIOS = (("gaze-eye-b1", "gaze", 1, 1), ("gaze-eye-b4", "gaze", 4, 1), ("face-b1", "face", 1, 2))
SWEEP = (0.001, 0.01, 0.1)  # extra noise multipliers on gaze-eye-b1
CALIBRATION_CLIENTS = 8  # other clients whose median gradient norm is the clipping norm C
FAR = 0.01  # the face verification threshold: FAR 1% of the generic model on unseen identities
TARGET_STRIDE = 100  # target t of seed s is client s + 100 t; partners 1000 + ..., calibration 2000 + ...
PSNR, SSIM = "PSNR (dB) vs original; lower = less leaked", "SSIM vs original; lower = less leaked"
VERIFIED = "identity verified vs original image (generic model, FAR 1%); lower = less leaked"
VERIFIED_OTHER = "identity verified vs another image of the person (generic model, FAR 1%); lower = less leaked"
LABEL = "gaze label error (deg) of the inferred label; higher = less leaked"


@dataclass
class Setup:
    """One target: the sent model, the attack's assumptions, the target batch (images in [0, 1]) and its
    client loss, the secagg partners' losses, the clipping norm (gradient units), the prior image."""

    task: str
    model: nn.Module
    spec: inv.AttackSpec
    shape: tuple[int, ...]
    images: torch.Tensor
    loss: inv.ClientLoss
    partners: list[inv.ClientLoss]
    clip_norm: float
    prior: torch.Tensor
    lr: float
    threshold: float = float("nan")  # face: the generic model's verification threshold
    same_person: torch.Tensor | None = None  # face: another image of each target's identity
    gaze: torch.Tensor | None = None  # gaze: the true labels
    prior_gaze: torch.Tensor | None = None  # gaze: the mean label of the calibration batches


@dataclass
class Attempt:
    """One attack's outcome: the reconstructions matched to the target's images (in [0, 1]), the gaze
    labels they imply (gaze), the seconds the attack took."""

    images: torch.Tensor
    gaze: torch.Tensor | None
    seconds: float


def gaze_batch(task: GazeTask, client: int, batch: int) -> tuple[torch.Tensor, inv.ClientLoss, torch.Tensor]:
    """The first ``batch`` training images of a client in [0, 1], its MSE loss on them, their gaze labels."""
    images, pose, gaze = (t[:batch] for t in task.client_data(client).train)
    x = images.float() / 255.0

    def loss(net: nn.Module) -> torch.Tensor:
        return torch.mean((net(x, pose) - gaze) ** 2)

    return x, loss, gaze


def face_batch(task: FaceTask, model: nn.Module, client: int, batch: int) -> tuple[torch.Tensor, inv.ClientLoss]:
    """The first ``batch`` training faces of a client in [0, 1] and its CosFace loss against its classifier
    imprinted with the received backbone (as the face clients start)."""
    images, labels = task.client_data(client).train
    rows = imprinted_rows(model, images, labels)
    scale, margin = task.settings.cosface_scale, task.settings.cosface_margin
    u8, y = images[:batch], labels[:batch]

    def loss(net: nn.Module) -> torch.Tensor:
        return cosface_loss(cosine(net(pixels(u8)), rows), y, scale, margin)

    return u8.float() / 255.0, loss


def median_norm(model: nn.Module, losses: Sequence[inv.ClientLoss], lr: float) -> float:
    """The median norm of the clients' one-step gradients (the clipping norm C, in gradient units)."""
    return float(np.median([inv.norm(inv.one_step_gradient(model, loss, lr)) for loss in losses]))


def face_config(seed: int) -> RunConfig:
    """The face run of data seed ``seed`` (a face algorithm: the backbone is the shared model)."""
    return RunConfig(task="face", strategy="face-fedavg", seed=seed)


@lru_cache(maxsize=4)
def verification_threshold(seed: int) -> float:
    """The generic face model's threshold at FAR 1% on the unseen identities' impostor pairs (data seed)."""
    task = FaceTask(face_config(seed))
    model = task.initial_model(task.build_model())
    pairs = task.source.verification(task.cfg.seed, task.settings, task.cfg.heterogeneity)
    embeddings = inv.face_embeddings(model, pairs.images.float() / 255.0)
    scores = (embeddings[pairs.first] * embeddings[pairs.second]).sum(dim=1).numpy()
    return inv.far_threshold(scores[~pairs.genuine], FAR)


def setup(task_name: str, batch: int, seed: int, target: int) -> Setup:
    """Target ``target`` of seed ``seed``: its batch, its secagg partners, the clipping norm and the prior."""
    client = seed + TARGET_STRIDE * target
    partners = [1000 + 10 * client + k for k in range(THREAT.secagg_clients - 1)]
    calibration = [2000 + 10 * client + k for k in range(CALIBRATION_CLIENTS)]
    torch.manual_seed(seed)
    extra: dict[str, Any]
    if task_name == "gaze":
        cfg = RunConfig(task="gaze", seed=seed)
        gaze = GazeTask(cfg)
        model = gaze.build_model()
        images, loss, labels = gaze_batch(gaze, client, batch)
        others: list[tuple[torch.Tensor, inv.ClientLoss, Any]] = [gaze_batch(gaze, c, batch) for c in partners]
        calibrating: list[tuple[torch.Tensor, inv.ClientLoss, Any]] = [gaze_batch(gaze, c, batch) for c in calibration]
        prior_gaze = torch.cat([labels for _, _, labels in calibrating]).mean(dim=0, keepdim=True)
        extra = {"gaze": labels, "prior_gaze": prior_gaze.expand_as(labels)}
        spec, shape = inv.gaze_spec(model), (1, 36, 60)
    else:
        cfg = face_config(seed)
        face = FaceTask(cfg)
        model = face.initial_model(face.build_model())
        images, loss = face_batch(face, model, client, batch)
        others = [(*face_batch(face, model, c, batch), None) for c in partners]
        calibrating = [(*face_batch(face, model, c, batch), None) for c in calibration]
        train_images, labels = face.client_data(client).train
        same = [next(int(j) for j in np.flatnonzero(labels.numpy() == int(labels[i])) if j != i) for i in range(batch)]
        extra = {"threshold": verification_threshold(seed), "same_person": train_images[same].float() / 255.0}
        spec, shape = inv.face_spec(model), (1, face.settings.image_size, face.settings.image_size)
    prior = torch.cat([x for x, _, _ in calibrating]).mean(dim=0, keepdim=True).expand_as(images)
    clip = median_norm(model, [client_loss for _, client_loss, _ in calibrating], cfg.lr)
    partner_losses = [client_loss for _, client_loss, _ in others]
    return Setup(task_name, model, spec, shape, images, loss, partner_losses, clip, prior, cfg.lr, **extra)


def attack(s: Setup, condition: str, noise_multiplier: float, seed: int) -> Attempt:
    """Observe the update under ``condition`` (``secagg``; else clipped with noise ``z * C`` when the noise
    multiplier is > 0, or raw) and reconstruct."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    groups = 1
    if condition == inv.Condition.SECAGG.value:
        observed = inv.observe_secagg(s.model, [s.loss, *s.partners], s.lr)
        groups = 1 + len(s.partners)
    elif noise_multiplier > 0:
        observed = inv.observe_dp(s.model, s.loss, s.lr, s.clip_norm, noise_multiplier, generator)
    else:
        observed = inv.observe_none(s.model, s.loss, s.lr)
    start = time.perf_counter()
    result = inv.reconstruct(s.model, observed, s.spec, s.shape, len(s.images), groups, SETTINGS[s.task], seed)
    seconds = time.perf_counter() - start
    order = inv.match(result.images, s.images)
    labels = inv.gaze_labels(s.model, result, observed, len(s.images))[order] if s.task == "gaze" else None
    return Attempt(result.images[order], labels, seconds)


def scores(s: Setup, attempt: Attempt) -> dict[str, torch.Tensor]:
    """Per image: PSNR, SSIM; for gaze the inferred label's angular error; for faces whether the identity is
    verified against the original image and against another image of the person."""
    found = {PSNR: inv.psnr(attempt.images, s.images), SSIM: inv.ssim(attempt.images, s.images)}
    if s.gaze is not None and attempt.gaze is not None:
        found[LABEL] = torch.from_numpy(angular_error_deg(attempt.gaze.numpy(), s.gaze.numpy()))
    if s.same_person is not None:
        found[VERIFIED] = inv.identity_verified(s.model, attempt.images, s.images, s.threshold).double()
        found[VERIFIED_OTHER] = inv.identity_verified(s.model, attempt.images, s.same_person, s.threshold).double()
    return found


def conditions(noise: dict[str, float]) -> list[tuple[str, float]]:
    """(label, noise multiplier) of every threat-model condition, in table order."""
    return [("none", 0.0), (f"dp-eps-{THREAT.epsilon_a:g}", noise["A"]), (f"dp-eps-{THREAT.epsilon_b:g}", noise["B"]),
            (inv.Condition.SECAGG.value, 0.0)]  # fmt: skip


def run(seeds: Sequence[int]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Every scenario x condition x seed x target; returns the rows, the run's facts and the images to plot."""
    noise = {
        "A": THREAT.noise_multiplier(inv.Condition.DP_EPS_A),
        "B": THREAT.noise_multiplier(inv.Condition.DP_EPS_B),
    }
    plan = ReleasePlan(THREAT.population, THREAT.sample_size, THREAT.delta, THREAT.amplify)
    sweep_epsilon = {f"{z:g}": plan.epsilon(z, THREAT.rounds) for z in SWEEP}
    per_image: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    facts: dict[str, Any] = {"noise_multiplier": noise, "sweep_epsilon": sweep_epsilon, "clip_norm": {},
                             "attack_seconds": {}}  # fmt: skip

    def record(scenario: str, label: str, metric: str, seed: int, values: torch.Tensor) -> None:
        per_image.setdefault((scenario, label, metric), {}).setdefault(seed, []).extend(values.tolist())

    for scenario, task_name, batch, targets in SCENARIOS:
        labelled = conditions(noise) + ([(f"noise-z{z:g}", z) for z in SWEEP] if scenario == "gaze-eye-b1" else [])
        for seed in seeds:
            for target in range(targets):
                s = setup(task_name, batch, seed, target)
                facts["clip_norm"][f"{scenario}/{seed}/{target}"] = s.clip_norm
                attempts = {label: attack(s, label, z, seed) for label, z in labelled}
                attempts["prior"] = Attempt(s.prior, s.prior_gaze, 0.0)
                for label, attempt in attempts.items():
                    facts["attack_seconds"][f"{scenario}/{label}/{seed}/{target}"] = round(attempt.seconds, 2)
                    for metric, values in scores(s, attempt).items():
                        record(scenario, label, metric, seed, values)
                    if seed == seeds[0]:
                        example = scenario if target == 0 else f"{scenario} client {1 + target}"
                        examples.setdefault(example, {"original": s.images})[label] = attempt.images
                    print(f"{scenario} seed {seed} target {target} {label}: PSNR "
                          f"{float(inv.psnr(attempt.images, s.images).mean()):.2f} ({attempt.seconds:.0f} s)",
                          flush=True)  # fmt: skip
                if s.same_person is not None:  # the ceiling: the original image itself against the other one
                    verified = inv.identity_verified(s.model, s.images, s.same_person, s.threshold).double()
                    record(scenario, "original", VERIFIED_OTHER, seed, verified)
    rows = []
    for (scenario, label, metric), per_seed in per_image.items():
        better = "higher" if metric == LABEL else "lower"
        row = benchmark_row(label, metric, {seed: float(np.mean(v)) for seed, v in per_seed.items()}, better)
        everything = [x for v in per_seed.values() for x in v]
        most = min(everything) if metric == LABEL else max(everything)
        rows.append({"scenario": scenario, **row, "images": len(everything), "most_leaked": most})
    return rows, facts, examples


def summary_table(rows: Sequence[dict[str, Any]], facts: dict[str, Any]) -> str:
    """One line per scenario and condition: noise multiplier, epsilon, PSNR, SSIM, label error, verified rates."""
    noise = facts["noise_multiplier"]
    z_of = {f"dp-eps-{THREAT.epsilon_a:g}": noise["A"], f"dp-eps-{THREAT.epsilon_b:g}": noise["B"]}
    eps_of = {f"dp-eps-{THREAT.epsilon_a:g}": THREAT.epsilon_a, f"dp-eps-{THREAT.epsilon_b:g}": THREAT.epsilon_b}
    for z in SWEEP:
        z_of[f"noise-z{z:g}"], eps_of[f"noise-z{z:g}"] = z, facts["sweep_epsilon"][f"{z:g}"]
    index = {(r["scenario"], r["algorithm"], r["metric"]): r for r in rows}

    def cell(scenario: str, label: str, metric: str, digits: int) -> str:
        row = index.get((scenario, label, metric))
        return "-" if row is None else f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"

    def most(scenario: str, label: str, metric: str, digits: int) -> str:
        row = index.get((scenario, label, metric))
        return "-" if row is None else f"{row['most_leaked']:.{digits}f}"

    lines = ["## Reconstruction table", "",
             "Mean ± std over seeds of the per-seed mean over images; 'most leaked' is the single image with the "
             "highest PSNR (lowest label error) over all seeds. Lower PSNR/SSIM/verified = less leaked.", "",
             "| scenario | condition | z | epsilon | PSNR (dB) | most leaked PSNR | SSIM | gaze label error (deg) "
             "| identity verified (same image) | identity verified (other image) | images |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    seen: list[tuple[str, str]] = []
    for r in rows:
        if (r["scenario"], r["algorithm"]) not in seen:
            seen.append((r["scenario"], r["algorithm"]))
    for scenario, label in seen:
        z_text = f"{z_of[label]:.3g}" if label in z_of else "-"
        epsilon = f"{eps_of[label]:,.3g}" if label in eps_of else ("∞" if label in ("none", "secagg") else "-")
        count = max(r["images"] for r in rows if (r["scenario"], r["algorithm"]) == (scenario, label))
        values = [cell(scenario, label, PSNR, 2), most(scenario, label, PSNR, 2), cell(scenario, label, SSIM, 3),
                  cell(scenario, label, LABEL, 1), cell(scenario, label, VERIFIED, 2),
                  cell(scenario, label, VERIFIED_OTHER, 2)]  # fmt: skip
        lines.append(f"| {scenario} | {label} | {z_text} | {epsilon} | {' | '.join(values)} | {count} |")
    return "\n".join(lines)


def plot_examples(examples: dict[str, dict[str, torch.Tensor]], labels: Sequence[str]) -> Path:
    """A grid: one row per example image of the first seed, original then each condition's reconstruction."""
    columns = ["original", *labels, "prior"]
    entries = [(scenario, i) for scenario, found in examples.items() for i in range(len(found["original"]))]
    fig, axes = plt.subplots(len(entries), len(columns), figsize=(1.6 * len(columns), 1.25 * len(entries)))
    for row, (scenario, i) in enumerate(entries):
        original = examples[scenario]["original"][i : i + 1]
        for column, label in enumerate(columns):
            ax = axes[row, column]
            image = examples[scenario][label][i : i + 1]
            ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if label != "original":
                ax.set_xlabel(f"{float(inv.psnr(image, original)[0]):.1f} dB", fontsize=7)
            if row == 0:
                ax.set_title(label, fontsize=8)
            if column == 0:
                ax.set_ylabel(f"{scenario}\n#{i}", fontsize=7)
    return save_figure(fig, RESULTS_DIR / f"{NAME}.png", dpi=90)


def plot_noise(rows: Sequence[dict[str, Any]], facts: dict[str, Any]) -> Path:
    """gaze-eye-b1: PSNR against the noise multiplier (log), the sweep and the two DP conditions; the
    no-noise and prior levels dashed."""
    index = {(r["scenario"], r["algorithm"], r["metric"]): r for r in rows}
    noise = facts["noise_multiplier"]
    points = [(z, index[("gaze-eye-b1", f"noise-z{z:g}", PSNR)]) for z in SWEEP] + [
        (noise["A"], index[("gaze-eye-b1", f"dp-eps-{THREAT.epsilon_a:g}", PSNR)]),
        (noise["B"], index[("gaze-eye-b1", f"dp-eps-{THREAT.epsilon_b:g}", PSNR)]),
    ]
    points.sort(key=lambda p: p[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points], yerr=[p[1]["std"] for p in points],
                marker="o", label="clipped + noise z*C")  # fmt: skip
    for label, color in (("none", "tab:red"), ("secagg", "tab:green"), ("prior", "tab:gray")):
        ax.axhline(index[("gaze-eye-b1", label, PSNR)]["mean"], color=color, linestyle="--", label=label)
    for z, name in ((noise["A"], f"eps {THREAT.epsilon_a:g}"), (noise["B"], f"eps {THREAT.epsilon_b:g}")):
        ax.annotate(name, (z, index[("gaze-eye-b1", f"dp-eps-{name.split()[1]}", PSNR)]["mean"]), fontsize=8,
                    textcoords="offset points", xytext=(4, 6))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("noise multiplier z (noise std / clipping norm), log")
    ax.set_ylabel("PSNR of the reconstruction (dB)")
    ax.set_title("gaze eye, batch 1: what the server reconstructs", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, RESULTS_DIR / f"{NAME}_noise.png", dpi=90)


def median_seconds(facts: dict[str, Any], scenario: str) -> float:
    """The median seconds of the scenario's single-client attacks (not secagg, not the references)."""
    times = [t for key, t in facts["attack_seconds"].items() if key.startswith(f"{scenario}/") and t > 0
             and "/secagg/" not in key]  # fmt: skip
    return float(np.median(times)) if times else float("nan")


def main(argv: list[str] | None = None) -> None:
    """Run the audit; write the results, the table and the plots."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    rows, facts, examples = run(args.seeds)
    facts["total_seconds"] = round(time.perf_counter() - start, 1)
    facts["cpu_seconds"] = round(time.process_time() - cpu, 1)  # what one idle core would need, about
    labels = [label for label, _ in conditions(facts["noise_multiplier"])]
    grid, noise_plot = plot_examples(examples, labels), plot_noise(rows, facts)
    config = {
        "threat_model": asdict(THREAT),
        "attack": {task: asdict(settings) for task, settings in SETTINGS.items()},
        "scenarios": [{"name": n, "task": t, "batch": b, "targets_per_seed": k} for n, t, b, k in SCENARIOS],
        "sweep_noise_multipliers": list(SWEEP),
        "calibration_clients": CALIBRATION_CLIENTS,
        "face_far": FAR,
        "seeds": list(args.seeds),
        **facts,
    }
    notes = "\n\n".join([
        summary_table(rows, facts),
        f"Noise multipliers: z = {facts['noise_multiplier']['A']:.3f} for epsilon {THREAT.epsilon_a:g} and "
        f"{facts['noise_multiplier']['B']:.3f} for epsilon {THREAT.epsilon_b:g} (delta {THREAT.delta:g}, "
        f"{THREAT.rounds} rounds, {THREAT.sample_size} of {THREAT.population} clients per round). Attack: "
        f"gaze {SETTINGS['gaze'].steps} steps (TV {SETTINGS['gaze'].tv_weight:g}), face {SETTINGS['face'].steps} "
        f"steps (TV {SETTINGS['face'].tv_weight:g}); one attack took {median_seconds(facts, 'gaze-eye-b1'):.0f} s "
        f"(gaze, 1 image), {median_seconds(facts, 'gaze-eye-b4'):.0f} s (gaze, 4 images), "
        f"{median_seconds(facts, 'face-b1'):.0f} s (face) in the median, secagg about 4 times that. "
        f"Total {facts['total_seconds']:.0f} s wall, {facts['cpu_seconds']:.0f} s CPU, on 1 thread.",
        f"Plots: `{grid.name}` (originals vs reconstructions, seed {args.seeds[0]}; the number under each is its "
        f"PSNR), `{noise_plot.name}`.",
    ])  # fmt: skip
    write_benchmark(NAME, invocation(), config, rows, notes)


if __name__ == "__main__":
    main()
