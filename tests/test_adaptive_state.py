"""The adaptive server optimizer's state report: sqrt(v) against tau and the effective learning rate."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from benchmarks import adaptive_state
from fedpersonal.checkpoint import save_checkpoint
from simulations.inprocess import InProcessGrid
from simulations.registry import build_strategy, parse_run_config
from tests.test_fedopt import train_reply


def one_round(strategy_name: str, **section) -> dict:
    """The strategy's state after one round whose averaged update is Delta = [0.1, 0.1, -0.6]."""
    keys = {f"{strategy_name}.{key}": value for key, value in section.items()}
    strategy = build_strategy(parse_run_config({"strategy": strategy_name, "num-clients": 2, **keys}))
    x = {"w": torch.tensor([1.0, -2.0, 0.5])}
    strategy.configure_train(
        1, ArrayRecord(x), ConfigRecord(), InProcessGrid(client_app=None, run_config={}, num_nodes=2)
    )
    offsets = [([0.4, -0.2, 0.0], 1), ([0.0, 0.2, -0.8], 3)]  # example-weighted mean: [0.1, 0.1, -0.6]
    strategy.aggregate_train(1, [train_reply({"w": x["w"] + torch.tensor(o)}, n) for o, n in offsets])
    return strategy.state_dict()


def test_the_rows_are_sqrt_v_the_share_below_tau_and_the_effective_lr_by_hand():
    state = one_round("fedadam", **{"server-lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.02})
    rows = {row["layer"]: row for row in adaptive_state.layer_rows(state)}
    # m = 0.1 Delta = [0.01, 0.01, -0.06]; v = 0.01 Delta^2, sqrt(v) = [0.01, 0.01, 0.06];
    # eta / (sqrt(v) + tau) = 0.1 / [0.03, 0.03, 0.08] = [3.333, 3.333, 1.25]; |step| = [0.0333, 0.0333, 0.075]
    for name in ("w", "all"):
        row = rows[name]
        assert row["coordinates"] == 3
        assert row["sqrt_v_median"] == pytest.approx(0.01, rel=1e-5)
        assert row["below_tau"] == pytest.approx(2 / 3)
        assert row["effective_lr_median"] == pytest.approx(0.1 / 0.03, rel=1e-5)
        assert row["effective_lr_cap"] == pytest.approx(5.0)
        assert row["step_median"] == pytest.approx(0.01 * 0.1 / 0.03, rel=1e-5)


def test_adams_bias_correction_scales_the_effective_lr():
    plain = adaptive_state.layer_rows(one_round("fedadam", **{"server-lr": 0.1, "beta2": 0.99, "tau": 0.02}))[0]
    corrected = adaptive_state.layer_rows(
        one_round("fedadam", **{"server-lr": 0.1, "beta2": 0.99, "tau": 0.02, "bias-correction": "adam"})
    )[0]
    factor = (1 - 0.99) ** 0.5 / (1 - 0.9)  # eta_1 = eta sqrt(1 - beta2) / (1 - beta1) = eta
    assert corrected["effective_lr_cap"] == pytest.approx(plain["effective_lr_cap"] * factor)


def test_a_checkpoint_report_reads_the_run_folder_and_the_global_weights(tmp_path):
    state = one_round("fedyogi", **{"server-lr": 0.1, "tau": 0.02})
    save_checkpoint(tmp_path, 7, {"w": torch.tensor([1.0, -3.0, 0.5])}, state)
    report = adaptive_state.checkpoint_report(tmp_path)
    assert report["round"] == 7 and report["settings"]["rule"] == "yogi"
    assert report["rows"][0]["weight_median"] == pytest.approx(1.0)
    assert "| w | 3 |" in adaptive_state.markdown(report)


def test_an_optimizer_without_tau_or_a_folder_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no tau"):
        adaptive_state.layer_rows(one_round("fedavgm"))
    with pytest.raises(SystemExit, match="no checkpoint.pt"):
        adaptive_state.checkpoint_report(tmp_path)
