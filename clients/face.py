"""Client halves of the face baselines; every face client keeps a personal CosFace classifier.

What all face algorithms share (:class:`FaceClient`): the server sends the generic backbone
(keys ``backbone.*``); the client's classifier (one row per local identity, imprinted from the
received backbone's mean features on first use) and its last locally trained backbone stay in
``context.state``; local epochs follow the ``face`` section's schedule; evaluation reports the
received backbone's metrics on the client's own identities (plain keys) and its personalized
model's (``personalized-`` keys).

* ``face-fedavg``: CosFace on local data, the trained backbone goes back (FedAvg of backbones).
  Personalized model = the received global backbone.
* ``face-finetune``: the same training; personalized model = the backbone after the client's
  last local training, i.e. the global model fine-tuned on local data.
* ``face-local``: the backbone never leaves the device; it starts from the pretrained model and
  trains only on local data, round after round; replies carry an empty ArrayRecord.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from fedpersonal.config import ConfigError, RunConfig
from fedpersonal.losses.face import cosface_loss
from fedpersonal.models.face import CosineClassifier
from fedpersonal.params import load_arrays, to_arrays
from fedpersonal.tasks.face import FaceTask, embed, pixels
from fedpersonal.training import Tensors

CLASSIFIER_STATE = "face-classifier"
BACKBONE_STATE = "face-local-backbone"


def imprinted_rows(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One unit row per identity 0..K-1: the normalised mean of its normalised embeddings."""
    features = F.normalize(embed(net, images), dim=1)
    count = int(labels.max()) + 1
    sums = torch.zeros(count, features.shape[1], device=features.device).index_add_(0, labels, features)
    return F.normalize(sums, dim=1)


class FaceClient(ClientAlgorithm):
    """``face-fedavg``: a generic backbone averaged across clients, a personal classifier."""

    private_records: tuple[str, ...] = (CLASSIFIER_STATE,)

    def __init__(self, context: Context, cfg: RunConfig) -> None:
        super().__init__(context, cfg)
        if not isinstance(self.task, FaceTask):
            raise ConfigError(
                f"run config key 'strategy' = {self.cfg.strategy!r} needs task 'face'; got task = {self.cfg.task!r}"
            )
        self.face: FaceTask = self.task

    def saved_backbone(self) -> nn.Module | None:
        """The backbone after this client's last local training (None before its first)."""
        arrays = self.context.state.array_records.get(BACKBONE_STATE)
        if arrays is None:
            return None
        net = self.task.build_model().to(self.device)
        load_arrays(net, arrays)
        return net

    def classifier(self, received: nn.Module) -> CosineClassifier:
        """The personal classifier: saved, or imprinted from the received backbone."""
        saved = self.context.state.array_records.get(CLASSIFIER_STATE)
        if saved is not None:
            return CosineClassifier(saved.to_torch_state_dict()["weight"].to(self.device))
        return CosineClassifier(imprinted_rows(received, *self.data.train))

    def starting_backbone(self, received: nn.Module) -> nn.Module:
        """The backbone local training starts from (the received one)."""
        return copy.deepcopy(received)

    def personal_model(self, received: nn.Module) -> nn.Module:
        """The model this client uses for its own identities (the received generic backbone)."""
        return received

    def fit(self, net: nn.Module, classifier: CosineClassifier, received: nn.Module, msg: Message) -> dict[str, float]:
        """Local CosFace training of ``net`` and ``classifier``; returns the reply's metrics."""
        loss = self.run_epochs(
            nn.ModuleDict({"net": net, "classifier": classifier}),
            self.data.train,
            self.cosface_step(net, classifier),
            msg,
        )
        return {"train-loss": loss, "num-examples": self.data.num_train}

    def cosface_step(self, net: nn.Module, classifier: CosineClassifier):
        """The loss of a batch (images, labels) under CosFace over the local classes."""
        settings = self.face.settings

        def loss(_: nn.Module, batch: Tensors) -> torch.Tensor:
            cosines = classifier(net(pixels(batch[0])))
            return cosface_loss(cosines, batch[1], settings.cosface_scale, settings.cosface_margin)

        return loss

    def run_epochs(self, module: nn.Module, tensors: Tensors, loss, msg: Message) -> float:
        """SGD over ``module``'s parameters for this round's scheduled number of local epochs."""
        server_round = server_round_of(msg)
        return self.local_train(module, server_round, tensors, loss, self.face.local_epochs(server_round))

    def train(self, msg: Message) -> Message:
        """Train locally from the received backbone; keep the personal parts, reply."""
        received = self.model_from(msg)
        net = self.starting_backbone(received)
        classifier = self.classifier(received)
        metrics = self.fit(net, classifier, received, msg)
        self.context.state[CLASSIFIER_STATE] = to_arrays(classifier)
        self.context.state[BACKBONE_STATE] = to_arrays(net)
        return self.reply(msg, metrics, self.outgoing_arrays(net))

    def evaluate(self, msg: Message) -> Message:
        """The received backbone's and the personalized model's metrics on own identities."""
        received = self.model_from(msg)
        metrics = self.face.client_metrics(received, self.data)
        personal_model = self.personal_model(received)
        personal = metrics if personal_model is received else self.face.client_metrics(personal_model, self.data)
        metrics.update({f"personalized-{key}": value for key, value in personal.items()})
        return self.reply(msg, {**metrics, "num-examples": self.data.num_test})


class FaceFineTuneClient(FaceClient):
    """``face-finetune``: FedAvg training; the personalized model is the locally trained one."""

    def personal_model(self, received: nn.Module) -> nn.Module:
        """The backbone after the last local training (the received one before any)."""
        saved = self.saved_backbone()
        return received if saved is None else saved


class FaceLocalClient(FaceFineTuneClient):
    """``face-local``: trains its own backbone on local data only; nothing leaves the device."""

    private_records = (CLASSIFIER_STATE, BACKBONE_STATE)

    def starting_backbone(self, received: nn.Module) -> nn.Module:
        """The client's own backbone (the pretrained model the first time)."""
        saved = self.saved_backbone()
        return copy.deepcopy(received) if saved is None else saved

    def outgoing_arrays(self, model: nn.Module) -> ArrayRecord:
        """Nothing: local-only training shares no parameters."""
        return ArrayRecord()
