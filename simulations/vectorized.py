"""The vectorized clients backend: each round's sampled clients trained in lockstep with torch.func.

:class:`VectorizedGrid` is an :class:`~simulations.inprocess.InProcessGrid` whose train exchanges
run every client's local SGD at once: their parameters are stacked along a new first dimension and
one ``torch.func.vmap`` of ``functional_call`` + ``grad_and_value`` + the functional SGD step
(:mod:`fedpersonal.vectorized_sgd`) advances all of them by one minibatch. Each client draws its own
minibatches in its own order (:func:`clients.base.round_generator` and
:func:`fedpersonal.training.epoch_batches`, as its sequential ``train`` does); on a step where a
client has no batch left it is masked out (left out of the step: its parameters and momentum do not
change), and clients whose batches differ in size (a last, partial batch) step in separate groups.
Everything around the training is the ClientApp's own code (:func:`simulations.client_app.begin_call`
and :func:`~simulations.client_app.end_call`); evaluate messages go one by one as before.

It applies to the algorithms the registry marks ``vectorized`` (their client half is the plain
local SGD step) on models without BatchNorm or dropout; :func:`check_vectorized` refuses the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from clients.base import ClientAlgorithm, round_generator, server_round_of
from clients.fedprox import FedProxClient, proximal_mu, proximal_term
from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.faults import FaultSettings
from fedpersonal.model_pool import seeded_model
from fedpersonal.poisoning import PoisonSettings
from fedpersonal.privacy.dpsgd import DPSGDSettings
from fedpersonal.privacy.secagg import SecAggSettings
from fedpersonal.privacy.settings import DPSettings
from fedpersonal.tasks import Task, get_task
from fedpersonal.tasks.gaze import GazeSettings
from fedpersonal.training import SGDSettings, Tensors, epoch_batches
from fedpersonal.vectorized_sgd import Params, clip_gradients, sgd_step
from simulations.client_app import ClientCall, begin_call, end_call
from simulations.inprocess import InProcessGrid, acting_as, error_reply
from simulations.registry import ALGORITHMS

BACKEND = "the vectorized clients backend"
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def supported_strategies() -> list[str]:
    """The algorithms whose clients the backend trains in lockstep (registry flag ``vectorized``)."""
    return sorted(name for name, entry in ALGORITHMS.items() if entry.vectorized)


def stateful_layers(model: nn.Module) -> list[str]:
    """``name (type)`` of every layer of ``model`` that is random or keeps state in training mode
    (dropout; BatchNorm and any other layer with buffers)."""
    return [
        f"{name} ({type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(module, DROPOUT) or next(module.buffers(recurse=False), None) is not None
    ]


def check_vectorized(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the key, its value and what is allowed when ``cfg`` is a run
    the backend would not train exactly as the sequential clients do."""
    if cfg.strategy not in supported_strategies():
        raise ConfigError(
            f"run config key 'strategy' = {cfg.strategy!r} is not supported by {BACKEND}; it supports "
            f"{supported_strategies()} (clients whose local training is the plain SGD step)"
        )
    off: dict[str, tuple[Any, Any]] = {
        "dp.mode": (cfg.section(DPSettings).mode, "none"),
        "dpsgd.enabled": (cfg.section(DPSGDSettings).enabled, False),
        "secagg.enabled": (cfg.section(SecAggSettings).enabled, False),
        "poison.attack": (cfg.section(PoisonSettings).attack, "none"),
        "faults.dropout": (cfg.section(FaultSettings).dropout, 0.0),
        "faults.slow-fraction": (cfg.section(FaultSettings).slow_fraction, 0.0),
    }
    for key, (value, allowed) in off.items():
        if value != allowed:
            raise ConfigError(
                f"run config key '{key}' = {value!r} is not supported by {BACKEND}, which trains plain, "
                f"honest clients together (no privacy mechanism, attack or simulated fault); expected "
                f"{allowed!r}, or the sequential in-process runner"
            )
    layers = stateful_layers(seeded_model(get_task(cfg.task, cfg), cfg.seed))
    if layers:
        batchnorm = cfg.task == "gaze" and cfg.section(GazeSettings).batchnorm
        key, value = ("gaze.batchnorm", True) if batchnorm else ("task", cfg.task)
        raise ConfigError(
            f"run config key '{key}' = {value!r} is not supported by {BACKEND}: the model has layers "
            f"{layers}, whose batch statistics, running statistics or random masks in training mode it does "
            f"not reproduce; expected a model without BatchNorm or dropout"
            + (" (gaze.batchnorm = false)" if batchnorm else " (task 'gaze' with gaze.batchnorm = false)")
        )


class _Objective(nn.Module):
    """A client's training loss as a module whose parameters are the model's (``model.<name>``), for
    ``functional_call``: the task's loss on a batch plus, given an anchor, FedProx's
    ``mu / 2 * ||w - anchor||^2`` (:func:`clients.fedprox.proximal_term`)."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Tensors, anchor: list[torch.Tensor] | None, mu: torch.Tensor | None) -> torch.Tensor:
        """The loss on ``batch``."""
        loss = self.task.loss(self.model, batch)
        if anchor is None or mu is None:
            return loss
        return loss + mu / 2 * proximal_term(self.model, anchor)


def client_step(objective: _Objective, settings: SGDSettings, max_norm: float) -> Callable[..., Any]:
    """One client's step ``(params, momenta, anchor, mu, batch) -> (params, momenta, loss)``: the
    gradient of ``objective``, clipped to ``max_norm``, and the SGD update (vmapped over clients)."""

    def step(
        params: Params, momenta: Params, anchor: list[torch.Tensor] | None, mu: torch.Tensor | None, batch: Tensors
    ) -> tuple[Params, Params, torch.Tensor]:
        def loss_of(weights: Params) -> torch.Tensor:
            named = {f"model.{key}": value for key, value in weights.items()}
            return functional_call(objective, named, (batch, anchor, mu))

        grads, loss = grad_and_value(loss_of)(params)
        stepped, buffers = sgd_step(params, clip_gradients(grads, max_norm), momenta, settings)
        return stepped, buffers, loss

    return step


@dataclass
class _Lane:
    """One client of a lockstep round: its algorithm, its train message, its minibatches to come."""

    client: ClientAlgorithm
    msg: Message
    batches: Iterator[Tensors]


def _next_batches(lanes: Sequence[_Lane]) -> dict[int, Tensors]:
    """The next minibatch of every lane that has one left, by lane index."""
    batches = {}
    for i, lane in enumerate(lanes):
        batch = next(lane.batches, None)
        if batch is not None:
            batches[i] = batch
    return batches


def _groups(batches: dict[int, Tensors]) -> dict[int, list[int]]:
    """The lanes that have a batch this step, grouped by its size (vmap needs one shape)."""
    groups: dict[int, list[int]] = {}
    for lane, batch in batches.items():
        groups.setdefault(len(batch[0]), []).append(lane)
    return groups


def _rows(values: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The rows ``index`` of stacked per-client ``values`` (all of them for None)."""
    return values if index is None else values.index_select(0, index)


def train_lockstep(calls: Sequence[tuple[ClientAlgorithm, Message]]) -> list[Message]:
    """Train every (client, train message) pair at once; their replies, as each client's own
    ``train`` would make them: the same minibatches in the same order, loss, clipping and SGD step,
    the same mean training loss, outgoing arrays and personal state."""
    cfg, device = calls[0][0].cfg, calls[0][0].device
    lanes, states, mus = [], [], []
    for client, msg in calls:
        model = client.model_from(msg)  # the process's pooled model: copied out before the next client's
        states.append({name: value.detach().clone() for name, value in model.named_parameters()})
        mus.append(proximal_mu(msg) if isinstance(client, FedProxClient) else 0.0)
        generator = round_generator(cfg, client.partition_id, server_round_of(msg))
        lanes.append(_Lane(client, msg, epoch_batches(client.data.train, cfg.batch_size, generator, cfg.local_epochs)))
    params = {name: torch.stack([state[name] for state in states]) for name in states[0]}
    settings = SGDSettings.from_config(cfg)
    momenta = {name: torch.zeros_like(value) for name, value in params.items()} if settings.momentum else {}
    proximal = any(isinstance(client, FedProxClient) for client, _ in calls)
    anchor = [value.clone() for value in params.values()] if proximal else None
    mu = torch.tensor(mus, device=device) if proximal else None
    per_client = 0 if proximal else None
    step = vmap(
        client_step(_Objective(calls[0][0].task, model).train(), settings, cfg.grad_clip),
        in_dims=(0, 0, per_client, per_client, 0),
    )
    totals = torch.zeros(len(lanes), dtype=torch.float64, device=device)
    seen = [0] * len(lanes)
    while batches := _next_batches(lanes):
        for size, members in _groups(batches).items():
            positions = torch.tensor(members, device=device)
            index = None if len(members) == len(lanes) else positions
            stepped, buffers, losses = step(
                {name: _rows(value, index) for name, value in params.items()},
                {name: _rows(value, index) for name, value in momenta.items()},
                None if anchor is None else [_rows(value, index) for value in anchor],
                None if mu is None else _rows(mu, index),
                tuple(torch.stack(column) for column in zip(*(batches[i] for i in members))),
            )
            if index is None:
                params, momenta = stepped, buffers
            else:  # the other lanes are masked out of this step: their parameters and momenta stay
                for name in params:
                    params[name][index] = stepped[name]
                for name in momenta:
                    momenta[name][index] = buffers[name]
            totals.index_add_(0, positions, losses.double() * size)  # float(loss) * size, summed in float64
            for i in members:
                seen[i] += size
    replies = []
    for i, lane in enumerate(lanes):
        with torch.no_grad():  # the model has no buffers (check_vectorized): its parameters are its state
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][i])
        replies.append(lane.client.trained_reply(lane.msg, model, float(totals[i]) / max(seen[i], 1)))
    return replies


class VectorizedGrid(InProcessGrid):
    """An in-process grid that trains the clients of a train exchange in lockstep
    (:func:`train_lockstep`) around the ClientApp's own preparation and reply steps; evaluate
    exchanges are delivered one by one. Calls are not timed one by one, so no train reply is
    dropped by ``round-timeout-s``. Run configs must pass :func:`check_vectorized`."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Replies to every message (train messages: trained together)."""
        sent = list(messages)
        if not sent or any(message.metadata.message_type != MessageType.TRAIN for message in sent):
            return super().send_and_receive(sent, timeout=timeout)
        replies: dict[int, Message] = {}
        opened: list[tuple[int, Message, Context, ClientCall]] = []
        for position, message in enumerate(sent):
            delivered = self.delivered(message)
            node = message.metadata.dst_node_id
            try:
                with acting_as(node):
                    call = begin_call("train", delivered, self.contexts[node])
                opened.append((position, delivered, self.contexts[node], call))
            except Exception as error:  # a failing client becomes an error reply, as in Flower
                replies[position] = error_reply(error, delivered)
        try:
            trained = train_lockstep([(call.client, delivered) for _, delivered, _, call in opened]) if opened else []
        except Exception as error:  # the lockstep training failed: every client of it did
            trained = [error_reply(error, delivered) for _, delivered, _, _ in opened]
        for (position, delivered, context, call), reply in zip(opened, trained):
            try:
                with acting_as(delivered.metadata.dst_node_id):
                    replies[position] = end_call("train", call, delivered, context, reply)
            except Exception as error:
                replies[position] = error_reply(error, delivered)
        ordered = [replies[position] for position in range(len(sent))]
        if self.record:
            self.replies.extend(ordered)
        return ordered
