"""The evaluation protocol: three views of a run, named by what they are.

* **global** - the aggregated model, as the server holds it, on each client's test split. Defined only
  for algorithms whose server holds a whole model: a client that keeps personal parameters
  (FedPer's head, FedBN's BatchNorm, local-only's everything) reports no global metrics.
* **personalized** - the client's own model (its personal parameters, or the algorithm's personal
  model: Ditto's, APFL's mixture, FedBABU's fine-tuned copy, ...), then any configured local
  adaptation (section ``adapt``), on its test split. For FedAvg without adaptation it equals global.
* **unseen** - clients that never trained (section ``evaluate``, ``unseen-clients``): after the last
  round each fine-tunes the personal part of the final model (the whole model when the algorithm
  has no personal part) for ``unseen-steps`` SGD steps on its training split, then evaluates on its
  test split.

A client reply names global metrics plainly (``accuracy``), the others ``personalized-<metric>`` and
``unseen-<metric>``. :func:`round_key` gives their names in ``rounds.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from fedpersonal.config import RunConfig, setting

VIEWS = ("global", "personalized", "unseen")
PREFIXED = ("personalized-", "unseen-")


def _up_to(largest: int) -> Callable[[int], bool]:
    return lambda value: 0 <= value <= largest


@dataclass(frozen=True)
class EvaluationSettings:
    """Run-config section ``evaluate``: clients held out of training, evaluated after the last round."""

    SECTION: ClassVar[str] = "evaluate"

    unseen_clients: int = setting(
        0,
        "an integer in [0, 10000] (clients that never train, evaluated after the last round)",
        lambda v: 0 <= v <= 10000,
    )
    unseen_steps: int = setting(
        20,
        "an integer in [0, 100000] (SGD steps an unseen client fine-tunes its personal part)",
        lambda v: 0 <= v <= 1e5,
    )


def data_partitions(cfg: RunConfig) -> int:
    """How many clients a run's data is split into: ``num-clients`` training clients, then the
    ``evaluate.unseen-clients`` held-out ones (partition ids ``num-clients``, ``num-clients + 1``, ...)."""
    return cfg.num_clients + cfg.section(EvaluationSettings).unseen_clients


def view_of(metric: str) -> str:
    """The view a client metric belongs to: ``global``, ``personalized`` or ``unseen``."""
    for view, prefix in zip(VIEWS[1:], PREFIXED, strict=True):
        if metric.startswith(prefix):
            return view
    return "global"


def round_key(metric: str) -> str:
    """The name of a client metric's mean over clients in ``rounds.jsonl``: the personalized metric
    keeps its name (``personalized-accuracy``), any other gets ``global-`` (``global-accuracy``; the
    face task's server-side ``unseen-`` metrics become ``global-unseen-...``)."""
    return metric if view_of(metric) == "personalized" else f"global-{metric}"


def view_metric(view: str, metric: str) -> str:
    """The client metric of ``metric`` in ``view`` (``personalized-accuracy`` ...)."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}; expected one of {list(VIEWS)}")
    return metric if view == "global" else f"{view}-{metric}"
