"""Simulated poisoning (section poison) and Flower's robust aggregators (section robust)."""

import pytest
import torch

from fedpersonal.config import ConfigError
from fedpersonal.poisoning import PoisonSettings, attackers, poisoned_update
from fedpersonal.tasks import get_task
from simulations.inprocess import run_inprocess
from simulations.registry import parse_run_config

GAZE = {"task": "gaze", "num-clients": 6, "samples-per-client": 60, "local-epochs": 1, "num-rounds": 3}


def test_attackers_are_a_fixed_seeded_share_of_the_clients():
    settings = PoisonSettings(share=0.3, attack="sign-flip")
    chosen = attackers(settings, seed=4, num_clients=10)
    assert len(chosen) == 3 and chosen == attackers(settings, seed=4, num_clients=10) and chosen <= set(range(10))
    assert attackers(PoisonSettings(share=0.3, attack="none"), 4, 10) == frozenset()


def test_crafted_updates_by_hand():
    received = {"w": torch.tensor([1.0, 1.0]), "count": torch.tensor(3)}
    trained = {"w": torch.tensor([2.0, 0.0]), "count": torch.tensor(4)}  # Delta = [1, -1]
    rng = torch.Generator().manual_seed(0)
    scaled = poisoned_update(received, trained, PoisonSettings(attack="scale", factor=3.0), rng)
    assert scaled["w"].tolist() == [4.0, -2.0] and int(scaled["count"]) == 4  # integer buffers stay honest
    flipped = poisoned_update(received, trained, PoisonSettings(attack="sign-flip", factor=2.0), rng)
    assert flipped["w"].tolist() == [-1.0, 3.0]
    noise = poisoned_update(received, trained, PoisonSettings(attack="random", factor=5.0), rng)
    assert float((noise["w"] - received["w"]).norm()) == pytest.approx(5.0 * 2**0.5)
    assert poisoned_update(received, trained, PoisonSettings(attack="label-flip"), rng) is trained


def test_labels_flip_by_task():
    classify = get_task("classify", parse_run_config({"task": "classify", "dataset": "digits"}))
    assert classify.flip_labels(torch.tensor([0, 3, 9])).tolist() == [9, 6, 0]
    gaze = get_task("gaze", parse_run_config({}))
    assert gaze.flip_labels(torch.tensor([[0.1, -0.2]])).tolist()[0] == pytest.approx([-0.1, 0.2])


def round_one_replies(config, tmp_path):
    _, grid = run_inprocess({**config, "num-rounds": 1, "results-dir": str(tmp_path)}, record=True)
    sent = {msg.metadata.message_id: msg for msg in grid.sent}
    found = {}
    for reply in grid.replies:
        if reply.content.array_records:
            partition = int(reply.content.metric_records["metrics"]["partition-id"])
            message = sent[reply.metadata.reply_to_message_id]
            found[partition] = (
                message.content["arrays"].to_torch_state_dict(),
                reply.content["arrays"].to_torch_state_dict(),
            )
    return found


def test_an_attacker_sends_the_flipped_scaled_update_and_the_others_stay_honest(tmp_path):
    poison = {"poison.share": 0.34, "poison.attack": "sign-flip", "poison.factor": 5.0}
    (attacker,) = attackers(PoisonSettings(0.34, "sign-flip", 5.0), 0, 3)
    small = {**GAZE, "num-clients": 3}
    honest = round_one_replies(small, tmp_path / "honest")
    poisoned = round_one_replies({**small, **poison}, tmp_path / "poisoned")
    for partition, (sent, reply) in poisoned.items():
        for key, value in reply.items():
            expected = honest[partition][1][key]
            if partition == attacker and value.is_floating_point():
                expected = sent[key] - 5.0 * (expected - sent[key])
            torch.testing.assert_close(value, expected)


def final_error(config, tmp_path):
    run_dir, _ = run_inprocess({**config, "results-dir": str(tmp_path)})
    return run_dir.read_rows("rounds.jsonl")[-1]["global-angular-error"]


def test_the_median_resists_sign_flipping_attackers_that_break_fedavg(tmp_path):
    attack = {"poison.share": 0.34, "poison.attack": "sign-flip", "poison.factor": 10.0}
    clean = final_error({**GAZE, "strategy": "fedavg"}, tmp_path / "clean")
    broken = final_error({**GAZE, **attack, "strategy": "fedavg"}, tmp_path / "fedavg")
    median = final_error({**GAZE, **attack, "strategy": "fedmedian"}, tmp_path / "median")
    assert broken > clean + 5.0  # two of six clients flipping their updates wreck the average
    assert median < broken - 5.0 and median < clean + 3.0


def test_poisoning_is_refused_where_it_has_no_model_update():
    with pytest.raises(ConfigError, match="poison.attack"):
        parse_run_config({"task": "face", "strategy": "fedfr", "poison.attack": "scale", "poison.share": 0.1})
    with pytest.raises(ConfigError, match="poison.share"):
        parse_run_config({"poison.share": 0.5})


def test_bulyan_needs_four_f_plus_three_clients():
    from simulations.registry import build_strategy

    with pytest.raises(ConfigError, match=r"at least 4 f \+ 3 = 7"):
        build_strategy(parse_run_config({"strategy": "bulyan", "num-clients": 6, "robust.num-malicious-nodes": 1}))
    build_strategy(parse_run_config({"strategy": "bulyan", "num-clients": 7, "robust.num-malicious-nodes": 1}))
