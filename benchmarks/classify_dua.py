"""DUA and unsupervised local adaptation on shifted users; AdaBN on gaze users with shifted lighting.

    python -m benchmarks.classify_dua [--seeds 0 1 2 3 4]

Classification (task ``classify``, shapes, ``user-shift = "corruption"``: DUA's TransPrior): eight
users, each with its own palette/texture/style *and* its own corruption (one of the eight of
``classify.corruptions``). The server trains a generic model on clean labelled data and one expert
per corruption (fine-tuned from it) on labelled server data whose styles no user has. Through the
real strategy and client (``strategy = "dua"``, experts trained once per seed and passed with
``dua.experts-path``), as one strategy-comparison matrix (:func:`simulations.matrix.run_matrix`)
kept under ``--out`` (default ``runs/benchmarks/classify_dua``, with the experts; rerunning reuses
both, delete the folder after changing this script's settings): round 0 evaluates the generic
model on every user's test split, round 1 the user's merged model; ``adapt.method`` adds the
local step (personalized metrics). Adaptation uses the user's unlabelled training split. The DUA
runs include ``dua.omega-adabn`` (each expert AdaBN-adapted on the user's data before its Omega).
Plain loops add the references: the user's own-domain expert (an oracle that knows the
corruption), the uniform merge of the experts (mean-IMM, no user prior; also with the mean of the
experts' BN statistics instead of the first expert's), the reference code's user-agnostic baseline
mode-IMM (Omega of each expert on the server data of its own domain: one merged model for every
user) and an analysis merge, the experts weighted by their MAS Omega *shares* (one scalar per
expert) instead of element-wise. And per user, the diagnostics of
:mod:`fedpersonal.adaptation.diagnostics` for each prior (MAS, Fisher, each without and with AdaBN
first): every expert's share of the total Omega, its mean merge weight, its output norm and BN
variance on the user's data; do one expert's shares dominate every user?

Results are written after every seed (the matrix, the experts and each seed's plain-loop results
are kept under ``--out``; rerunning reuses them): ``classify_dua.{json,md,png}``,
``classify_dua_shares.png`` and ``classify_dua_diagnostics.{json,md}``; paired per-seed
differences with 95% intervals (:func:`simulations.reporting.paired_table`).

Gaze (plain loop): MPIIGaze's LeNet and the LeNet with BatchNorm after its convs
(``gaze.batchnorm``), trained on 15 users, tested on 10 unseen users as they are, and with a
per-user lighting/noise shift (brightness, contrast or Gaussian noise from
:mod:`fedpersonal.data.corruptions`), without and with AdaBN on the unseen user's unlabelled samples.
TENT and pseudo-labels need class probabilities: not for regression.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.adaptation import AdaptSettings, adapt_model
from fedpersonal.adaptation.diagnostics import diagnose_user, dominance
from fedpersonal.adaptation.dua import DUASettings
from fedpersonal.adaptation.experts import ExpertSet, load_experts, save_experts, train_experts
from fedpersonal.adaptation.imm import imm_merge
from fedpersonal.adaptation.prior import server_omegas
from fedpersonal.config import RunConfig
from fedpersonal.data.corruptions import corrupt
from fedpersonal.figures import save_figure
from fedpersonal.params import is_statistic
from fedpersonal.tasks import get_task
from fedpersonal.tasks.base import ClientData, Task
from fedpersonal.tasks.classify import user_domain
from fedpersonal.training import SGDSettings, Tensors, sgd_optimizer, stack, train_epochs
from simulations.matrix import Cell, Variant, plan_cells, run_matrix
from simulations.reporting import (
    MATRIX_DIR,
    RESULTS_DIR,
    benchmark_row,
    invocation,
    paired_difference,
    paired_table,
    result_payload,
    write_benchmark,
    write_json_result,
)
from simulations.server_app import parse_run_config

ROOT = Path(__file__).resolve().parents[1]

USERS = 8
CLASSIFY = {
    "task": "classify",
    "strategy": "dua",
    "num-clients": USERS,
    "num-rounds": 1,
    "samples-per-client": 300,
    "batch-size": 32,
    "dua.server-samples": 1500,
    "dua.generic-epochs": 12,
    "dua.expert-epochs": 4,
}
# adapt.method -> row suffix; TENT re-estimates BN statistics too (see fedpersonal/adaptation/tent.py).
ADAPTS = {"adabn": "AdaBN", "tent": "TENT", "adabn+pseudo-label": "AdaBN + pseudo-labels"}
# (dua.importance, dua.omega-norm, dua.omega-adabn) -> row name; all but the first two run with AdaBN only.
MERGES = {
    ("mas", "none", False): "DUA-MAS",
    ("fisher", "none", False): "DUA-Fisher",
    ("mas", "max", False): "DUA-MAS (max-norm)",
    ("fisher", "max", False): "DUA-Fisher (max-norm)",
    ("mas", "none", True): "DUA-MAS (Ω after AdaBN)",
    ("fisher", "none", True): "DUA-Fisher (Ω after AdaBN)",
}
UNIFORM, ORACLE = "mean-IMM (uniform merge)", "own-domain expert (oracle)"
MEAN_STATISTICS = "mean-IMM, mean BN statistics"
# The client's MAS merges again, with the experts' mean BN statistics (as the merge had them before the
# reference's one-model statistics were adopted): prior label -> row name.
DUA_MEAN_STATISTICS = {
    "MAS": "DUA-MAS, mean BN statistics",
    "MAS, Ω after AdaBN": "DUA-MAS (Ω after AdaBN), mean BN statistics",
}
SERVER_PRIOR = {"mas": "mode-IMM-MAS (server Ω)", "fisher": "mode-IMM-Fisher (server Ω)"}
SCALAR = "DUA-MAS, scalar Ω shares"
ACCURACY = "accuracy on shifted users (test split)"
FAMILIES = (
    "generic",
    *MERGES.values(),
    SCALAR,
    *SERVER_PRIOR.values(),
    UNIFORM,
    MEAN_STATISTICS,
    *DUA_MEAN_STATISTICS.values(),
    ORACLE,
)
# The diagnostics' priors: label -> (importance, Omega after AdaBN).
PRIORS = {
    "MAS": ("mas", False),
    "MAS, Ω after AdaBN": ("mas", True),
    "Fisher": ("fisher", False),
    "Fisher, Ω after AdaBN": ("fisher", True),
}
PLAIN_VERSION = 3  # of the per-seed plain-loop cache under --out/plain; bump when those loops change
GAZE = {"task": "gaze", "samples-per-client": 400, "batch-size": 32}
GAZE_EPOCHS, GAZE_UNSEEN = 4, 10
GAZE_SHIFTS = ("brightness", "contrast", "gaussian-noise")
ANGULAR = "unseen-user angular error (deg)"
PerUser = dict[str, list[float]]


def evaluated(run_dir: Any, server_round: int, key: str) -> list[float]:
    """Per-user ``key`` of the evaluate replies of ``server_round``, by partition id."""
    rows = [r for r in run_dir.read_rows("clients.jsonl") if r["phase"] == "evaluate" and r["round"] == server_round]
    return [row[key] for row in sorted(rows, key=lambda r: r["partition-id"])]


def dua_variants() -> dict[str, dict[str, Any]]:
    """Every DUA run of a seed: label -> (dua.importance, dua.omega-norm, dua.omega-adabn, adapt.method) keys."""
    variants = {}
    for importance, norm, omega_adabn in MERGES:
        adapts = ADAPTS if (norm, omega_adabn) == ("none", False) else {"adabn": ADAPTS["adabn"]}
        for method in adapts:
            label = f"dua-{importance}-{norm}-{'omega-adabn-' if omega_adabn else ''}{method.replace('+', '-')}"
            variants[label] = {
                "dua.importance": importance,
                "dua.omega-norm": norm,
                "dua.omega-adabn": omega_adabn,
                "adapt.method": method,
            }
    return variants


def dua_cells(seed: int, experts_path: Path) -> list[Cell]:
    """The matrix cells of one seed (its experts file is part of the run config)."""
    scenario = Variant("classify", {**CLASSIFY, "dua.experts-path": str(experts_path)})
    return plan_cells([scenario], [Variant(label, keys) for label, keys in dua_variants().items()], [seed])


def dua_rows(runs: dict[tuple[str, str, int], Any], seed: int) -> PerUser:
    """Generic, DUA merges and their adapted versions of one seed, from the matrix's run directories."""
    results: PerUser = {}
    for label, keys in dua_variants().items():
        run_dir = runs[("classify", label, seed)]
        merge = (keys["dua.importance"], keys["dua.omega-norm"], keys["dua.omega-adabn"])
        name, suffix = MERGES[merge], ADAPTS[keys["adapt.method"]]
        results[name] = evaluated(run_dir, 1, "accuracy")
        results[f"{name} + {suffix}"] = evaluated(run_dir, 1, "personalized-accuracy")
        if merge == ("mas", "none", False):
            results["generic"] = evaluated(run_dir, 0, "accuracy")
            results[f"generic + {suffix}"] = evaluated(run_dir, 0, "personalized-accuracy")
    return results


def with_mean_statistics(merged: dict[str, torch.Tensor], experts: ExpertSet) -> dict[str, torch.Tensor]:
    """``merged`` with the BN running statistics the uniform mean of the experts' (as before the
    reference's one-model statistics were adopted)."""
    return {
        name: torch.stack([e[name] for e in experts.experts]).mean(dim=0)
        if is_statistic(name) and value.is_floating_point()
        else value
        for name, value in merged.items()
    }


def scalar_merge(experts: ExpertSet, shares: Any) -> dict[str, torch.Tensor]:
    """The experts weighted by one scalar each (``shares``, summing to 1) for every parameter but the
    head (their mean) and the BN statistics (the first expert's), as :func:`imm_merge` treats them."""
    uniform = imm_merge(experts.experts, [{} for _ in experts.experts])
    return {
        name: sum(float(w) * e[name] for w, e in zip(shares, experts.experts))
        if value.is_floating_point() and not is_statistic(name) and not name.startswith("head.")
        else value
        for name, value in uniform.items()
    }


def plain_seed(task: Task, cfg: RunConfig, experts: ExpertSet, seed: int) -> dict[str, Any]:
    """The plain-loop references of one seed (without and with AdaBN) and the per-user diagnostics."""
    results: PerUser = {}
    diagnostics: dict[str, list[dict[str, Any]]] = {}
    generator = torch.Generator().manual_seed(seed)
    uniform = imm_merge(experts.experts, [{} for _ in experts.experts])  # no Omega: plain means
    dua = cfg.section(DUASettings)
    server = {
        name: imm_merge(
            experts.experts,
            server_omegas(
                experts.experts,
                task.expert_domains(),
                task.server_data,
                dua.server_samples,
                task.build_model,
                task.forward,
                task.inputs,
                method,
                dua.omega_batch_size,
                generator,
            ),
        )
        for method, name in SERVER_PRIOR.items()
    }
    adabn = AdaptSettings(method="adabn")

    def accuracy(name: str, state: Any, data: ClientData, adapt: bool = True) -> None:
        model = task.build_model()
        model.load_state_dict(state)
        results.setdefault(name, []).append(task.evaluate(model, data.test)["accuracy"])
        if adapt:
            adapted = adapt_model(model, task, task.inputs(data.train), adabn, torch.Generator())
            results.setdefault(f"{name} + AdaBN", []).append(task.evaluate(adapted, data.test)["accuracy"])

    for user in range(USERS):
        data = task.client_data(user)
        own = experts.domains.index(user_domain(cfg, user).name)
        accuracy(ORACLE, experts.experts[own], data)
        accuracy(UNIFORM, uniform, data)
        accuracy(MEAN_STATISTICS, with_mean_statistics(uniform, experts), data, adapt=False)  # AdaBN: = uniform
        for name, state in server.items():
            accuracy(name, state, data)
        for prior, (method, first) in PRIORS.items():
            found, omegas = diagnose_user(
                experts.experts,
                task.build_model,
                task.forward,
                task.inputs(data.train),
                method,
                dua.omega_batch_size,
                generator,
                adabn_first=first,
            )
            diagnostics.setdefault(prior, []).append({**found.as_dict(), "own": own})
            if prior == "MAS":
                accuracy(SCALAR, scalar_merge(experts, found.share), data)
            if prior in DUA_MEAN_STATISTICS:  # MAS is deterministic: these Omegas are the client's
                merged = with_mean_statistics(imm_merge(experts.experts, omegas), experts)
                accuracy(DUA_MEAN_STATISTICS[prior], merged, data, adapt=False)
    return {"classify": results, "diagnostics": diagnostics}


def seed_experts(seed: int, out: Path) -> tuple[Task, RunConfig, ExpertSet, Path]:
    """The server's generic model and experts of one seed: trained and saved under ``out``, or
    loaded from there when an earlier invocation saved them."""
    cfg = parse_run_config({**CLASSIFY, "seed": seed})
    task = get_task("classify", cfg)
    path = out / "experts" / f"seed{seed}.pt"
    if path.is_file():
        return task, cfg, load_experts(path, task.build_model()), path
    start = time.monotonic()
    dua = cfg.section(DUASettings)
    experts = train_experts(task, cfg, dua.server_samples, dua.generic_epochs, dua.expert_epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_experts(experts, path)
    print(f"seed {seed}: experts trained in {time.monotonic() - start:.0f} s", flush=True)
    return task, cfg, experts, path


def shifted(data: ClientData, corruption: str, seed: int, user: int) -> tuple[Tensors, Tensors]:
    """The user's train and test splits with one corruption drawn for the user (one brightness
    direction, ...) applied to all its images."""
    images = torch.cat([data.train[0], data.test[0]]).numpy()
    corrupted = torch.from_numpy(corrupt(images, corruption, 0.6, np.random.default_rng([seed, user, 21])))
    cut = data.num_train
    return (corrupted[:cut], *data.train[1:]), (corrupted[cut:], *data.test[1:])


def trained_gaze_model(seed: int, batchnorm: bool) -> tuple[Task, RunConfig, torch.nn.Module]:
    """A gaze LeNet (with BatchNorm or MPIIGaze's) trained on the pooled training users."""
    cfg = parse_run_config({**GAZE, "gaze.batchnorm": batchnorm, "seed": seed})
    task = get_task("gaze", cfg)
    torch.manual_seed(seed)
    model = task.build_model()
    train = stack([task.client_data(user).train for user in range(cfg.num_clients)])
    generator = torch.Generator().manual_seed(seed)
    train_epochs(
        model,
        train,
        task.loss,
        sgd_optimizer(model.parameters(), SGDSettings.from_config(cfg)),
        GAZE_EPOCHS,
        cfg.batch_size,
        generator,
        cfg.grad_clip,
    )
    return task, cfg, model


def gaze_seed(seed: int) -> PerUser:
    """Unseen-user angular errors of LeNet and LeNet-BN, the latter also after AdaBN, on natural
    and on lighting/noise-shifted users."""
    results: PerUser = {}
    adabn = AdaptSettings(method="adabn")
    for batchnorm, name in ((False, "LeNet"), (True, "LeNet-BN")):
        task, cfg, model = trained_gaze_model(seed, batchnorm)
        for index in range(GAZE_UNSEEN):
            data = task.unseen_user_data(index)
            corruption = GAZE_SHIFTS[index % len(GAZE_SHIFTS)]
            users = {
                "natural": (data.train, data.test),
                "lighting/noise-shifted": shifted(data, corruption, seed, index),
            }
            for kind, (unlabelled, test) in users.items():
                results.setdefault(f"{name}, {kind} users", []).append(task.evaluate(model, test)["angular-error"])
                if batchnorm:
                    adapted = adapt_model(copy.deepcopy(model), task, task.inputs(unlabelled), adabn, torch.Generator())
                    results.setdefault(f"{name} + AdaBN, {kind} users", []).append(
                        task.evaluate(adapted, test)["angular-error"]
                    )
    return results


def family_order(name: str) -> tuple[int, int, str]:
    """Rows grouped by model (:data:`FAMILIES`), each without adaptation first."""
    family = name.split(" + ")[0]
    return (FAMILIES.index(family) if family in FAMILIES else len(FAMILIES), name.count(" + "), name)


def rows_of(per_seed_users: dict[int, PerUser], metric: str, better: str) -> list[dict[str, Any]]:
    """One benchmark row per method: mean over users per seed, worst user, worst 10%."""
    names = sorted(per_seed_users[next(iter(per_seed_users))], key=family_order)
    return [
        benchmark_row(
            name,
            metric,
            {s: float(np.mean(u[name])) for s, u in per_seed_users.items()},
            better,
            {s: u[name] for s, u in per_seed_users.items()},
        )
        for name in names
    ]


def per_user_table(per_seed_users: dict[int, PerUser], domains: list[str], names: list[str]) -> str:
    """Markdown: accuracy of each user (mean over seeds) for the chosen methods."""
    lines = ["| user (corruption) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for user, domain in enumerate(domains):
        values = [np.mean([u[name][user] for u in per_seed_users.values()]) for name in names]
        lines.append(f"| {user} ({domain}) | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def plain_cached(seed: int, out: Path, task: Task, cfg: RunConfig, experts: ExpertSet) -> dict[str, Any]:
    """The plain loops of one seed (classification references, diagnostics, gaze), kept under
    ``out/plain`` so a rerun reuses them."""
    path = out / "plain" / f"seed{seed}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("version") == PLAIN_VERSION:
            return dict(cached)
    payload = {"version": PLAIN_VERSION, **plain_seed(task, cfg, experts, seed), "gaze": gaze_seed(seed)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return payload


Diagnostics = dict[int, dict[str, list[dict[str, Any]]]]  # seed -> prior -> per user


def norm_key(prior: str) -> str:
    """The output norm Omega saw: with the server's BN statistics, or after AdaBN."""
    return "output_norm_adabn" if "after AdaBN" in prior else "output_norm"


def prior_table(diagnostics: Diagnostics, domains: list[str]) -> str:
    """Markdown: per prior, which experts get the largest Omega share, how the user's own expert
    fares, and how closely the shares follow the experts' output norms."""
    lines = [
        "| prior (Ω on the user's data) | largest share: users topped, all seeds | seeds where one expert tops all "
        "8 users | own expert's share | own expert's rank (1 = largest) | largest share | r(share, output norm) | "
        "entries no expert weighs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prior in PRIORS:
        users = [user for seed in diagnostics for user in diagnostics[seed][prior]]
        tops = [dominance([u["share"] for u in diagnostics[seed][prior]], domains) for seed in diagnostics]
        counts: dict[str, int] = {}
        for top in tops:
            for name, count in top["counts"].items():
                counts[name] = counts.get(name, 0) + count
        ranked = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        alone = [top["dominates_all"] for top in tops if top["dominates_all"]]
        own_share = np.mean([u["share"][u["own"]] for u in users])
        own_rank = np.mean([1 + sum(v > u["share"][u["own"]] for v in u["share"]) for u in users])
        largest = np.mean([max(u["share"]) for u in users])
        r = np.mean([np.corrcoef(u["share"], u[norm_key(prior)])[0, 1] for u in users])
        zeroed = np.mean([u["zeroed"] for u in users])
        lines.append(
            f"| {prior} | {ranked} (of {len(users)}) | {len(alone)} of {len(tops)}"
            f"{' (' + ', '.join(sorted(set(alone))) + ')' if alone else ''} | {own_share:.3f} | {own_rank:.1f} | "
            f"{largest:.3f} | {r:+.2f} | {zeroed:.1%} |"
        )
    return "\n".join(lines)


def expert_table(diagnostics: Diagnostics, domains: list[str]) -> str:
    """Markdown: every expert's mean Omega share per prior, output norms and BN variance on the
    users' data (means over users and seeds; a uniform share is 1/8 = 0.125)."""
    lines = [
        "| expert | "
        + " | ".join(f"share: {prior}" for prior in PRIORS)
        + " | output norm | output norm after AdaBN | BN variance after AdaBN |",
        "|---" * (len(PRIORS) + 4) + "|",
    ]
    for k, name in enumerate(domains):
        shares = [np.mean([u["share"][k] for d in diagnostics.values() for u in d[prior]]) for prior in PRIORS]
        users = [u for d in diagnostics.values() for u in d["MAS"]]
        extras = [np.mean([u[key][k] for u in users]) for key in ("output_norm", "output_norm_adabn", "bn_variance")]
        lines.append(
            f"| {name} | " + " | ".join(f"{v:.3f}" for v in shares) + f" | {extras[0]:.1f} | {extras[1]:.1f} | "
            f"{extras[2]:.3f} |"
        )
    return "\n".join(lines)


def share_matrix(diagnostics: Diagnostics, prior: str) -> Any:
    """Users x experts: the mean Omega share over seeds."""
    return np.mean([[u["share"] for u in d[prior]] for d in diagnostics.values()], axis=0)


def share_table(diagnostics: Diagnostics, domains: list[str], prior: str) -> str:
    """Markdown: each user's Omega share of every expert (mean over seeds), the own expert in bold."""
    matrix = share_matrix(diagnostics, prior)
    lines = ["| user (corruption) | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]
    for user, row in enumerate(matrix):
        own = diagnostics[next(iter(diagnostics))][prior][user]["own"]
        cells = [f"**{v:.3f}**" if k == own else f"{v:.3f}" for k, v in enumerate(row)]
        lines.append(f"| {user} ({domains[own]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_names(adapted: bool) -> list[str]:
    """The merged and reference models of the paired comparisons, without or with AdaBN after them."""
    names = ["generic", *MERGES.values(), SCALAR, *SERVER_PRIOR.values(), UNIFORM, ORACLE]
    return [f"{name} + AdaBN" for name in names] if adapted else names


def paired_sections(rows: list[dict[str, Any]]) -> str:
    """The paired per-seed differences (95% intervals) to the uniform merge and to generic + AdaBN."""
    by_name = {row["algorithm"]: row for row in rows if row["metric"] == ACCURACY}

    def table(names: list[str], reference: str) -> str:
        return paired_table([by_name[name] for name in names if name in by_name], reference)

    plain, adapted = merge_names(False), merge_names(True)
    mean_statistics = [MEAN_STATISTICS, *DUA_MEAN_STATISTICS.values()]
    return (
        "**Paired per-seed differences, merged models as they are (BN statistics of the first expert), to the "
        f"uniform merge:**\n\n{table(plain, UNIFORM)}\n\n**Merged models with the experts' mean BN statistics "
        f"(as before the reference's one-model statistics), to the uniform merge with them:**\n\n"
        f"{table(mean_statistics, MEAN_STATISTICS)}\n\n**With AdaBN after the merge, to the uniform merge + "
        f"AdaBN:**\n\n{table(adapted, UNIFORM + ' + AdaBN')}\n\n**With AdaBN after the merge, to generic + "
        f"AdaBN:**\n\n{table(adapted, 'generic + AdaBN')}\n\n**The user's prior against the reference's "
        "user-agnostic baseline (Ω on the server's data of each expert's domain), both with AdaBN after the "
        f"merge:**\n\n{table(user_prior('mas'), SERVER_PRIOR['mas'] + ' + AdaBN')}\n\n"
        f"{table(user_prior('fisher'), SERVER_PRIOR['fisher'] + ' + AdaBN')}"
    )


def user_prior(importance: str) -> list[str]:
    """The DUA merges by the user's ``importance`` Omega with AdaBN, and mode-IMM's server-prior merge."""
    return [f"{name} + AdaBN" for (method, _, _), name in MERGES.items() if method == importance] + [
        f"{SERVER_PRIOR[importance]} + AdaBN"
    ]


def plot(rows: list[dict[str, Any]], diagnostics: Diagnostics, domains: list[str]) -> None:
    """``classify_dua.png`` (paired differences to the uniform merge, without and with AdaBN) and
    ``classify_dua_shares.png`` (each user's Omega shares per prior)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {row["algorithm"]: row for row in rows if row["metric"] == ACCURACY}
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, adapted, reference in ((axes[0], False, UNIFORM), (axes[1], True, UNIFORM + " + AdaBN")):
        names = [n for n in merge_names(adapted) if n in by_name and n != reference]
        base = {int(s): v for s, v in by_name[reference]["per_seed"].items()}
        found = [paired_difference({int(s): v for s, v in by_name[n]["per_seed"].items()}, base) for n in names]
        y = np.arange(len(names))[::-1]
        means = np.array([f["mean"] for f in found])
        errors = np.array([[f["mean"] - f["low"] for f in found], [f["high"] - f["mean"] for f in found]])
        axis.errorbar(means, y, xerr=errors, fmt="o", capsize=3)
        axis.axvline(0, color="grey", lw=1)
        axis.set_yticks(y, names, fontsize=8)
        axis.set_xlabel(f"accuracy difference to {reference}\n(paired over seeds, 95% CI, {len(base)} seeds)")
    figure.suptitle("Shifted shapes users: merged models vs the uniform mean of the experts")
    save_figure(figure, RESULTS_DIR / "classify_dua.png", dpi=120)

    figure, axes = plt.subplots(1, len(PRIORS), figsize=(4.2 * len(PRIORS), 4.4), sharey=True)
    for axis, prior in zip(axes, PRIORS):
        matrix = share_matrix(diagnostics, prior)
        image = axis.imshow(matrix, vmin=0, vmax=max(0.35, float(matrix.max())), cmap="viridis")
        for user in range(len(matrix)):
            own = diagnostics[next(iter(diagnostics))][prior][user]["own"]
            axis.add_patch(plt.Rectangle((own - 0.5, user - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
        axis.set_title(f"Ω share: {prior}", fontsize=9)
        axis.set_xticks(range(len(domains)), domains, rotation=60, fontsize=7)
        axis.set_yticks(range(len(matrix)), [f"user {u}" for u in range(len(matrix))], fontsize=7)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the user's total Ω (red: own-domain expert)")
    save_figure(figure, RESULTS_DIR / "classify_dua_shares.png", dpi=120, tight_layout=False, bbox_inches="tight")


def report(
    classify: dict[int, PerUser], gaze: dict[int, PerUser], diagnostics: Diagnostics, domains: list[str], seconds: float
) -> None:
    """Write every result file for the seeds done so far."""
    rows = rows_of(classify, ACCURACY, "higher") + rows_of(gaze, ANGULAR, "lower")
    table = per_user_table(
        classify,
        domains,
        [
            "generic",
            "generic + AdaBN",
            "DUA-MAS",
            "DUA-MAS + AdaBN",
            "DUA-MAS (Ω after AdaBN) + AdaBN",
            "DUA-Fisher + AdaBN",
            SERVER_PRIOR["mas"] + " + AdaBN",
            UNIFORM,
            UNIFORM + " + AdaBN",
            ORACLE,
            ORACLE + " + AdaBN",
        ],
    )
    summary = (
        "**Ω diagnostics** (per user, on its unlabelled training split; a uniform share is 1/8 = 0.125; "
        "[classify_dua_diagnostics.md](classify_dua_diagnostics.md) has every user):\n\n"
        f"{prior_table(diagnostics, domains)}\n\n{expert_table(diagnostics, domains)}"
    )
    write_benchmark(
        "classify_dua",
        invocation(),
        {
            "classify": {
                **CLASSIFY,
                "users": USERS,
                "adapt": "section defaults (epochs 1, lr 1e-3, batch 64, threshold 0.9)",
            },
            "gaze": {
                **GAZE,
                "epochs": GAZE_EPOCHS,
                "unseen_users": GAZE_UNSEEN,
                "shifts": list(GAZE_SHIFTS),
                "severity": 0.6,
            },
            "seconds_this_invocation": round(seconds),  # finished cells and seeds are reused
        },
        rows,
        notes="Classification rows: mean over the 8 users' test splits per seed; worst client = worst user. "
        "Merged models without AdaBN carry the first expert's BN running statistics (the reference's one-model "
        "statistics), except the row 'mean-IMM, mean BN statistics'. Gaze rows: 10 unseen users; lower is better."
        f"\n\n{paired_sections(rows)}\n\n{summary}\n\nPer user (mean over seeds):\n\n{table}",
    )
    per_user = "\n\n".join(f"**Ω shares, {prior}** (own expert in bold):\n\n{share_table(diagnostics, domains, prior)}"
                             for prior in PRIORS)  # fmt: skip
    write_json_result(
        "classify_dua_diagnostics",
        result_payload(
            "classify_dua_diagnostics",
            experts=domains,
            priors={prior: {"importance": m, "omega_after_adabn": a} for prior, (m, a) in PRIORS.items()},
            per_seed={str(seed): values for seed, values in diagnostics.items()},
        ),
        f"Per user and expert, on the user's unlabelled training split ({len(diagnostics)} seeds; "
        "fedpersonal/adaptation/diagnostics.py).\n\n"
        f"{prior_table(diagnostics, domains)}\n\n{expert_table(diagnostics, domains)}\n\n{per_user}",
    )
    plot(rows, diagnostics, domains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="matrix folder (default runs/benchmarks/classify_dua); finished runs there are reused",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.monotonic()
    out = (args.out or MATRIX_DIR / "classify_dua").resolve()
    experts: dict[int, tuple[Task, RunConfig, ExpertSet, Path]] = {}
    classify: dict[int, PerUser] = {}
    gaze: dict[int, PerUser] = {}
    diagnostics: Diagnostics = {}
    for index, seed in enumerate(args.seeds):  # results are written after every seed
        experts[seed] = seed_experts(seed, out)
        cells = [cell for done in args.seeds[: index + 1] for cell in dua_cells(done, experts[done][3])]
        runs = run_matrix(cells, out, command=invocation()).runs()
        task, cfg, expert_set, _ = experts[seed]
        plain = plain_cached(seed, out, task, cfg, expert_set)
        classify[seed] = {**dua_rows(runs, seed), **plain["classify"]}
        gaze[seed], diagnostics[seed] = plain["gaze"], plain["diagnostics"]
        print(
            f"seed {seed} done after {time.monotonic() - start:.0f} s: "
            + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in {**classify[seed], **gaze[seed]}.items()),
            flush=True,
        )
        domains = list(expert_set.domains)
        report(classify, gaze, diagnostics, domains, time.monotonic() - start)


if __name__ == "__main__":
    main()
