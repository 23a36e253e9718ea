"""How hard is the embedded gaze data? Angular error on unseen users of simple references.

References, all trained on the 15 default users' training splits and tested on 10 users that
never trained: (a) predicting the training mean gaze, (b) ridge regression on 18x30 pixels +
head pose, (c) a centrally trained LeNet (the federated model's architecture and optimiser).

    python -m benchmarks.gaze_data [--seeds 0 1 2] [--epochs 6]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import Ridge

from fedpersonal.config import RunConfig, parse_config
from fedpersonal.metrics.angular import angular_error_deg
from fedpersonal.tasks.gaze import GazeTask
from fedpersonal.training import SGDSettings, sgd_optimizer, stack, train_epochs
from simulations.reporting import benchmark_row, invocation, write_benchmark

UNSEEN_USERS = 10


def ridge_features(tensors: tuple[torch.Tensor, ...]) -> np.ndarray:
    images = tensors[0].float().div(255.0)
    small = torch.nn.functional.avg_pool2d(images, 2).flatten(1)
    return np.hstack([small.numpy(), tensors[1].numpy()])


def evaluate_seed(cfg: RunConfig, epochs: int) -> dict[str, list[float]]:
    """Per-unseen-user angular errors of each reference."""
    task = GazeTask(cfg)  # the seed's users
    train = stack([task.client_data(user).train for user in range(cfg.num_clients)])
    unseen = [task.unseen_user_data(k) for k in range(UNSEEN_USERS)]
    # Unseen users contribute all their samples to the test.
    tests = [stack([data.train, data.test]) for data in unseen]

    mean_gaze = train[2].numpy().mean(0)
    ridge = Ridge(alpha=10.0).fit(ridge_features(train), train[2].numpy())
    torch.manual_seed(cfg.seed)
    model = task.build_model()
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = sgd_optimizer(model.parameters(), SGDSettings.from_config(cfg))
    train_epochs(model, train, task.loss, optimizer, epochs, cfg.batch_size, generator, cfg.grad_clip)

    errors: dict[str, list[float]] = {"predict-mean": [], "ridge": [], "central-lenet": []}
    for test in tests:
        target = test[2].numpy()
        errors["predict-mean"].append(float(angular_error_deg(np.broadcast_to(mean_gaze, target.shape), target).mean()))
        errors["ridge"].append(float(angular_error_deg(ridge.predict(ridge_features(test)), target).mean()))
        errors["central-lenet"].append(task.evaluate(model, test)["angular-error"])
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    per_seed: dict[str, dict[int, float]] = {}
    per_client: dict[str, dict[int, list[float]]] = {}
    for seed in args.seeds:
        cfg = parse_config({"seed": seed})
        for name, values in evaluate_seed(cfg, args.epochs).items():
            per_seed.setdefault(name, {})[seed] = float(np.mean(values))
            per_client.setdefault(name, {})[seed] = values
            print(
                f"seed {seed} {name:14s} {np.mean(values):6.2f} deg (worst unseen user {max(values):.2f})", flush=True
            )

    rows = [
        benchmark_row(name, "unseen-user angular error (deg)", per_seed[name], "lower", per_client[name])
        for name in per_seed
    ]
    defaults = RunConfig()
    write_benchmark(
        "gaze_data",
        invocation(),
        {
            "train_users": defaults.num_clients,
            "samples_per_user": defaults.samples_per_client,
            "unseen_users": UNSEEN_USERS,
            "lenet_epochs": args.epochs,
            "lr": defaults.lr,
            "batch_size": defaults.batch_size,
        },
        rows,
        notes="Worst client = worst unseen user. The LeNet row is the centralised reference "
        "(all training users' data pooled), an upper bound for the federated global model.",
    )


if __name__ == "__main__":
    main()
