"""FedFR client (Liu et al., AAAI 2022): generic backbone plus a personal DFC branch.

Per round: with the received global backbone the client embeds its training images and keeps as
hard negatives the public images whose (server-computed, normalised) feature has cosine
> ``fedfr.hard-negative-threshold`` with any of them (none with ``fedfr.hard-negatives = false``).
It then trains backbone, local classifier and DFC branch on local + hard-negative images with

    CosFace(s, m) over local + public classes + dfc-weight * L_DFC + contrastive-weight * L_con

(public rows are the server's pretrained classifier, fixed unless ``fedfr.train-public-classifier``;
public images are all-negative for the DFC branch; L_con pulls each feature towards the global
backbone's and away from the previous local backbone's; ``fedfr.dfc-weight = 0`` removes the DFC
branch altogether; ``fedfr.lr-decay`` multiplies the learning rate by 0.1 from local epoch
max(1, floor(3/4 epochs)) on, as the reference's StepLR). Only the backbone goes back, weighted by
local + hard-negative count; the classifier, the DFC branch and the trained backbone stay in
``context.state``. Personalized feature = DFC transform(local backbone(x)). Train metrics:
``num-hard-negatives``, ``hard-negative-fraction`` (of the public images) and
``public-classifier-change`` (mean L2 norm of the public rows' change over the round; 0 when fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import Message
from torch import nn

from clients.base import round_generator, server_round_of
from clients.face import CLASSIFIER_STATE, FaceClient
from fedpersonal.config import setting
from fedpersonal.device import to_device
from fedpersonal.losses.face import NO_POSITIVE, cosface_loss, dfc_loss, hard_negatives, moon_loss
from fedpersonal.models.face import CosineClassifier, DFCBranch, PersonalEmbedding, cosine
from fedpersonal.params import load_arrays, to_arrays
from fedpersonal.tasks.face import PUBLIC_FEATURES, embed, pixels
from fedpersonal.training import SGDSettings, Tensors, sgd_optimizer, train_epochs

DFC_STATE = "fedfr-dfc"
# The reference's within-round decay (jackie840129/FedFR, server.py and client.py): a fresh
# StepLR(step_size = max(1, int(3/4 x local epochs)), gamma = 0.1) per round, stepped per epoch.
LR_DECAY_FRACTION, LR_DECAY_GAMMA = 0.75, 0.1


def lr_factors(epochs: int) -> list[float]:
    """The learning-rate multiplier of each local epoch under ``fedfr.lr-decay``: 1 before epoch
    ``max(1, floor(3/4 epochs))``, then 0.1 (0.01 after twice that step, which no round reaches)."""
    step = max(1, int(LR_DECAY_FRACTION * epochs))
    return [LR_DECAY_GAMMA ** (epoch // step) for epoch in range(epochs)]


@dataclass(frozen=True)
class FedFRSettings:
    """Run-config section ``fedfr`` (``[tool.flwr.app.config.fedfr]``), read by the client."""

    SECTION: ClassVar[str] = "fedfr"

    hard_negatives: bool = setting(
        True, "true or false (false: no public image joins local training; the public rows stay in CosFace)"
    )
    hard_negative_threshold: float = setting(0.4, "a number in [-1, 1] (cosine)", lambda v: -1 <= v <= 1)
    dfc_weight: float = setting(10.0, "a number >= 0 (0 removes the DFC branch)", lambda v: v >= 0)
    contrastive_weight: float = setting(5.0, "a number >= 0", lambda v: v >= 0)
    temperature: float = setting(0.5, "a number > 0 (MOON temperature)", lambda v: v > 0)
    dfc_scale: float = setting(30.0, "a number > 0 (DFC r)", lambda v: v > 0)
    dfc_margin: float = setting(0.4, "a number >= 0 (DFC m)", lambda v: v >= 0)
    dfc_lambda: float = setting(0.7, "a number in (0, 1) (DFC positive weight)", lambda v: 0 < v < 1)
    lr_decay: bool = setting(
        False, "true or false (the reference's within-round decay: lr x 0.1 from local epoch floor(3/4 epochs))"
    )
    train_public_classifier: bool = setting(
        False, "true or false (the public classifier rows train locally, from the server's rows each round)"
    )


class FedFRClient(FaceClient):
    """FedFR's client half: hard negatives, CosFace + DFC + MOON, backbone-only replies."""

    private_records = (CLASSIFIER_STATE, DFC_STATE)

    def dfc_branch(self, classifier: CosineClassifier) -> DFCBranch:
        """The saved DFC branch, or a new one (identity transform, rows from ``classifier``)."""
        branch = DFCBranch(classifier.weight).to(self.device)
        saved = self.context.state.array_records.get(DFC_STATE)
        if saved is not None:
            load_arrays(branch, saved)
        return branch

    def personal_model(self, received: nn.Module) -> nn.Module:
        """DFC transform after the last local backbone (identity after the received one before
        the first training)."""
        saved = self.saved_backbone()
        net = received if saved is None else saved
        transform = (
            nn.Identity()
            if DFC_STATE not in self.context.state
            else self.dfc_branch(self.classifier(received)).transform
        )
        return PersonalEmbedding(net, transform)

    def training_set(
        self, received: nn.Module, public_features: torch.Tensor, threshold: float | None
    ) -> tuple[Tensors, int]:
        """(images, CosFace labels, DFC labels, global features, previous features) of the local
        images plus the public images whose server feature has cosine > ``threshold`` with a local
        one (hard negatives; none for ``threshold`` None), and the hard-negative count."""
        public_images, public_labels = to_device(self.face.public_data(), self.device)
        if len(public_images) != len(public_features):
            raise ValueError(
                f"the server sent {len(public_features)} public features for {len(public_images)} public images; "
                "server and client must use the same face section and seed"
            )
        images, labels = self.data.train
        hard = (
            torch.zeros(0, dtype=torch.long, device=self.device)
            if threshold is None
            else hard_negatives(embed(received, images), public_features, threshold)
        )
        num_local_classes = int(labels.max()) + 1
        all_images = torch.cat([images, public_images[hard]])
        cosface_labels = torch.cat([labels, num_local_classes + public_labels[hard]])
        dfc_labels = torch.cat([labels, torch.full((len(hard),), NO_POSITIVE, dtype=labels.dtype, device=self.device)])
        global_features = embed(received, all_images)
        saved = self.saved_backbone()
        previous_features = (
            global_features if saved is None else embed(saved, all_images)
        )  # before any training: the same
        tensors = (all_images, cosface_labels, dfc_labels, global_features, previous_features)
        return tensors, len(hard)

    def run_epochs(self, module: nn.Module, tensors: Tensors, loss, msg: Message) -> float:
        """This round's local epochs; with ``fedfr.lr-decay`` the learning rate of epoch ``e`` is
        ``lr x lr_factors(epochs)[e]`` (one optimizer, so momentum carries over as with StepLR)."""
        if not self.cfg.section(FedFRSettings).lr_decay:
            return super().run_epochs(module, tensors, loss, msg)
        server_round = server_round_of(msg)
        factors = lr_factors(self.face.local_epochs(server_round))
        optimizer = sgd_optimizer(module.parameters(), SGDSettings.from_config(self.cfg))
        generator = round_generator(self.cfg, self.partition_id, server_round)  # the same batches as without decay
        total = 0.0
        for factor in factors:
            for group in optimizer.param_groups:
                group["lr"] = self.cfg.lr * factor
            total += train_epochs(
                module, tensors, loss, optimizer, 1, self.cfg.batch_size, generator, self.cfg.grad_clip
            )
        return total / len(factors)  # every epoch sees the same samples

    def fit(self, net: nn.Module, classifier: CosineClassifier, received: nn.Module, msg: Message) -> dict[str, float]:
        """FedFR's local objective on local + hard-negative images."""
        settings = self.cfg.section(FedFRSettings)
        face = self.face.settings
        sent = msg.content.array_records[PUBLIC_FEATURES].to_torch_state_dict()
        public = {key: value.to(self.device) for key, value in sent.items()}
        public_rows = CosineClassifier(public["classifier"])  # a fresh copy of the server's rows each round
        public_rows.weight.requires_grad_(settings.train_public_classifier)
        threshold = settings.hard_negative_threshold if settings.hard_negatives else None
        tensors, num_hard = self.training_set(received, public["features"], threshold)
        dfc = self.dfc_branch(classifier) if settings.dfc_weight > 0 else None  # weight 0: no branch at all

        def loss(_: nn.Module, batch: Tensors) -> torch.Tensor:
            images, cosface_labels, dfc_labels, global_features, previous_features = batch
            features = net(pixels(images))
            cosines = cosine(features, torch.cat([classifier.weight, public_rows.weight]))
            total = cosface_loss(cosines, cosface_labels, face.cosface_scale, face.cosface_margin)
            if dfc is not None:
                total = total + settings.dfc_weight * dfc_loss(
                    dfc.cosines(features),
                    dfc_labels,
                    dfc.bias,
                    settings.dfc_scale,
                    settings.dfc_margin,
                    settings.dfc_lambda,
                )
            return total + settings.contrastive_weight * moon_loss(
                features, global_features, previous_features, settings.temperature
            )

        parts: dict[str, nn.Module] = {"net": net, "classifier": classifier}
        if dfc is not None:
            parts["dfc"] = dfc
        if settings.train_public_classifier:
            parts["public"] = public_rows
        train_loss = self.run_epochs(nn.ModuleDict(parts), tensors, loss, msg)
        if dfc is not None:
            self.context.state[DFC_STATE] = to_arrays(dfc)
        change = (public_rows.weight.detach() - public["classifier"]).norm(dim=1).mean()
        return {
            "train-loss": train_loss,
            "num-examples": len(tensors[0]),
            "num-hard-negatives": num_hard,
            "hard-negative-fraction": num_hard / len(public["features"]),
            "public-classifier-change": float(change),
        }
