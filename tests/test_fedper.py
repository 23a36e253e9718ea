"""FedPer: the head never leaves the device, stays personal across rounds, and is resumed."""

import torch

from simulations.inprocess import run_inprocess

SMALL = {"strategy": "fedper", "num-clients": 3, "num-rounds": 2, "samples-per-client": 60}


def test_only_body_keys_reach_the_server_and_heads_stay_personal(tmp_path):
    run_dir, grid = run_inprocess({**SMALL, "results-dir": str(tmp_path)}, record=True)
    train_replies = [reply for reply in grid.replies if reply.content.array_records]
    assert train_replies
    for reply in train_replies:
        keys = list(reply.content.array_records["arrays"])
        assert keys and all(key.startswith("body.") for key in keys), keys
    heads = [ctx.state.array_records["personal"].to_torch_state_dict() for ctx in grid.contexts.values()]
    assert all(set(head) == {"head.weight", "head.bias"} for head in heads)
    assert not torch.equal(heads[0]["head.weight"], heads[1]["head.weight"])  # personal, not averaged
    assert all(key.startswith("body.") for key in torch.load(run_dir.path / "model.pt"))
    # Once round 1 is aggregated the server only ever sends the body.
    later = [msg for msg in grid.sent if msg.content.config_records["config"]["server-round"] >= 2]
    assert later
    assert all(all(k.startswith("body.") for k in msg.content.array_records["arrays"]) for msg in later)
    rounds = run_dir.read_rows("rounds.jsonl")
    assert "global-angular-error" not in rounds[-1]  # no whole model on the server: no global view
    assert rounds[-1]["personalized-angular-error"] < rounds[0]["personalized-angular-error"]
