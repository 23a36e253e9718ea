"""FedFR client (Liu et al., AAAI 2022): generic backbone plus a personal DFC branch.

Per round: with the received global backbone the client embeds its training images and keeps as
hard negatives the public images whose (server-computed, normalised) feature has cosine
> ``fedfr.hard-negative-threshold`` with any of them. It then trains backbone, local classifier
and DFC branch on local + hard-negative images with

    CosFace(s, m) over local + public classes + dfc-weight * L_DFC + contrastive-weight * L_con

(public rows are the server's pretrained classifier, kept fixed; public images are all-negative
for the DFC branch; L_con pulls each feature towards the global backbone's and away from the
previous local backbone's). Only the backbone goes back, weighted by local + hard-negative
count; the classifier, the DFC branch and the trained backbone stay in ``context.state``.
Personalized feature = DFC transform(local backbone(x)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.app import Message
from torch import nn

from clients.face import CLASSIFIER_STATE, FaceClient
from fedpersonal.config import setting
from fedpersonal.device import to_device
from fedpersonal.losses.face import NO_POSITIVE, cosface_loss, dfc_loss, hard_negatives, moon_loss
from fedpersonal.models.face import CosineClassifier, DFCBranch, PersonalEmbedding, cosine
from fedpersonal.params import load_arrays, to_arrays
from fedpersonal.tasks.face import PUBLIC_FEATURES, embed, pixels
from fedpersonal.training import Tensors

DFC_STATE = "fedfr-dfc"


@dataclass(frozen=True)
class FedFRSettings:
    """Run-config section ``fedfr`` (``[tool.flwr.app.config.fedfr]``), read by the client."""

    SECTION: ClassVar[str] = "fedfr"

    hard_negative_threshold: float = setting(0.4, "a number in [-1, 1] (cosine)", lambda v: -1 <= v <= 1)
    dfc_weight: float = setting(10.0, "a number >= 0", lambda v: v >= 0)
    contrastive_weight: float = setting(5.0, "a number >= 0", lambda v: v >= 0)
    temperature: float = setting(0.5, "a number > 0 (MOON temperature)", lambda v: v > 0)
    dfc_scale: float = setting(30.0, "a number > 0 (DFC r)", lambda v: v > 0)
    dfc_margin: float = setting(0.4, "a number >= 0 (DFC m)", lambda v: v >= 0)
    dfc_lambda: float = setting(0.7, "a number in (0, 1) (DFC positive weight)", lambda v: 0 < v < 1)


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

    def training_set(self, received: nn.Module, public_features: torch.Tensor, threshold: float) -> tuple[Tensors, int]:
        """(images, CosFace labels, DFC labels, global features, previous features) of the local
        images plus the public images whose server feature has cosine > ``threshold`` with a local
        one (hard negatives), and the hard-negative count."""
        public_images, public_labels = to_device(self.face.public_data(), self.device)
        if len(public_images) != len(public_features):
            raise ValueError(
                f"the server sent {len(public_features)} public features for {len(public_images)} public images; "
                "server and client must use the same face section and seed"
            )
        images, labels = self.data.train
        hard = hard_negatives(embed(received, images), public_features, threshold)
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

    def fit(self, net: nn.Module, classifier: CosineClassifier, received: nn.Module, msg: Message) -> dict[str, float]:
        """FedFR's local objective on local + hard-negative images."""
        settings = self.cfg.section(FedFRSettings)
        face = self.face.settings
        sent = msg.content.array_records[PUBLIC_FEATURES].to_torch_state_dict()
        public = {key: value.to(self.device) for key, value in sent.items()}
        public_rows = public["classifier"]
        tensors, num_hard = self.training_set(received, public["features"], settings.hard_negative_threshold)
        dfc = self.dfc_branch(classifier)

        def loss(_: nn.Module, batch: Tensors) -> torch.Tensor:
            images, cosface_labels, dfc_labels, global_features, previous_features = batch
            features = net(pixels(images))
            cosines = cosine(features, torch.cat([classifier.weight, public_rows]))
            return (
                cosface_loss(cosines, cosface_labels, face.cosface_scale, face.cosface_margin)
                + settings.dfc_weight
                * dfc_loss(
                    dfc.cosines(features),
                    dfc_labels,
                    dfc.bias,
                    settings.dfc_scale,
                    settings.dfc_margin,
                    settings.dfc_lambda,
                )
                + settings.contrastive_weight
                * moon_loss(features, global_features, previous_features, settings.temperature)
            )

        module = nn.ModuleDict({"net": net, "classifier": classifier, "dfc": dfc})
        train_loss = self.run_epochs(module, tensors, loss, msg)
        self.context.state[DFC_STATE] = to_arrays(dfc)
        return {"train-loss": train_loss, "num-examples": len(tensors[0]), "num-hard-negatives": num_hard}
