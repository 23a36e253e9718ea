"""benchmarks/vectorized.py names and describes its result by the device ``--device`` resolved to."""

import pytest
import torch

from benchmarks import vectorized
from fedpersonal import device


def fake_run(cfg, wall_s: float, shift: float) -> dict:
    """What ``timed_run`` returns, for a run of ``wall_s`` seconds whose weights are off by ``shift``."""
    return {
        "wall_s": wall_s,
        "round_s": [3.0, 1.0, 1.0],
        "final_error": 6.9 + shift,
        "weights": {"w": torch.zeros(3) + shift},
        "rounds": [{"round": 1, "global-angular-error": 7.0 + shift, "time-s": wall_s}],
    }


@pytest.fixture
def written(monkeypatch):
    """Runs the benchmark's ``main`` on a CPU-only process with faked runs; collects what it would write."""
    walls = iter([(8.0, 0.0), (2.0, 0.25)])  # sequential, then vectorized
    monkeypatch.setattr(vectorized, "in_fresh_process", lambda run, cfg: fake_run(cfg, *next(walls)))
    found: dict = {}
    monkeypatch.setattr(vectorized, "write_json_result", lambda name, payload, body: found.update(name=name, body=body))
    monkeypatch.setattr(vectorized, "append_history", lambda lines: found.update(lines=lines))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_resolve", device._resolve.__wrapped__)  # resolved afresh, without the GPU
    return found


def test_auto_on_a_machine_without_a_gpu_writes_the_cpu_result_and_says_cpu(written):
    vectorized.main(["--rounds", "3", "--device", "auto"])
    assert written["name"] == "vectorized"
    assert "on `cpu`" in written["body"]
    (line,) = written["lines"]
    assert line["device"] == "cpu"
    assert line["value"] == pytest.approx(4.0)  # 8 s sequential / 2 s vectorized
    assert "final weights 2.50e-01" in written["body"]
