"""The strategy-comparison matrix: every cell runs once, reruns skip or resume, the report is right."""

import csv
import json
import math
import os
import signal

import numpy as np
import pytest

from fedpersonal.config import ConfigError
from fedpersonal.results import RunDirectory
from simulations import inprocess
from simulations.loop import RoundLoop
from simulations.matrix import algorithm, parse_assignments, plan_cells, read_progress, run_matrix, scenario
from simulations.matrix.plan import Variant
from simulations.matrix.progress import Progress
from simulations.matrix.runner import sigterm_as_exit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"num-clients": 2, "num-rounds": 1, "samples-per-client": 40, "local-epochs": 1}
SCENARIO = """
num-clients = 2
samples-per-client = 40

[fedadam]
server-lr = 0.01
"""


class Counter:
    """Wraps run_inprocess and records the run config of every execution."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = inprocess.run_inprocess

        def counting(run_config, *args, **kwargs):
            self.calls.append(dict(run_config))
            return original(run_config, *args, **kwargs)

        monkeypatch.setattr(inprocess, "run_inprocess", counting)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    (root / "tiny.toml").write_text(SCENARIO)
    cells = plan_cells(
        [scenario(root / "tiny.toml")],
        [algorithm("fedavg"), algorithm("fedadam")],
        [0, 1],
        parse_assignments(["num-rounds=1", "local-epochs=1"]),
    )
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        counter = Counter(patch)
        report = run_matrix(cells, root / "out", write=lines.append)
    return {"cells": cells, "report": report, "calls": counter.calls, "lines": lines, "out": root / "out"}


def last_round_rows(run_dir):
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    clients = [json.loads(line) for line in (run_dir / "clients.jsonl").read_text().splitlines()]
    last = rounds[-1]["round"]
    return rounds[-1], [row["angular-error"] for row in clients if row["round"] == last and row["phase"] == "evaluate"]


def test_every_cell_runs_once_into_its_own_run_directory(matrix):
    assert len(matrix["calls"]) == 4
    out = matrix["out"]
    manifest = json.loads((out / "matrix.json").read_text())
    assert [cell["status"] for cell in manifest["cells"]] == ["ran"] * 4
    for cell in matrix["cells"]:
        (run_dir,) = [p.parent for p in (out / cell.name).glob("*/summary.json")]
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert (config["strategy"], config["seed"], config["num-clients"]) == (cell.algorithm, cell.seed, 2)
        assert config["fedadam.server-lr"] == 0.01  # the nested table of the scenario file
    assert [c.name for c in matrix["cells"]][:2] == ["tiny__fedavg__seed0", "tiny__fedadam__seed0"]
    assert [line.split(":")[0] for line in matrix["lines"] if "ETA" in line] == [
        "[1/4] tiny__fedavg__seed0",
        "[2/4] tiny__fedadam__seed0",
        "[3/4] tiny__fedavg__seed1",
        "[4/4] tiny__fedadam__seed1",
    ]


def test_summary_equals_a_hand_computation_from_the_run_directories(matrix):
    out = matrix["out"]
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # FedAvg-like algorithms without adaptation: the personalized view is the global one
    personalized = {row["algorithm"]: row for row in rows if row["metric"] == "personalized-angular-error"}
    table = {row["algorithm"]: row for row in rows if row["metric"] == "angular-error"}
    assert set(table) == set(personalized) == {"fedavg", "fedadam"}
    assert all(personalized[name]["mean"] == table[name]["mean"] for name in table)
    for name, row in table.items():
        finals, worst, worst10 = [], [], []
        for seed in (0, 1):
            (run_dir,) = [p.parent for p in (out / f"tiny__{name}__seed{seed}").glob("*/summary.json")]
            last, per_client = last_round_rows(run_dir)
            finals.append(last["global-angular-error"])
            worst.append(max(per_client))
            ranked = sorted(per_client, reverse=True)  # lower is better: the worst first
            worst10.append(sum(ranked[: math.ceil(0.1 * len(ranked))]) / math.ceil(0.1 * len(ranked)))
        assert (row["scenario"], row["metric"], row["better"], row["seeds"]) == (
            "tiny",
            "angular-error",
            "lower",
            "0 1",
        )
        assert float(row["mean"]) == pytest.approx(sum(finals) / 2)
        assert float(row["std"]) == pytest.approx(abs(finals[0] - finals[1]) / 2)
        assert float(row["worst_client"]) == pytest.approx(sum(worst) / 2)
        assert float(row["worst10_mean"]) == pytest.approx(sum(worst10) / 2)
        benchmark = next(r for r in matrix["report"].rows if r["algorithm"] == name and r["metric"] == "angular-error")
        assert benchmark["per_seed"] == {"0": pytest.approx(finals[0]), "1": pytest.approx(finals[1])}
    markdown = (out / "summary.md").read_text()
    assert "| tiny | fedavg | angular-error ↓ |" in markdown
    assert f"{float(table['fedavg']['mean']):.3f} ± {float(table['fedavg']['std']):.3f}" in markdown


def test_plots_are_non_empty_pngs(matrix):
    import matplotlib.image

    names = sorted(path.name for path in matrix["report"].plots)
    assert names == sorted(
        f"{kind}-{view}angular-error.png"
        for kind in ("clients", "curves", "fairness")
        for view in ("", "personalized-")
    )
    for path in matrix["report"].plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and np.std(pixels) > 0.01  # something is drawn
        assert f"]({path.name})" in (matrix["out"] / "summary.md").read_text()


def test_a_rerun_skips_finished_cells_and_reports_the_same(matrix, monkeypatch):
    counter = Counter(monkeypatch)
    lines = []
    again = run_matrix(matrix["cells"], matrix["out"], write=lines.append)
    assert counter.calls == []
    assert [outcome.status for outcome in again.outcomes] == ["skipped"] * 4
    assert again.rows == matrix["report"].rows
    assert lines[-1].startswith("[4/4] tiny__fedadam__seed1: skipped")


def test_report_only_reads_the_finished_cells_and_trains_none(matrix, monkeypatch):
    from simulations.matrix.benchmark import matrix_parser, run_or_report

    args = matrix_parser("a benchmark", matrix["out"]).parse_args(["--report-only"])
    assert (args.seeds, args.out, args.jobs) == ([0, 1, 2], matrix["out"], 1)
    unfinished = plan_cells(
        [scenario(matrix["out"].parent / "tiny.toml")],
        [algorithm("fedavg")],
        [2],
        parse_assignments(["num-rounds=1", "local-epochs=1"]),
    )
    counter = Counter(monkeypatch)
    report = run_or_report([*matrix["cells"], *unfinished], args)
    assert counter.calls == []
    assert [o.cell.name for o in report.outcomes] == [cell.name for cell in matrix["cells"]]
    assert report.rows == matrix["report"].rows
    assert not (matrix["out"] / unfinished[0].name).exists()


def test_a_cell_finished_with_another_config_stops_the_matrix_before_it_runs(matrix, monkeypatch):
    counter = Counter(monkeypatch)
    changed = [
        type(cell)(cell.scenario, cell.algorithm, cell.seed, {**cell.keys, "lr": 0.5}) for cell in matrix["cells"]
    ]
    with pytest.raises(ConfigError, match=r"tiny__fedavg__seed0 finished with different values for \['lr'\]"):
        run_matrix(changed, matrix["out"], write=lambda line: None)
    assert counter.calls == []


def test_a_crashed_cell_is_recorded_then_resumed_from_its_checkpoint(tmp_path, monkeypatch):
    cells = plan_cells([], [algorithm("fedavg")], [0, 1], {**TINY, "num-rounds": 2})
    original_train, crashes = RoundLoop.train, []

    def crash_once_in_round_2(self, server_round, arrays):
        if server_round == 2 and not crashes:
            crashes.append(server_round)
            raise RuntimeError("simulated crash in round 2")
        return original_train(self, server_round, arrays)

    monkeypatch.setattr(RoundLoop, "train", crash_once_in_round_2)
    first = run_matrix(cells, tmp_path, write=lambda line: None)
    assert [o.status for o in first.outcomes] == ["failed", "ran"]  # the matrix went on
    assert "simulated crash in round 2" in first.outcomes[0].error
    assert "simulated crash in round 2" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "matrix.json").read_text())["cells"][0]["status"] == "failed"
    assert {row["algorithm"] for row in first.rows} == {"fedavg"} and first.rows[0]["seeds"] == [1]
    with pytest.raises(RuntimeError, match=r"default__fedavg__seed0: RuntimeError: simulated crash in round 2"):
        first.runs()  # a benchmark reading run directories must not silently miss a cell

    counter = Counter(monkeypatch)
    second = run_matrix(cells, tmp_path, write=lambda line: None)
    assert [o.status for o in second.outcomes] == ["resumed", "skipped"]
    (call,) = counter.calls
    assert call["resume"] == str(first.outcomes[0].run_dir)
    rounds = [
        json.loads(line)["round"] for line in (first.outcomes[0].run_dir / "rounds.jsonl").read_text().splitlines()
    ]
    assert rounds == [0, 1, 2]
    assert second.rows[0]["seeds"] == [0, 1]
    runs = second.runs()
    assert sorted(runs) == [("default", "fedavg", 0), ("default", "fedavg", 1)]
    assert runs[("default", "fedavg", 0)].path == first.outcomes[0].run_dir
    assert runs[("default", "fedavg", 1)].read_rows("rounds.jsonl")[-1]["round"] == 2


def test_the_flower_backend_reserves_the_requested_cpus_per_client(tmp_path, monkeypatch):
    from simulations.matrix import backends

    started = []

    class FakeLink:
        def __init__(self, home, num_supernodes, num_cpus_per_client=2, num_gpus_per_client=0.0):
            started.append((home, num_supernodes, num_cpus_per_client, num_gpus_per_client))

        def start(self):
            return self

    monkeypatch.setattr(backends, "PrivateSuperLink", FakeLink)
    assert backends.make_backend("flower", tmp_path)._link(3) is not None
    backends.make_backend("flower", tmp_path, client_cpus=2, client_gpus=0.25)._link(5)
    home = tmp_path / "flower-home"
    assert started == [(home / "clients-3", 3, 1, 0.0), (home / "clients-5", 5, 2, 0.25)]


def test_a_private_superlink_starts_its_own_ray_unless_given_an_address(tmp_path, monkeypatch):
    from ray._private.services import canonicalize_bootstrap_address

    from simulations.local_superlink import PrivateSuperLink

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = PrivateSuperLink(tmp_path, 2).env
    assert env["RAY_ADDRESS"] == "local"
    monkeypatch.setenv("RAY_ADDRESS", env["RAY_ADDRESS"])
    assert canonicalize_bootstrap_address(None) is None  # Ray: None = start a new local instance
    given = PrivateSuperLink(tmp_path, 2, extra_env={"RAY_ADDRESS": "10.0.0.1:6379"})
    assert given.env["RAY_ADDRESS"] == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")  # exported by the user: attach there
    assert PrivateSuperLink(tmp_path, 2).env["RAY_ADDRESS"] == "10.0.0.2:6379"


def test_client_gpus_reach_flowers_federation_config(tmp_path, monkeypatch):
    from simulations.local_superlink import PrivateSuperLink
    from simulations.matrix import __main__ as cli
    from simulations.matrix import runner

    assert PrivateSuperLink(tmp_path, 15).federation_config() == "num-supernodes=15 client-resources-num-cpus=2"
    link = PrivateSuperLink(tmp_path, 15, num_cpus_per_client=1, num_gpus_per_client=0.25)
    assert link.federation_config() == (
        "num-supernodes=15 client-resources-num-cpus=1 client-resources-num-gpus=0.25"
    )  # 1 / 0.25 = 4 clients at once per GPU
    passed = {}
    monkeypatch.setattr(cli, "run_matrix", lambda *args, **kwargs: passed.update(kwargs) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["--out", str(tmp_path), "--backend", "flower", "--client-gpus", "0.25"])
    assert passed["client_gpus"] == 0.25
    for bad in ("-1", "1.5", "half"):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(["--out", str(tmp_path), "--client-gpus", bad])
    made = []
    monkeypatch.setattr(runner, "make_backend", lambda *args: made.append(args) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runner.run_matrix([], tmp_path / "out", "flower", client_gpus=0.5)
    assert made[0][-1] == 0.5


def test_cells_combine_scenario_algorithm_and_overrides_in_order(tmp_path):
    (tmp_path / "tuned.toml").write_text('strategy = "fedadam"\nlr = 0.1\n[fedadam]\nserver-lr = 0.003\n')
    base = Variant("base", {"lr": 0.2, "num-rounds": 4})
    cells = plan_cells(
        [base], [algorithm("fedavg"), algorithm(str(tmp_path / "tuned.toml"))], [3, 4], {"num-rounds": 2}
    )
    assert [c.name for c in cells] == [
        "base__fedavg__seed3",
        "base__tuned__seed3",
        "base__fedavg__seed4",
        "base__tuned__seed4",
    ]
    assert cells[0].keys == {"lr": 0.2, "num-rounds": 2, "strategy": "fedavg", "seed": 3}
    assert cells[1].keys == {"lr": 0.1, "num-rounds": 2, "strategy": "fedadam", "fedadam.server-lr": 0.003, "seed": 3}
    # Without --strategies, a scenario's own strategy is the algorithm.
    assert [c.algorithm for c in plan_cells([Variant("s", {"strategy": "fedyogi"}), Variant("t")], [], [0])] == [
        "fedyogi",
        "fedavg",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: plan_cells([], [], [0], {"seed": 1}), r"--set sets \['seed'\]"),
        (lambda: plan_cells([], [algorithm("fedavg")], [0], {"strategy": "fedadam"}), r"--set sets \['strategy'\]"),
        (lambda: plan_cells([Variant("a", {"results-dir": "x"})], [], [0]), r"scenario 'a' sets \['results-dir'\]"),
        (
            lambda: plan_cells([Variant("a"), Variant("a")], [], [0]),
            r"scenario label\(s\) \['a'\] appear more than once",
        ),
        (lambda: plan_cells([], [], [0, 0]), r"seeds \[0, 0\]: expected one or more distinct"),
        (lambda: algorithm("fedbogus"), r"'strategy' = 'fedbogus' is unknown"),
        (lambda: scenario("nowhere/missing.toml"), r"scenario file 'nowhere/missing.toml' does not exist"),
        (lambda: parse_assignments(["num-rounds"]), r"--set 'num-rounds': expected key=value"),
        (lambda: parse_assignments(["dataset=mpiigaze"]), r"quote strings"),
    ],
)
def test_bad_input_is_a_config_error_naming_it(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_parse_assignments_reads_toml_values_like_flwr_run():
    assert parse_assignments(["num-rounds=5", "dataset='mpiigaze'", "fedadam.server-lr=0.01", "faults.dropout=0"]) == {
        "num-rounds": 5,
        "dataset": "mpiigaze",
        "fedadam.server-lr": 0.01,
        "faults.dropout": 0,
    }


def test_eta_is_the_mean_executed_cell_time_times_the_cells_left():
    now, lines = [0.0], []
    progress = Progress(5, lines.append, clock=lambda: now[0])
    progress.finished("a", "skipped", None)
    assert lines[-1].endswith("ETA ?")
    now[0] = 10.0
    progress.finished("b", "ran", 10.0)
    now[0] = 40.0
    progress.finished("c", "ran", 30.0)
    assert lines[-1] == "[3/5] c: ran in 30 s | elapsed 40 s | ETA 40 s"  # mean 20 s x 2 cells left


def test_two_jobs_give_the_same_cells_as_one_and_a_rerun_skips_them(matrix, tmp_path):
    lines = []
    report = run_matrix(matrix["cells"], tmp_path / "parallel", write=lines.append, jobs=2)
    assert [o.status for o in report.outcomes] == ["ran"] * 4
    assert [o.cell.name for o in report.outcomes] == [cell.name for cell in matrix["cells"]]  # in plan order
    for cell in matrix["cells"]:
        (one,) = (matrix["out"] / cell.name).glob("*/rounds.jsonl")
        (two,) = (tmp_path / "parallel" / cell.name).glob("*/rounds.jsonl")
        rows = [[{k: v for k, v in json.loads(line).items() if k != "time-s"} for line in f.read_text().splitlines()]
                for f in (one, two)]  # fmt: skip
        assert rows[0] == rows[1]
    assert sum("ETA" in line for line in lines) == 4
    again = run_matrix(matrix["cells"], tmp_path / "parallel", write=lambda _: None, jobs=2)
    assert [o.status for o in again.outcomes] == ["skipped"] * 4


def test_a_sigterm_inside_sigterm_as_exit_exits_normally_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(SystemExit) as exit_info:
        with sigterm_as_exit():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                cleaned.append(True)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_progress_of_an_unfinished_cell_is_read_from_its_round_and_client_logs(tmp_path):
    files = RunDirectory(tmp_path)
    rounds, clients = [], []
    for r, error in enumerate([9.0, 5.0]):
        rounds.append({"round": r, "global-angular-error": error, "time-s": 1.0})
        clients += [{"round": r, "phase": "evaluate", "angular-error": error + offset} for offset in (-2.0, 2.0)]
    clients.append({"round": 1, "phase": "train", "angular-error": 0.0})  # not an evaluation
    files.append_rows("rounds.jsonl", rounds)
    files.append_rows("clients.jsonl", clients)
    progress = read_progress(tmp_path, "angular-error")
    assert progress.curve == {0: 9.0, 1: 5.0}
    assert progress.clients == {0: (7.0, 11.0), 1: (3.0, 7.0)}
    assert not (tmp_path / "summary.json").exists()  # read_cell would need it
