"""SCAFFOLD (Karimireddy et al., ICML 2020), client half: local steps corrected by ``c - c_i``.

The client's control variate ``c_i`` (zero at first) lives in ``context.state``. Local training
minimises ``loss(y) + <c - c_i, y>``, whose gradient is the corrected ``g(y) - c_i + c``. After
``K`` local steps with learning rate ``lr`` (option II of the paper) the new variate is
``c_i+ = c_i - c + (x - y) / (K lr)``; the reply carries ``y`` and ``Delta c_i = c_i+ - c_i`` under
the ``control/`` keys. The update assumes plain SGD: set ``momentum = 0`` for the paper's algorithm.
"""

from __future__ import annotations

import math

import torch
from flwr.app import ArrayRecord, Message
from torch import nn

from clients.base import ClientAlgorithm, server_round_of
from fedpersonal.params import CONTROL_PREFIX as CONTROL
from fedpersonal.training import Tensors

CLIENT_CONTROL = "scaffold-control"


class ScaffoldClient(ClientAlgorithm):
    """Corrected local SGD; replies with the model and its control update."""

    def received_arrays(self, msg: Message) -> ArrayRecord:
        """The model keys of the message (without the server's control variate)."""
        arrays = msg.content.array_records["arrays"]
        return ArrayRecord({k: v for k, v in arrays.to_torch_state_dict().items() if not k.startswith(CONTROL)})

    def train(self, msg: Message) -> Message:
        """Corrected local training from ``x``; reply with ``y`` and ``Delta c_i``."""
        sent = msg.content.array_records["arrays"].to_torch_state_dict()
        server = {k[len(CONTROL) :]: v.to(self.device) for k, v in sent.items() if k.startswith(CONTROL)}
        own = self.context.state.array_records.get(CLIENT_CONTROL)
        saved = own.to_torch_state_dict() if own is not None else {k: torch.zeros_like(v) for k, v in server.items()}
        client = {key: value.to(self.device) for key, value in saved.items()}
        model = self.model_from(msg)
        params = dict(model.named_parameters())
        start = {key: params[key].detach().clone() for key in server}
        correction = {key: (server[key] - client[key]).to(params[key].dtype) for key in server}

        def loss(net: nn.Module, batch: Tensors) -> torch.Tensor:
            linear = sum((params[key] * correction[key]).sum() for key in correction)
            return self.task.loss(net, batch) + linear

        train_loss = self.local_train(model, server_round_of(msg), loss=loss)
        steps = self.cfg.local_epochs * math.ceil(self.data.num_train / self.cfg.batch_size)
        new = {k: client[k] - server[k] + (start[k] - params[k].detach()) / (steps * self.cfg.lr) for k in server}
        self.context.state[CLIENT_CONTROL] = ArrayRecord(new)
        delta = {CONTROL + key: new[key] - client[key] for key in server}
        arrays = ArrayRecord({**self.outgoing_arrays(model).to_torch_state_dict(), **delta})
        return self.reply(msg, {"train-loss": train_loss, "num-examples": self.data.num_train}, arrays)
