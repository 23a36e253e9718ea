"""Benchmark reporting: paired per-seed intervals and the performance record."""

import pytest


def test_paired_difference_is_a_student_t_interval_by_hand():
    from simulations.reporting import paired_difference, paired_table

    ours, base = {0: 0.80, 1: 0.70, 2: 0.90}, {0: 0.70, 1: 0.68, 2: 0.75, 3: 0.5}
    result = paired_difference(ours, base)
    d = [0.10, 0.02, 0.15]  # seed 3 has no pair
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    half = 4.302652729911275 * sd / 3**0.5  # t(0.975, 2 degrees of freedom)
    assert result["seeds"] == [0, 1, 2]
    assert result["mean"] == pytest.approx(mean)
    assert (result["low"], result["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert result["contains_zero"] == (mean - half <= 0)
    assert paired_difference({0: 1.0}, {0: 0.5})["contains_zero"] is None  # one seed: no interval
    clear = paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 0.0, 1: 0.1, 2: 0.2})
    assert clear["low"] == pytest.approx(1.0) and not clear["contains_zero"]  # identical differences: no spread
    rows = [
        {"scenario": "s", "algorithm": "fedavg", "metric": "accuracy", "per_seed": {"0": 0.5, "1": 0.6}},
        {"scenario": "s", "algorithm": "fedper", "metric": "accuracy", "per_seed": {"0": 0.7, "1": 0.6}},
    ]
    table = paired_table(rows, "fedavg")
    assert "| s | fedper | accuracy | +0.100 |" in table and "interval contains 0" in table


def test_the_performance_record_has_one_line_per_measurement_and_a_history_table(tmp_path):
    from benchmarks.perf import append_history, history_table, read_history, record_lines

    result = {
        "default_scenario": {"runners": [{"runner": "plain", "ratio_to_plain": 1.0, "wall_s": 100.0}]},
        "overhead": {"startup_s": 17.0, "per_call_ms": 44.0},
        "memory": [{"clients": 100, "peak_pss_gib": 2.5}],
    }
    machine = {"cores": 2}
    target = tmp_path / "history.jsonl"
    append_history(record_lines(result, "aaaaaaaa11", "2026-01-01T00:00", machine), target)
    faster = {**result, "overhead": {"startup_s": 12.0, "per_call_ms": 40.0}}
    append_history(record_lines(faster, "bbbbbbbb22", "2026-02-01T00:00", machine), target)
    lines = read_history(target)
    assert len(lines) == 2 * 5 and all(line["machine"] == machine for line in lines)
    table = history_table(lines)
    assert "| flwr run start-up | 17 s | 12 s |" in table
    assert "aaaaaaaa (2026-01-01)" in table and "bbbbbbbb (2026-02-01)" in table


def test_gpu_measurements_are_recorded_apart_from_the_cpu_ones(tmp_path, monkeypatch, capsys):
    import fedpersonal.device as device_module
    from benchmarks import perf

    result = {
        "default_scenario": {"runners": [{"runner": "plain", "ratio_to_plain": 1.0, "wall_s": 100.0}]},
        "overhead": {"startup_s": 17.0, "per_call_ms": 44.0},
        "memory": [],
    }
    cpu = perf.record_lines(result, "aaaaaaaa11", "2026-01-01T00:00", {"cores": 2})
    gpu = perf.record_lines({**result, "device": "cuda: NVIDIA H200"}, "aaaaaaaa11", "2026-01-01T00:00", {"cores": 2})
    assert {line["device"] for line in cpu} == {"cpu"} and {line["device"] for line in gpu} == {"cuda: NVIDIA H200"}
    table = perf.history_table(cpu + gpu)
    assert "| wall: plain | 100 s |" in table and "| wall: plain [cuda: NVIDIA H200] | 100 s |" in table
    # Any benchmark's line gets its device's row, whatever its measurement is called (vectorized's are not
    # renamed): the same measurement on the CPU and on a GPU are two rows, never one.
    speedup = {"commit": "aaaaaaaa11", "created": "2026-01-01T00:00", "measurement": "speed-up", "unit": "x"}
    table = perf.history_table(
        [{**speedup, "device": "cpu", "value": 0.5}, {**speedup, "device": "cuda: H200", "value": 2.5}]
    )
    assert "| speed-up | 0.5 x |" in table and "| speed-up [cuda: H200] | 2.5 x |" in table
    # The command line: a GPU this machine lacks stops before measuring; the device reaches every runner.
    monkeypatch.setattr(perf.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_resolve", device_module._resolve.__wrapped__)  # resolved afresh
    monkeypatch.setattr("sys.argv", ["perf", "--device", "cuda", "--client-gpus", "0.25"])
    with pytest.raises(SystemExit):
        perf.main()
    assert "run config key 'device' = 'cuda' asks for a GPU" in capsys.readouterr().err
    measured = []
    monkeypatch.setattr(perf, "measure", lambda *args: measured.append(args) or 1 / 0)
    monkeypatch.setattr("sys.argv", ["perf", "--device", "cpu", "--rounds", "2", "--memory-clients", "10"])
    with pytest.raises(ZeroDivisionError):
        perf.main()
    assert measured[0][0] == 2 and measured[0][1] == [10] and measured[0][-2:] == ("cpu", 0.0)


def test_a_result_payload_says_what_ran_where_and_when_and_is_written_with_its_body(tmp_path, monkeypatch):
    import json
    import sys

    from simulations.reporting import result_payload, write_json_result

    monkeypatch.setattr(sys, "argv", ["benchmarks/example.py", "--rounds", "3"])
    payload = result_payload("example", rows=[1, 2])
    assert list(payload)[:4] == ["name", "command", "machine", "created"]
    assert payload["name"] == "example" and payload["rows"] == [1, 2]
    assert "--rounds 3" in payload["command"] and payload["machine"]["cores"] >= 1
    write_json_result("example", payload, "BODY", tmp_path)
    assert json.loads((tmp_path / "example.json").read_text()) == payload
    markdown = (tmp_path / "example.md").read_text()
    assert markdown.startswith("# example\n\n`") and "BODY" in markdown and payload["created"] in markdown


def test_a_record_line_takes_its_date_and_machine_from_the_result_payload():
    from benchmarks.perf import git_commit, record_base

    payload = {"created": "2026-03-01T00:00+0000", "machine": {"cores": 2}}
    base = record_base(payload, "cuda: NVIDIA H200")
    assert base == {"commit": git_commit(), "created": payload["created"], "machine": {"cores": 2},
                    "device": "cuda: NVIDIA H200"}  # fmt: skip
    assert base["commit"] != "unknown"
