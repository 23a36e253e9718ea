"""The Flower ClientApp: dispatches each message to the client half of the run's algorithm."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients import CLIENT_ALGORITHMS, ClientAlgorithm
from clients.base import parse_client_config
from fedpersonal.config import require_choice

app = ClientApp()


def client_for(context: Context) -> ClientAlgorithm:
    """The client half of the algorithm named by run-config key ``strategy``."""
    name = parse_client_config(context).strategy
    require_choice("strategy", name, CLIENT_ALGORITHMS)
    return CLIENT_ALGORITHMS[name](context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training."""
    return client_for(context).train(msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation of the received model."""
    return client_for(context).evaluate(msg)
