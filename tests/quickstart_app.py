"""A ClientApp written like Flower's quickstart-pytorch example; it imports nothing from fedpersonal.

Each node holds a noisy linear-regression problem of its own (seeded by its partition id), trains
a tiny model for ``local-epochs`` (run config) with the learning rate the server sends in the
message config (``lr``), and reports ``eval_loss``.
"""

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

app = ClientApp()
TRUE_WEIGHTS = torch.tensor([[2.0, -1.0, 0.5]])


class Net(nn.Module):
    """A linear model y = w x + b."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def load_data(partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + partition_id)
    x = torch.randn(64, 3, generator=generator) + partition_id  # shifted inputs per node
    y = x @ TRUE_WEIGHTS.T + 0.3 + 0.05 * torch.randn(64, 1, generator=generator)
    return x, y


@app.train()
def train(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_data(context.node_config["partition-id"])
    optimizer = torch.optim.SGD(model.parameters(), lr=msg.content["config"]["lr"])
    for _ in range(context.run_config["local-epochs"]):
        for start in range(0, len(x), 16):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[start : start + 16]), y[start : start + 16])
            loss.backward()
            optimizer.step()
    metrics = MetricRecord({"train_loss": loss.item(), "num-examples": len(x)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_data(context.node_config["partition-id"])
    with torch.no_grad():
        loss = float(nn.functional.mse_loss(model(x), y))
    metrics = MetricRecord({"eval_loss": loss, "num-examples": len(x)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
