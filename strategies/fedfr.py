"""FedFR server half (Liu et al., AAAI 2022; docs/algorithms/fedfr.md).

The global backbone starts from the server's pretraining on public identities (as for every face
algorithm, :meth:`fedpersonal.tasks.face.FaceTask.initial_model`). Each round the train message
carries, next to the backbone (``arrays``), a second ArrayRecord ``public-features``: the
L2-normalised features of the public images under the current global backbone (``features``,
one row per public image, in the public set's order) and the pretrained public classifier rows
(``classifier``). Aggregation is FedAvg of the returned backbones weighted by ``num-examples`` =
local + hard-negative images.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedpersonal.tasks.face import PUBLIC_FEATURES, embed
from strategies.face import FaceFedAvg


class FedFR(FaceFedAvg):
    """FaceFedAvg whose train messages also carry the public features and classifier rows."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Backbone + public features (under this backbone) + public classifier, to each node."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if messages:
            images, _ = self.task.public_data()
            features = F.normalize(embed(self.global_model(arrays), images), dim=1).cpu()  # computed on the device
            public = ArrayRecord({"features": features, "classifier": self.task.public_classifier()})
            for message in messages:
                message.content[PUBLIC_FEATURES] = public
        return messages
