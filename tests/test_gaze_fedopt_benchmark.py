"""The gaze FedOpt benchmark's statistics and its resumable references."""

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks import gaze_fedopt
from fedpersonal.results import RunDirectory
from simulations.reporting import benchmark_row
from simulations.server_app import parse_run_config


def final_row(name: str, per_seed: dict[int, float]) -> dict:
    return benchmark_row(name, gaze_fedopt.FINAL, per_seed, "lower")


def test_the_ratio_table_is_the_per_seed_ratio_with_its_t_interval_next_to_the_papers_ratio():
    fedavg = final_row("fedavg", {0: 10.0, 1: 12.0, 2: 8.0})
    fedavgm = final_row("fedavgm", {0: 8.0, 1: 9.0, 2: 6.8})  # ratios 0.8, 0.75, 0.85
    fedadam = final_row("fedadam", {0: 10.5, 1: 11.0, 2: 8.4})  # ratios 1.05, 0.9167, 1.05
    table = gaze_fedopt.ratio_table([fedavg, fedavgm, fedadam, final_row("centralized", {0: 3.0, 1: 3.0, 2: 3.0})])

    ratios = np.array([0.8, 0.75, 0.85])
    half = stats.t.ppf(0.975, 2) * ratios.std(ddof=1) / np.sqrt(3)  # 0.1242
    assert (
        f"| fedavgm | 0.800 | [{0.8 - half:.3f}, {0.8 + half:.3f}] | 3 | better than FedAvg | inside the interval |"
        in table
    )
    assert "| fedadam | 1.006 |" in table and "no difference shown (contains 1)" in table
    assert "centralized" not in table  # references are not optimizers


def test_a_finished_reference_is_reused_and_a_changed_config_runs_again(tmp_path, monkeypatch):
    calls = []

    def fake_run(cfg, pooled):
        calls.append((cfg.seed, pooled))
        return {"curve": [20.0, float(cfg.seed)], "users": [1.0, 2.0]}

    monkeypatch.setattr(gaze_fedopt, "reference_run", fake_run)
    path = tmp_path / "references" / "centralized-seed3.json"
    cfg = parse_run_config({"num-clients": 2, "seed": 3})
    first = gaze_fedopt.reference(path, cfg, True)
    assert gaze_fedopt.reference(path, cfg, True) == first and calls == [(3, True)]
    gaze_fedopt.reference(path, parse_run_config({"num-clients": 2, "seed": 3, "lr": 0.3}), True)
    assert len(calls) == 2
    assert first == {"curve": [20.0, 3.0], "users": [1.0, 2.0]}


def test_the_plateau_line_gives_fedavgs_change_per_tenth_of_the_run_and_its_verdict():
    falling = [20.0] + [10.0 - 0.1 * r for r in range(1, 41)]  # 4-round spans, the last four from round 24
    line = gaze_fedopt.plateau(falling)
    # 7.6 -> 7.2: -5.3%, ln(7.2 / 7.6) / ln(28 / 24) = -0.35; 6.4 -> 6.0: -6.3%, ln(6 / 6.4) / ln(40 / 36) = -0.61
    assert "6.000 deg at round 40; its change per 4 rounds: rounds 24-28 -5.3% (round^-0.35), " in line
    assert "rounds 36-40 -6.3% (round^-0.61). FedAvg has not plateaued" in line

    flat = [20.0] + [5.0 + 10.0 / r for r in range(1, 101)]  # 5.125 -> 5.111 -> 5.100
    line = gaze_fedopt.plateau(flat, spans=2)
    assert (
        "per 10 rounds: rounds 80-90 -0.3% (round^-0.02), rounds 90-100 -0.2% (round^-0.02). FedAvg has plateaued"
        in line
    )
    short = gaze_fedopt.plateau([20.0, 19.0])  # one round: one 1-round span
    assert short.endswith(
        "rounds 0-1 -5.0%. FedAvg has not plateaued (a plateau: under 1% over the last tenth of the run)."
    )


def test_the_plateau_line_gives_the_power_of_the_round_the_error_falls_as():
    power_law = [20.0] + [8.0 * r**-0.5 for r in range(1, 101)]  # error ~ round^-0.5 at every span
    line = gaze_fedopt.plateau(power_law, spans=1)
    assert line.split("rounds: ")[1].startswith("rounds 90-100 -5.1% (round^-0.50).")  # sqrt(90/100) - 1


def test_the_speedup_is_the_round_each_optimizer_first_reaches_fedavgs_error_of_each_horizon_per_seed():
    fedavg = {0: {"curve": [20.0, 8.0, 6.0, 5.0, 4.0]}, 1: {"curve": [20.0, 9.0, 7.0, 6.5, 6.0]}}
    fast = {0: {"curve": [20.0, 5.0, 3.9, 3.0, 2.0]}, 1: {"curve": [20.0, 6.0, 5.0, 4.0, 3.0]}}
    slow = {0: {"curve": [20.0, 9.0, 8.0, 7.0, 6.0]}, 1: {"curve": [20.0, 9.0, 8.0, 7.0, 5.9]}}
    table = gaze_fedopt.speedup_table({"fedavg": fedavg, "fast": fast, "slow": slow, "centralized": fast}, [2, 4])
    # round 2 targets 6.0 / 7.0: fast reaches them at rounds 1 and 1 (2x); round 4 targets 4.0 / 6.0: rounds 2, 1
    assert "| fast | 2.0x (1, 1) | 3.0x (2, 1) |" in table  # (4 / 2 + 4 / 1) / 2
    assert "| slow | 0.6x (4, 3) | - (not reached, 4) |" in table  # (2 / 4 + 2 / 3) / 2; 4.0 never reached
    assert "centralized" not in table and "2 seeds" in table


def test_the_tail_line_averages_the_last_tenth_of_the_run_per_seed():
    fedavg = {0: {"curve": [20.0] + [4.0] * 18 + [3.0, 5.0]}, 1: {"curve": [20.0] + [6.0] * 18 + [6.0, 6.0]}}
    adam = {0: {"curve": [20.0] + [2.0] * 18 + [1.0, 3.0]}, 1: {"curve": [20.0] + [3.0] * 18 + [3.0, 3.0]}}
    line = gaze_fedopt.tail_line({"fedavg": fedavg, "fedadam": adam, "centralized": adam})
    # 20 rounds: the last tenth is rounds 19-20; seed 0: 4.0 and 2.0 (ratio 0.5), seed 1: 6.0 and 3.0 (0.5)
    assert line.startswith("Mean error over the last tenth of the run (rounds 19-20): FedAvg 5.000 deg; ")
    assert "fedadam 2.500 deg, 0.500x [0.500, 0.500]." in line and "centralized" not in line


def test_references_in_two_workers_equal_those_run_one_after_another(tmp_path):
    keys = {"num-clients": 2, "samples-per-client": 30, "num-rounds": 1, "local-epochs": 1, "momentum": 0.0}
    items = [
        (tmp_path / folder / f"{name}.json", parse_run_config({**keys, "seed": 1}), pooled)
        for folder in ("serial", "parallel")
        for name, pooled in (("centralized", True), ("local-only", False))
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: float32 sums depend on the thread count
    try:
        serial = gaze_fedopt.references(items[:2], jobs=1)
    finally:
        torch.set_num_threads(threads)
    parallel = gaze_fedopt.references(items[2:], jobs=2)
    assert parallel == serial and serial[0] != serial[1]  # same seeds, same numbers; pooled differs
    assert all(path.is_file() for path, _, _ in items)
    assert serial[0]["curve"][1] < serial[0]["curve"][0]  # one epoch on the pooled data lowers the error


def test_a_reference_trains_on_the_users_of_its_own_run(monkeypatch):
    made = []

    class RecordingTask(gaze_fedopt.GazeTask):
        def __init__(self, cfg=None):
            made.append(cfg)
            super().__init__(cfg)

    monkeypatch.setattr(gaze_fedopt, "GazeTask", RecordingTask)
    cfg = parse_run_config({"num-clients": 2, "samples-per-client": 30, "num-rounds": 1, "seed": 1})
    gaze_fedopt.reference_run(cfg, pooled=False)
    assert made == [cfg]  # the run's seed, samples and heterogeneity, not the defaults


def test_the_horizon_table_is_the_per_seed_ratio_at_each_round_of_the_curves():
    def run(curve):
        return {"curve": curve, "users": [curve[-1]]}

    results = {
        "fedavg": {0: run([20.0, 10.0, 8.0]), 1: run([20.0, 12.0, 6.0])},
        "fedadam": {0: run([20.0, 5.0, 6.0]), 1: run([20.0, 9.0, 6.0])},  # ratios 0.5, 0.75; then 0.75, 1.0
        "centralized": {0: run([20.0, 3.0, 2.0]), 1: run([20.0, 3.0, 2.0])},
    }
    table = gaze_fedopt.horizon_table(results, [1, 2])
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.75], ddof=1) / np.sqrt(2)  # 1.588, the same at both rounds
    assert "| FedAvg error (deg) | 11.000 | 7.000 |" in table
    assert f"| fedadam / FedAvg | 0.625 [{0.625 - half:.3f}, {0.625 + half:.3f}] | 0.875 [{0.875 - half:.3f}," in table
    assert "centralized" not in table and "2 seeds" in table


def write_cell(out, algorithm, seed, errors):
    """A cell's run directory as the runner leaves it mid-run: config, rounds and client rows of rounds
    0..len(errors)-1 (two users, each ``error`` -/+ 1), no summary."""
    files = RunDirectory(out / f"gaze__{algorithm}__seed{seed}" / "run")
    files.path.mkdir(parents=True)
    (files.path / "config.json").write_text("{}")
    files.append_rows("rounds.jsonl", [{"round": r, "global-angular-error": e} for r, e in enumerate(errors)])
    clients = [{"round": r, "phase": "evaluate", "angular-error": e + d} for r, e in enumerate(errors) for d in (-1, 1)]
    files.append_rows("clients.jsonl", clients)


def test_a_snapshot_cuts_every_cell_at_the_last_round_all_of_them_logged(tmp_path):
    write_cell(tmp_path, "fedavg", 0, [20.0, 10.0, 8.0, 7.0])
    write_cell(tmp_path, "fedadam", 0, [20.0, 6.0, 4.0])  # one round behind
    results, reached = gaze_fedopt.logged_results(tmp_path, ["fedavg", "fedadam"], [0])
    assert reached == 2
    assert results["fedavg"][0] == {"curve": [20.0, 10.0, 8.0], "users": [7.0, 9.0]}
    assert results["fedadam"][0] == {"curve": [20.0, 6.0, 4.0], "users": [3.0, 5.0]}
    with pytest.raises(SystemExit, match="gaze__fedyogi__seed0 has not started"):
        gaze_fedopt.logged_results(tmp_path, ["fedavg", "fedyogi"], [0])


def test_one_seed_gives_a_ratio_without_an_interval_or_a_verdict():
    table = gaze_fedopt.ratio_table([final_row("fedavg", {0: 8.0}), final_row("fedadam", {0: 4.0})])
    assert "| fedadam | 0.500 | (1 seed) | 1 | one seed: no interval, no verdict |" in table
    assert "better than FedAvg" not in table
    one = {"fedavg": {0: {"curve": [20.0, 8.0]}}, "fedadam": {0: {"curve": [20.0, 4.0]}}}
    horizon = gaze_fedopt.horizon_table(one, [1])
    assert "95% CI, 1 seed):" in horizon and "| fedadam / FedAvg | 0.500 (1 seed) |" in horizon
