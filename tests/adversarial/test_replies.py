"""One broken or malicious client cannot poison or crash a round: its reply is rejected, counted,
logged, and the round aggregates the honest replies."""

import math
import re

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MessageType

from simulations.inprocess import InProcessGrid, run_inprocess

SMALL = {"num-clients": 3, "num-rounds": 1, "samples-per-client": 30, "local-epochs": 1}
EVIL = 100  # the node id of partition 0 in the in-process grid


def _arrays(content, change):
    state = content["arrays"].to_torch_state_dict()
    change(state)
    content["arrays"] = ArrayRecord(state)


def _replace_weight(make):
    return lambda content: _arrays(content, lambda s: s.__setitem__(_first_weight(s), make(s[_first_weight(s)])))


def _first_weight(state):
    return next(key for key, value in state.items() if value.is_floating_point() and value.ndim > 1)


ATTACKS = {
    "nan array": (lambda c: _arrays(c, lambda s: s[_first_weight(s)].fill_(math.nan)), "NaN or infinite"),
    "inf array": (lambda c: _arrays(c, lambda s: s[_first_weight(s)].fill_(math.inf)), "NaN or infinite"),
    "nan num-examples": (lambda c: c["metrics"].__setitem__("num-examples", math.nan), "not finite"),
    "huge num-examples": (lambda c: c["metrics"].__setitem__("num-examples", 1e30), "outside \\(0, 30\\]"),
    "negative num-examples": (lambda c: c["metrics"].__setitem__("num-examples", -5), "outside \\(0, 30\\]"),
    "zero num-examples": (lambda c: c["metrics"].__setitem__("num-examples", 0), "outside \\(0, 30\\]"),
    "extra array key": (lambda c: _arrays(c, lambda s: s.__setitem__("evil", torch.zeros(3))), "did not send"),
    "missing array key": (lambda c: _arrays(c, lambda s: s.pop(_first_weight(s))), "differ from the round's"),
    "extra metric key": (lambda c: c["metrics"].__setitem__("evil", 1.0), "differ from the round's"),
    "wrong shape": (_replace_weight(lambda w: torch.zeros(2, 2)), "shape"),
    "broadcast scalar": (_replace_weight(lambda w: torch.ones(1)), "shape"),
    "wrong dtype": (_replace_weight(lambda w: w.double()), "float64"),
    "extra array record": (lambda c: c.__setitem__("stolen", ArrayRecord({"x": torch.zeros(1)})), "exactly"),
}  # fmt: skip


def tamper(attack, phase=MessageType.TRAIN):
    """An on_grid hook: node EVIL's replies of ``phase`` are changed by ``attack`` after it computed them."""

    def hook(grid: InProcessGrid) -> None:
        honest = grid.client_app

        def client_app(message, context):
            reply = honest(message, context)
            if context.node_id == EVIL and message.metadata.message_type == phase and not reply.has_error():
                attack(reply.content)
            return reply

        grid.client_app = client_app

    return hook


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_bad_train_reply_is_rejected_and_the_rest_aggregated(name, tmp_path):
    attack, reason = ATTACKS[name]
    run_dir, grid = run_inprocess({**SMALL, "results-dir": str(tmp_path)}, on_grid=tamper(attack), record=True)
    (row,) = [row for row in run_dir.read_rows("rounds.jsonl") if row["round"] == 1]
    assert row["rejected"] == 1 and not row["skipped"] and math.isfinite(row["global-angular-error"])
    (bad,) = [row for row in run_dir.read_rows("clients.jsonl") if "rejected" in row]
    assert bad["node-id"] == EVIL and bad["phase"] == "train"
    assert re.search(reason, bad["rejected"]), bad["rejected"]
    honest = [
        r for r in grid.replies if r.metadata.message_type == MessageType.TRAIN and r.metadata.src_node_id != EVIL
    ]
    weights = np.array([r.content["metrics"]["num-examples"] for r in honest], dtype=float)
    states = [r.content["arrays"].to_torch_state_dict() for r in honest]
    saved = torch.load(run_dir.path / "model.pt", weights_only=True)
    for key, value in saved.items():
        if value.is_floating_point():
            expected = sum(w * s[key] for w, s in zip(weights / weights.sum(), states))
            torch.testing.assert_close(value, expected.to(value.dtype), rtol=1e-5, atol=1e-6)


def test_every_strategy_is_guarded_fedadam_with_a_nan_reply(tmp_path):
    attack, _ = ATTACKS["nan array"]
    run_dir, _ = run_inprocess({**SMALL, "strategy": "fedadam", "results-dir": str(tmp_path)}, on_grid=tamper(attack))
    (row,) = [row for row in run_dir.read_rows("rounds.jsonl") if row["round"] == 1]
    assert row["rejected"] == 1 and math.isfinite(row["global-angular-error"])
    saved = torch.load(run_dir.path / "model.pt", weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in saved.values() if v.is_floating_point())


def test_a_wrong_shaped_dua_omega_is_rejected(tmp_path):
    def shrink_omega(content):
        state = content["arrays"].to_torch_state_dict()
        key = next(iter(state))
        state[key] = torch.ones(1)
        content["arrays"] = ArrayRecord(state)

    config = {
        **SMALL, "task": "classify", "strategy": "dua", "classify.corruptions": "blur,contrast",
        "dua.server-samples": 20, "dua.generic-epochs": 1, "dua.expert-epochs": 1, "results-dir": str(tmp_path),
    }  # fmt: skip
    run_dir, _ = run_inprocess(config, on_grid=tamper(shrink_omega))
    (row,) = [row for row in run_dir.read_rows("rounds.jsonl") if row["round"] == 1]
    assert row["rejected"] == 1 and not row["skipped"]
    (bad,) = [row for row in run_dir.read_rows("clients.jsonl") if "rejected" in row]
    assert "shape (1,)" in bad["rejected"]


def test_a_nan_evaluation_metric_is_rejected(tmp_path):
    attack = lambda content: content["metrics"].__setitem__("angular-error", math.nan)  # noqa: E731
    run_dir, _ = run_inprocess({**SMALL, "results-dir": str(tmp_path)}, on_grid=tamper(attack, MessageType.EVALUATE))
    rounds = run_dir.read_rows("rounds.jsonl")
    assert [row["evaluate-rejected"] for row in rounds] == [1, 1]
    assert all(math.isfinite(row["global-angular-error"]) for row in rounds)
    assert all(math.isfinite(row["worst-client-angular-error"]) for row in rounds)
