"""DUA client: computes the importance weights Omega of each expert on its unlabelled data.

Only Omega leaves the device (parameter-shaped arrays, one per expert and non-head parameter),
never an image or a label. Evaluation is the base client's: the received (merged) model, then the
``adapt`` section's local adaptation for the personalized metrics.
"""

from __future__ import annotations

from flwr.app import Message

from clients.base import ClientAlgorithm, round_generator, server_round_of
from fedpersonal.adaptation.dua import DUASettings
from fedpersonal.adaptation.experts import pack_states, unpack_states
from fedpersonal.adaptation.prior import expert_omegas


class DUAClient(ClientAlgorithm):
    """Replies to a train message with Omega of every received expert (MAS or Fisher)."""

    def train(self, msg: Message) -> Message:
        """Omega_k of each expert k on the training split, labels dropped (section ``dua`` says how;
        with ``dua.omega-adabn`` each expert's BN statistics are first re-estimated on that split)."""
        settings = self.cfg.section(DUASettings)
        generator = round_generator(self.cfg, self.partition_id, server_round_of(msg))
        omegas = expert_omegas(
            unpack_states(msg.content.array_records["arrays"]),
            self.task.build_model,
            self.task.forward,
            self.task.inputs(self.data.train),
            settings.importance,
            settings.omega_batch_size,
            generator,
            adabn_first=settings.omega_adabn,
            device=self.device,
        )
        return self.reply(msg, {"num-examples": self.data.num_train}, pack_states(omegas))
