"""Small run configs per task (2 clients, a few seconds a round) and every registered (algorithm,
task) pair, for tests that walk the algorithm registry."""

from simulations.registry import ALGORITHMS

# Small settings per task: 2 clients, 1 round, a few seconds each.
SMALL = {
    "gaze": {"samples-per-client": 30, "local-epochs": 1},
    "classify": {
        "samples-per-client": 30, "local-epochs": 1, "classify.corruptions": "blur,contrast",
        "dua.server-samples": 20, "dua.generic-epochs": 1, "dua.expert-epochs": 1,
    },
    "face": {
        "test-fraction": 0.25, "face.identities-min": 5, "face.identities-max": 5, "face.images-per-identity": 16,
        "face.public-identities": 10, "face.public-images-per-identity": 3, "face.unseen-identities": 10,
        "face.unseen-images-per-identity": 3, "face.pretrain-epochs": 1, "face.first-epochs": 1, "face.min-epochs": 1,
    },
}  # fmt: skip
# FedFR's tests: 4 clients x 5 identities x 20 images with strongly different cameras (heterogeneity 2),
# 20 x 3 public and 20 x 3 unseen images; each test module adds its rounds and local epochs.
FEDFR_FACE = {
    "task": "face", "num-clients": 4, "heterogeneity": 2.0, "lr": 0.02, "weight-decay": 5e-4, "batch-size": 16,
    "grad-clip": 0.0, "test-fraction": 0.3, "face.identities-min": 5, "face.identities-max": 5,
    "face.images-per-identity": 20, "face.public-identities": 20, "face.public-images-per-identity": 3,
    "face.unseen-identities": 20, "face.unseen-images-per-identity": 3, "face.pretrain-epochs": 4,
}  # fmt: skip
PAIRS = [(name, task) for name, entry in ALGORITHMS.items() for task in entry.tasks]
# Algorithms that need more than 2 clients (Bulyan: n >= 4 f + 3).
CLIENTS = {"bulyan": 3}


def small_run(name: str, task: str) -> dict:
    """The small run config of (algorithm, task): 2 clients (or what the algorithm needs), 1 round."""
    return {"strategy": name, "task": task, "num-clients": CLIENTS.get(name, 2), "num-rounds": 1, **SMALL[task]}
