"""DUA and unsupervised local adaptation on shifted users; AdaBN on gaze users with shifted lighting.

    python -m benchmarks.classify_dua [--seeds 0 1 2]

Classification (task ``classify``, shapes, ``user-shift = "corruption"``: DUA's TransPrior): eight
users, each with its own palette/texture/style *and* its own corruption (one of the eight of
``classify.corruptions``). The server trains a generic model on clean labelled data and one expert
per corruption (fine-tuned from it) on labelled server data whose styles no user has. Through the
real strategy and client (``strategy = "dua"``, experts trained once per seed and passed with
``dua.experts-path``), as one strategy-comparison matrix (:func:`simulations.matrix.run_matrix`)
kept under ``--out`` (default ``runs/benchmarks/classify_dua``, with the experts; rerunning reuses
both, delete the folder after changing this script's settings): round 0 evaluates the generic
model on every user's test split, round 1 the user's merged model; ``adapt.method`` adds the
local step (personalized metrics). Adaptation uses the user's unlabelled training split. Plain
loops add two references: the user's own-domain expert (an oracle that knows the corruption) and
the uniform merge of the experts (mean-IMM, no user prior).

Gaze (plain loop): MPIIGaze's LeNet and the LeNet with BatchNorm after its convs
(``gaze.batchnorm``), trained on 15 users, tested on 10 unseen users as they are, and with a
per-user lighting/noise shift (brightness, contrast or Gaussian noise from
:mod:`fedpersonal.data.corruptions`), without and with AdaBN on the unseen user's unlabelled samples.
TENT and pseudo-labels need class probabilities: not for regression.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpersonal.adaptation import AdaptSettings, adapt_model
from fedpersonal.adaptation.dua import DUASettings
from fedpersonal.adaptation.experts import ExpertSet, load_experts, save_experts, train_experts
from fedpersonal.adaptation.imm import imm_merge
from fedpersonal.config import RunConfig
from fedpersonal.data.corruptions import corrupt
from fedpersonal.tasks import get_task
from fedpersonal.tasks.base import ClientData, Task
from fedpersonal.tasks.classify import user_domain
from fedpersonal.training import SGDSettings, Tensors, sgd_optimizer, stack, train_epochs
from simulations.matrix import Cell, Variant, plan_cells, run_matrix
from simulations.reporting import MATRIX_DIR, benchmark_row, invocation, write_benchmark
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
# (dua.importance, dua.omega-norm) -> row name; the max-normalised variants run with AdaBN only.
MERGES = {
    ("mas", "none"): "DUA-MAS",
    ("fisher", "none"): "DUA-Fisher",
    ("mas", "max"): "DUA-MAS (max-norm)",
    ("fisher", "max"): "DUA-Fisher (max-norm)",
}
ACCURACY = "accuracy on shifted users (test split)"
FAMILIES = ("generic", *MERGES.values(), "mean-IMM (uniform merge)", "own-domain expert (oracle)")
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
    """Every DUA run of a seed: label -> (dua.importance, dua.omega-norm, adapt.method) keys."""
    variants = {}
    for importance, norm in MERGES:
        adapts = ADAPTS if norm == "none" else {"adabn": ADAPTS["adabn"]}
        for method in adapts:
            variants[f"dua-{importance}-{norm}-{method.replace('+', '-')}"] = {
                "dua.importance": importance,
                "dua.omega-norm": norm,
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
        name, suffix = MERGES[(keys["dua.importance"], keys["dua.omega-norm"])], ADAPTS[keys["adapt.method"]]
        results[name] = evaluated(run_dir, 1, "accuracy")
        results[f"{name} + {suffix}"] = evaluated(run_dir, 1, "personalized-accuracy")
        if (keys["dua.importance"], keys["dua.omega-norm"]) == ("mas", "none"):
            results["generic"] = evaluated(run_dir, 0, "accuracy")
            results[f"generic + {suffix}"] = evaluated(run_dir, 0, "personalized-accuracy")
    return results


def reference_rows(task: Task, cfg: RunConfig, experts: ExpertSet) -> PerUser:
    """The user's own-domain expert (oracle) and the uniform merge (mean-IMM), without and with AdaBN."""
    results: PerUser = {}
    uniform = imm_merge(experts.experts, [{} for _ in experts.experts])  # no Omega: plain means
    adabn = AdaptSettings(method="adabn")
    for user in range(USERS):
        data = task.client_data(user)
        own = experts.experts[experts.domains.index(user_domain(cfg, user).name)]
        for name, state in (("own-domain expert (oracle)", own), ("mean-IMM (uniform merge)", uniform)):
            model = task.build_model()
            model.load_state_dict(state)
            results.setdefault(name, []).append(task.evaluate(model, data.test)["accuracy"])
            adapted = adapt_model(model, task, task.inputs(data.train), adabn, torch.Generator())
            results.setdefault(f"{name} + AdaBN", []).append(task.evaluate(adapted, data.test)["accuracy"])
    return results


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
    experts = {seed: seed_experts(seed, out) for seed in args.seeds}
    cells = [cell for seed in args.seeds for cell in dua_cells(seed, experts[seed][3])]
    runs = run_matrix(cells, out, command=invocation()).runs()
    classify: dict[int, PerUser] = {}
    gaze: dict[int, PerUser] = {}
    for seed in args.seeds:
        task, cfg, expert_set, _ = experts[seed]
        classify[seed] = {**dua_rows(runs, seed), **reference_rows(task, cfg, expert_set)}
        gaze[seed] = gaze_seed(seed)
        print(
            f"seed {seed} done after {time.monotonic() - start:.0f} s: "
            + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in {**classify[seed], **gaze[seed]}.items()),
            flush=True,
        )
    domains = [user_domain(experts[args.seeds[-1]][1], user).name for user in range(USERS)]
    rows = rows_of(classify, ACCURACY, "higher") + rows_of(gaze, ANGULAR, "lower")
    table = per_user_table(
        classify,
        domains,
        [
            "generic",
            "generic + AdaBN",
            "DUA-MAS",
            "DUA-MAS + AdaBN",
            "DUA-Fisher",
            "mean-IMM (uniform merge)",
            "own-domain expert (oracle)",
        ],
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
            "seconds": round(time.monotonic() - start),
        },
        rows,
        notes="Classification rows: mean over the 8 users' test splits per seed; worst client = worst user. "
        "Gaze rows: 10 unseen users; lower is better.\n\nPer user (mean over seeds):\n\n" + table,
    )


if __name__ == "__main__":
    main()
