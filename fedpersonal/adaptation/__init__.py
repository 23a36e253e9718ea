"""Unsupervised local adaptation of a received model to a user's unlabelled data.

Run-config section ``adapt`` (``[tool.flwr.app.config.adapt]``) chooses the method every client
applies to a copy of the received model before its *personalized* evaluation
(:meth:`clients.base.ClientAlgorithm.adapt`), whatever the algorithm:

* ``none``: nothing (no personalized metrics). Every task.
* ``adabn``: BN running statistics re-estimated (:mod:`.adabn`). Any model with BatchNorm:
  classify; gaze with ``gaze.batchnorm = true``.
* ``tent``: BN scale/shift trained to minimise prediction entropy (:mod:`.tent`). Classification.
* ``pseudo-label``: all weights trained on the model's own confident predictions
  (:mod:`.pseudo_label`). Classification.

Steps can be chained with ``+`` (``adabn+pseudo-label``: re-estimate BN statistics, then self-train).

Entropy and pseudo-labels need class probabilities, so they do not apply to gaze regression;
AdaBN needs only BatchNorm layers. The data is the client's training split with its labels dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from fedpersonal.adaptation.adabn import adabn
from fedpersonal.adaptation.pseudo_label import pseudo_label
from fedpersonal.adaptation.tent import tent
from fedpersonal.config import ConfigError, setting
from fedpersonal.training import Tensors

if TYPE_CHECKING:
    from fedpersonal.tasks.base import Task

METHODS = ("none", "adabn", "tent", "pseudo-label")  # the keys of ADAPTATIONS
CLASSIFICATION_ONLY = frozenset({"tent", "pseudo-label"})


@dataclass(frozen=True)
class AdaptSettings:
    """Run-config section ``adapt``: the local adaptation before personalized evaluation."""

    SECTION: ClassVar[str] = "adapt"

    method: str = setting(
        "none",
        f"one of {list(METHODS)}, or several joined by '+' applied in order (e.g. 'adabn+pseudo-label')",
        lambda v: v == "none" or set(v.split("+")) <= set(METHODS) - {"none"},
    )
    epochs: int = setting(1, "an integer >= 1 (passes over the data of 'tent' and 'pseudo-label')", lambda v: v >= 1)
    lr: float = setting(0.001, "a number > 0 (Adam step size of 'tent' and 'pseudo-label')", lambda v: v > 0)
    batch_size: int = setting(64, "an integer >= 2", lambda v: v >= 2)
    threshold: float = setting(0.9, "a number in (0, 1] (confidence a pseudo-label needs)", lambda v: 0 < v <= 1)


def check_applies(settings: AdaptSettings, task: Task) -> None:
    """A ConfigError when ``adapt.method`` needs class probabilities and ``task`` is a regression."""
    if CLASSIFICATION_ONLY & set(settings.method.split("+")) and not task.predicts_classes:
        raise ConfigError(
            f"run config key 'adapt.method' = {settings.method!r} needs class probabilities, but task "
            f"'{task.name}' is a regression; expected 'none' or 'adabn'"
        )


Adaptation = Callable[[nn.Module, "Task", Tensors, AdaptSettings, torch.Generator], nn.Module]
ADAPTATIONS: dict[str, Adaptation] = {
    "none": lambda model, task, inputs, s, g: model,
    "adabn": lambda model, task, inputs, s, g: adabn(model, task.forward, inputs, s.batch_size),
    "tent": lambda model, task, inputs, s, g: tent(model, task.forward, inputs, s.epochs, s.lr, s.batch_size, g),
    "pseudo-label": lambda model, task, inputs, s, g: pseudo_label(
        model, task.forward, inputs, s.epochs, s.lr, s.threshold, s.batch_size, g
    ),
}


def adapt_model(
    model: nn.Module, task: Task, inputs: Tensors, settings: AdaptSettings, generator: torch.Generator
) -> nn.Module:
    """Adapt ``model`` in place to ``inputs`` (unlabelled) with the steps of ``settings.method``."""
    check_applies(settings, task)
    for step in settings.method.split("+"):
        model = ADAPTATIONS[step](model, task, inputs, settings, generator)
    return model


__all__ = ["ADAPTATIONS", "CLASSIFICATION_ONLY", "METHODS", "AdaptSettings", "adapt_model", "check_applies"]
