"""The client half of an algorithm: a base class whose defaults are plain FedAvg.

An algorithm subclasses :class:`ClientAlgorithm` and overrides only what differs (which keys
leave the device, extra local steps, personal state kept in ``context.state``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedpersonal.adaptation import AdaptSettings, adapt_model
from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.device import resolve_device
from fedpersonal.model_pool import pooled_initial_model
from fedpersonal.params import load_arrays, select_keys, to_arrays
from fedpersonal.privacy.dpsgd import DPSGDSettings, state_metrics
from fedpersonal.tasks import ClientData, Task, get_task
from fedpersonal.training import SGDSettings, Tensors, epoch_batches, sgd_optimizer, train_epochs


def partition_of(context: Context, cfg: RunConfig) -> int:
    """This node's partition id, checked against ``num-clients``."""
    node_config = context.node_config
    if "partition-id" not in node_config:
        raise ConfigError("node config has no 'partition-id'; run fedpersonal through a simulation")
    partitions = int(node_config.get("num-partitions", cfg.num_clients))
    if partitions != cfg.num_clients:
        raise ConfigError(
            f"run config key 'num-clients' = {cfg.num_clients} but the federation has "
            f"{partitions} supernodes; expected them equal"
        )
    return int(node_config["partition-id"])


def server_round_of(msg: Message) -> int:
    """The round number the server put in the message's config (0 if absent)."""
    return int(msg.content.config_records["config"].get("server-round", 0))  # type: ignore[arg-type]


def round_generator(cfg: RunConfig, partition_id: int, server_round: int) -> torch.Generator:
    """A torch generator seeded by (seed, partition, round): reproducible shuffling."""
    seed = int(np.random.SeedSequence([cfg.seed, partition_id, server_round]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


class ClientAlgorithm:
    """FedAvg client: load the global model, train locally, return the whole model.

    ``context`` is the node's Flower context (``context.state`` carries personal state across
    rounds); ``cfg`` is the run config, parsed once per run by the ClientApp. Models and data live on
    the run's ``device`` (:attr:`device`); arrays go to and from Flower messages through the host.
    """

    def __init__(self, context: Context, cfg: RunConfig) -> None:
        self.context = context
        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.task: Task = get_task(self.cfg.task, self.cfg)
        self.partition_id = partition_of(context, self.cfg)
        self.data: ClientData = self.task.client_data(self.partition_id).to(self.device)

    # Parameter-name prefixes that never leave the device (e.g. ("head.",) for FedPer): they are
    # kept in context.state["personal"] and override what the server sends.
    personal_prefixes: tuple[str, ...] = ()
    # Records of context.state whose arrays never leave the device (tests check every reply for them).
    private_records: tuple[str, ...] = ("personal",)

    def personal_keys(self, model: nn.Module) -> list[str]:
        """The keys of ``model`` that never leave the device (default: those under
        :attr:`personal_prefixes`; an algorithm may choose them otherwise, e.g. by layer type)."""
        return select_keys(model.state_dict(), self.personal_prefixes)

    def received_arrays(self, msg: Message) -> ArrayRecord:
        """The model arrays of a message (an algorithm that sends more in ``arrays`` strips it here)."""
        return msg.content.array_records["arrays"]

    def model_from(self, msg: Message) -> nn.Module:
        """The model the server sent, with this client's personal part if any (see :meth:`model_of`)."""
        return self.model_of(self.received_arrays(msg))

    def model_of(self, arrays: ArrayRecord, personal: bool = True) -> nn.Module:
        """A model holding ``arrays`` and, with ``personal``, this client's personal part if any (a
        per-process model object, reset to the run's seeded initial weights first when ``arrays``
        lacks some keys)."""
        model = pooled_initial_model(self.task, self.cfg, reset=False)
        complete = set(arrays.keys()) >= set(model.state_dict())
        if not complete:  # keys the server does not hold start from the run's initial weights
            model = pooled_initial_model(self.task, self.cfg, reset=True)
        load_arrays(model, arrays, strict=complete)
        saved = self.context.state.array_records.get("personal") if personal else None
        if saved is not None:
            load_arrays(model, saved, strict=False)
        return model

    def local_train(
        self,
        model: nn.Module,
        server_round: int,
        tensors: Tensors | None = None,
        loss: Callable[[nn.Module, Tensors], torch.Tensor] | None = None,
        epochs: int | None = None,
    ) -> float:
        """Local SGD epochs over ``model``'s parameters (defaults: the train split, the task's loss,
        ``local-epochs``); returns the mean training loss. Section ``dpsgd`` makes them DP-SGD epochs
        (Opacus; the accountant's history in ``context.state``)."""
        tensors = self.data.train if tensors is None else tensors
        loss = self.task.loss if loss is None else loss
        optimizer = sgd_optimizer(model.parameters(), SGDSettings.from_config(self.cfg))
        epochs = self.cfg.local_epochs if epochs is None else epochs
        generator = round_generator(self.cfg, self.partition_id, server_round)
        if self.cfg.section(DPSGDSettings).enabled:
            from fedpersonal.privacy.opacus_sgd import train_private  # the optional extra 'opacus'

            return train_private(model, tensors, loss, optimizer, epochs, generator, self.cfg, self.context.state)
        return train_epochs(model, tensors, loss, optimizer, epochs, self.cfg.batch_size, generator, self.cfg.grad_clip)

    def batch_steps(self, server_round: int, step: Callable[[Tensors], nn.Module]) -> float:
        """``local-epochs`` shuffled passes over the training split calling ``step`` on every batch
        (an algorithm's own update, returning the model whose loss is reported); returns the
        sample-weighted mean of those losses after each step."""
        generator = round_generator(self.cfg, self.partition_id, server_round)
        total, seen = 0.0, 0
        for batch in epoch_batches(self.data.train, self.cfg.batch_size, generator, self.cfg.local_epochs):
            reported = step(batch)
            with torch.no_grad():
                total += float(self.task.loss(reported, batch)) * len(batch[0])
            seen += len(batch[0])
        return total / max(seen, 1)

    def outgoing_arrays(self, model: nn.Module) -> ArrayRecord:
        """What leaves the device after training: the whole model, less the personal keys, which
        are stored in ``context.state``."""
        personal = self.personal_keys(model)
        if not personal:
            return to_arrays(model)
        keys = list(model.state_dict())
        self.context.state["personal"] = to_arrays(model, personal)
        return to_arrays(model, [key for key in keys if key not in personal])

    def reply(self, msg: Message, metrics: dict[str, float], arrays: ArrayRecord | None = None) -> Message:
        """A reply carrying ``arrays`` (train) and metrics tagged with the partition id."""
        content = RecordDict({"metrics": MetricRecord({**metrics, "partition-id": self.partition_id})})
        if arrays is not None:
            content["arrays"] = arrays
        return Message(content=content, reply_to=msg)

    def train(self, msg: Message) -> Message:
        """Handle a train message."""
        model = self.model_from(msg)
        loss = self.local_train(model, server_round_of(msg))
        return self.trained_reply(msg, model, loss)

    def trained_reply(self, msg: Message, model: nn.Module, loss: float) -> Message:
        """The reply to train message ``msg`` once local training left ``model`` with mean training
        loss ``loss``: the outgoing arrays, ``train-loss``, ``num-examples`` and DP-SGD's metrics."""
        metrics = {"train-loss": loss, "num-examples": self.data.num_train, **state_metrics(self.context.state)}
        return self.reply(msg, metrics, self.outgoing_arrays(model))

    def adapt(self, model: nn.Module, server_round: int) -> nn.Module | None:
        """A copy of ``model`` adapted to this client's unlabelled training data as section
        ``adapt`` says (None for ``adapt.method = "none"``)."""
        settings = self.cfg.section(AdaptSettings)
        if settings.method == "none":
            return None
        generator = round_generator(self.cfg, self.partition_id, server_round)
        return adapt_model(copy.deepcopy(model), self.task, self.task.inputs(self.data.train), settings, generator)

    def personalized_model(self, model: nn.Module, server_round: int) -> nn.Module:
        """This client's own model, given ``model`` (the received one with its personal part loaded):
        by default ``model`` itself; Ditto, APFL, FedBABU, ... return their personal model."""
        return model

    def stored_model(self, key: str, like: nn.Module) -> nn.Module:
        """A copy of ``like`` holding the arrays this client saved under ``key`` in ``context.state``
        (``like``'s own weights before anything was saved)."""
        stored = copy.deepcopy(like)
        saved = self.context.state.array_records.get(key)
        if saved is not None:
            load_arrays(stored, saved)
        return stored

    def evaluate(self, msg: Message) -> Message:
        """Handle an evaluate message (the protocol of :mod:`fedpersonal.evaluation`): global metrics
        (plain names) of the received model when the algorithm keeps no personal parameters, and
        ``personalized-<metric>`` of :meth:`personalized_model` after the configured adaptation."""
        server_round = server_round_of(msg)
        model = self.model_from(msg)
        own = self.personal_keys(model)
        metrics = {} if own else self.task.evaluate(model, self.data.test)
        personal = self.personalized_model(model, server_round)
        personal = self.adapt(personal, server_round) or personal
        measured = metrics if personal is model and metrics else self.task.evaluate(personal, self.data.test)
        metrics.update({f"personalized-{k}": v for k, v in measured.items()})
        return self.reply(msg, {**metrics, "num-examples": self.data.num_test})

    def unseen_evaluation(self, arrays: ArrayRecord, steps: int) -> dict[str, float]:
        """This client as one that never trained (``unseen-<metric>``): the model ``arrays`` hold, its
        personal part (the whole model when the algorithm has none) fine-tuned for ``steps`` SGD
        steps on the training split, then adapted as section ``adapt`` says, on the test split."""
        model = copy.deepcopy(self.model_of(arrays, personal=False))
        own = set(self.personal_keys(model))
        shared = {key: value.clone() for key, value in model.state_dict().items() if own and key not in own}
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(not own or name in own)
        batches = -(-self.data.num_train // self.cfg.batch_size)
        train_epochs(
            model,
            self.data.train,
            self.task.loss,
            sgd_optimizer(model.parameters(), SGDSettings.from_config(self.cfg)),
            -(-steps // batches),
            self.cfg.batch_size,
            round_generator(self.cfg, self.partition_id, 0),
            self.cfg.grad_clip,
            max_steps=steps,
        )
        model.load_state_dict(shared, strict=False)  # BatchNorm statistics of the shared part stay too
        for parameter in model.parameters():  # adaptation (TENT) chooses its own trainable parameters
            parameter.requires_grad_(True)
        model = self.adapt(model, 0) or model
        return {f"unseen-{k}": v for k, v in self.task.evaluate(model, self.data.test).items()}
