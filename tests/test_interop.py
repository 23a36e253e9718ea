"""Flower-native building blocks: our ServerApp loop drives a plain Flower ClientApp, and our
ClientApp trains under Flower's own FedAvg in a plain Flower ServerApp."""

import quickstart_app
import torch
from flwr.app import ArrayRecord, Context, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedpersonal.results import RunDirectory
from fedpersonal.tasks import get_task
from simulations.inprocess import InProcessGrid
from simulations.loop import LoopSettings, RoundLoop
from simulations.registry import build_strategy, parse_run_config
from strategies.fedopt import FedAdam

NODES = {"min_available_nodes": 2, "min_train_nodes": 2, "min_evaluate_nodes": 2}


def drive_quickstart(strategy, tmp_path, rounds: int = 4):
    """Our round loop with ``strategy`` over two nodes running the quickstart-style ClientApp."""
    grid = InProcessGrid(quickstart_app.app, {"local-epochs": 2}, num_nodes=2, record=True)
    run_dir = RunDirectory.create(tmp_path, "quickstart")
    settings = LoopSettings("eval_loss", "lower", message_config={"lr": 0.02, "local-epochs": 2, "batch-size": 16})
    torch.manual_seed(0)
    RoundLoop(strategy, grid, run_dir, settings).run(ArrayRecord(quickstart_app.Net().state_dict()), rounds)
    return run_dir.read_rows("rounds.jsonl"), grid


def test_our_loop_and_fedavg_drive_a_quickstart_client_app(tmp_path):
    strategy = build_strategy(parse_run_config({"strategy": "fedavg", "num-clients": 2}))
    rounds, grid = drive_quickstart(strategy, tmp_path)
    losses = [row["global-eval_loss"] for row in rounds]
    assert losses[-1] < 0.2 * losses[0]
    for message in grid.sent:  # what a quickstart-style client reads from every message's config
        config = message.content["config"]
        assert config["lr"] == 0.02 and config["local-epochs"] == 2 and config["server-round"] >= 0


def test_our_fedadam_drives_a_quickstart_client_app(tmp_path):
    rounds, _ = drive_quickstart(FedAdam(eta=0.3, beta_1=0.9, beta_2=0.99, tau=1e-3, **NODES), tmp_path)
    losses = [row["global-eval_loss"] for row in rounds]
    assert losses[-1] < 0.5 * losses[0]
    assert all(row["failures"] == 0 for row in rounds[1:])


def test_our_client_app_learns_under_flowers_fedavg_in_a_plain_server_app():
    from simulations.client_app import app as client_app

    run_config = {"num-clients": 2, "samples-per-client": 100, "local-epochs": 2}
    task = get_task("gaze", parse_run_config(run_config))
    torch.manual_seed(0)
    initial = task.build_model()
    tests = [task.client_data(partition).test for partition in range(2)]
    before = sum(task.evaluate(initial, data)["angular-error"] * len(data[0]) for data in tests) / sum(
        len(data[0]) for data in tests
    )
    results = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(**NODES)  # Flower's own, with Flower's default metric aggregation
        results["run"] = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial.state_dict()), num_rounds=3)

    grid = InProcessGrid(client_app, run_config, num_nodes=2)
    server(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config))
    after = results["run"].evaluate_metrics_clientapp[3]["angular-error"]
    assert after < 0.8 * before
