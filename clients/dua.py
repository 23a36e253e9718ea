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
from fedpersonal.adaptation.importance import importance


class DUAClient(ClientAlgorithm):
    """Replies to a train message with Omega of every received expert (MAS or Fisher)."""

    def train(self, msg: Message) -> Message:
        """Omega_k of each expert k on the training split, labels dropped (section ``dua`` says how)."""
        settings = self.cfg.section(DUASettings)
        generator = round_generator(self.cfg, self.partition_id, server_round_of(msg))
        inputs = self.task.inputs(self.data.train)
        omegas = []
        for state in unpack_states(msg.content.array_records["arrays"]):
            model = self.task.build_model().to(self.device)
            model.load_state_dict(state)
            omegas.append(
                importance(settings.importance, model, self.task.forward, inputs, settings.omega_batch_size, generator)
            )
        return self.reply(msg, {"num-examples": self.data.num_train}, pack_states(omegas))
