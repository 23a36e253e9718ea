"""DUA's priors and diagnostics: Omega after AdaBN, mode-IMM's server prior, Omega shares."""

import copy

import pytest
import torch

from fedpersonal.adaptation.adabn import adabn, batchnorm_layers
from fedpersonal.adaptation.diagnostics import (
    bn_variance,
    diagnose_user,
    dominance,
    merge_weights,
    omega_shares,
    output_norm,
    zeroed_fraction,
)
from fedpersonal.adaptation.dua import DUASettings
from fedpersonal.adaptation.imm import imm_merge
from fedpersonal.adaptation.importance import importance, mas_importance
from fedpersonal.adaptation.prior import expert_omegas, server_omegas
from fedpersonal.config import ConfigError, parse_config
from fedpersonal.models.cnn import SmallCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def forward(model, inputs):
    return model(inputs[0])


def build():
    return SmallCNN(in_channels=1, num_classes=3, width=4)


def expert(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {name: value.clone() for name, value in build().state_dict().items()}


def user_inputs(seed: int = 0, count: int = 40, shift: float = 2.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 1, 8, 8, generator=generator) * 3.0 + shift,)  # statistics unlike the initial ones


def silenced(state):
    """An expert whose body output is constantly 0: the last BN's scale and shift are zeroed, so no
    body parameter changes the output and none is important."""
    state = {name: value.clone() for name, value in state.items()}
    last = max(
        name for name in state if name.startswith("body.") and name.endswith(".weight") and state[name].dim() == 1
    )
    state[last].zero_()
    state[last.replace("weight", "bias")].zero_()
    return state


@pytest.mark.parametrize("method", ["mas", "fisher"])
def test_shares_sum_to_one_and_an_irrelevant_expert_gets_almost_none(method):
    experts = [expert(0), silenced(expert(1)), expert(2)]
    diagnostics, omegas = diagnose_user(
        experts, build, forward, user_inputs(), method, 16, torch.Generator().manual_seed(0)
    )
    assert sum(diagnostics.share) == pytest.approx(1.0)
    assert sum(diagnostics.weight) == pytest.approx(1.0 - diagnostics.zeroed)  # all-zero entries weigh 0
    assert (diagnostics.zeroed == 0) == (method == "fisher")  # Fisher starts at 1e-8; MAS has dead entries here
    assert diagnostics.share[1] < 1e-3 < 0.1 < min(diagnostics.share[0], diagnostics.share[2])
    assert diagnostics.weight[1] < min(diagnostics.weight[0], diagnostics.weight[2]) / 2
    assert omega_shares(omegas) == pytest.approx(list(diagnostics.share))
    assert all(norm > 0 for norm in diagnostics.output_norm) and all(v > 0 for v in diagnostics.bn_variance)


def test_merge_weights_and_shares_by_hand():
    omegas = [{"w": torch.tensor([3.0, 0.0, 1.0])}, {"w": torch.tensor([1.0, 0.0, 3.0])}]
    # shares: 4 / 8 each; weights per entry: (3/4, 0, 1/4) and (1/4, 0, 3/4), all-zero entry floored to 0
    assert omega_shares(omegas) == pytest.approx([0.5, 0.5])
    assert merge_weights(omegas) == pytest.approx([1 / 3, 1 / 3])
    assert zeroed_fraction(omegas) == pytest.approx(1 / 3)
    lopsided = [{"w": torch.tensor([100.0, 1.0])}, {"w": torch.tensor([0.0, 1.0])}]
    assert omega_shares(lopsided) == pytest.approx([101 / 102, 1 / 102])
    assert merge_weights(lopsided) == pytest.approx([0.75, 0.25])  # (1 + 1/2) / 2 and (0 + 1/2) / 2
    with pytest.raises(ValueError, match="positive total"):
        omega_shares([{"w": torch.zeros(2)}])


def test_dominance_names_the_expert_that_tops_every_user():
    names = ["a", "b", "c"]
    assert dominance([[0.2, 0.7, 0.1], [0.1, 0.5, 0.4]], names) == {
        "top": ["b", "b"],
        "counts": {"b": 2},
        "dominates_all": "b",
    }
    assert dominance([[0.6, 0.3, 0.1], [0.1, 0.5, 0.4]], names)["dominates_all"] is None


def test_output_norm_and_bn_variance_by_hand():
    model = build()
    inputs = user_inputs()
    model.eval()
    with torch.no_grad():
        expected = float(model(inputs[0]).norm(dim=1).mean())
    assert output_norm(model, forward, inputs, 7) == pytest.approx(expected, rel=1e-5)
    adabn(model, forward, inputs, 16)
    channels = torch.cat([layer.running_var for layer in batchnorm_layers(model)])
    assert bn_variance(model) == pytest.approx(float(channels.mean()))


def test_omega_after_adabn_changes_omega_only_when_the_statistics_differ():
    inputs = user_inputs()
    state = expert(0)
    kept = copy.deepcopy(state)
    plain = expert_omegas([state], build, forward, inputs, "mas", 16, torch.Generator())[0]
    after = expert_omegas([state], build, forward, inputs, "mas", 16, torch.Generator(), adabn_first=True)[0]
    for name, value in state.items():  # the expert itself is not changed
        assert torch.equal(value, kept[name])
    assert any(not torch.allclose(plain[name], after[name], rtol=1e-3) for name in plain)
    # Omega after AdaBN is the plain Omega of the AdaBN-adapted expert.
    adapted = build()
    adapted.load_state_dict(state)
    adabn(adapted, forward, inputs, 16)
    direct = mas_importance(adapted, forward, inputs, 16)
    for name, value in after.items():
        torch.testing.assert_close(value, direct[name])
    # An expert whose statistics already are the user's: AdaBN changes nothing, nor Omega.
    matched = {name: value.clone() for name, value in adapted.state_dict().items()}
    again = expert_omegas([matched], build, forward, inputs, "mas", 16, torch.Generator(), adabn_first=True)[0]
    same = expert_omegas([matched], build, forward, inputs, "mas", 16, torch.Generator())[0]
    for name, value in again.items():
        torch.testing.assert_close(value, same[name], rtol=1e-4, atol=1e-7)


def test_server_prior_uses_each_experts_own_domain_and_identical_experts_merge_to_that_expert():
    domains = ["dark", "bright"]
    data = {"dark": (user_inputs(1, shift=0.0)[0], torch.zeros(40)), "bright": (user_inputs(2)[0], torch.zeros(40))}
    calls = []

    def server_data(domain, count):
        calls.append((domain, count))
        return data[domain][0][:count], data[domain][1][:count]

    experts = [expert(0), expert(1)]
    omegas = server_omegas(
        experts, domains, server_data, 30, build, forward, lambda t: t[:1], "mas", 16, torch.Generator()
    )
    assert calls == [("dark", 30), ("bright", 30)]
    for state, domain, omega in zip(experts, domains, omegas):
        model = build()
        model.load_state_dict(state)
        direct = importance("mas", model, forward, (data[domain][0][:30],), 16, torch.Generator())
        for name, value in omega.items():
            torch.testing.assert_close(value, direct[name])

    same = [expert(3), expert(3)]
    generator = torch.Generator().manual_seed(0)
    omegas = server_omegas(same, domains, server_data, 30, build, forward, lambda t: t[:1], "fisher", 16, generator)
    merged = imm_merge(same, omegas)
    for name, value in same[0].items():
        torch.testing.assert_close(merged[name], value)
    with pytest.raises(ValueError, match="one domain per expert"):
        server_omegas(same, ["dark"], server_data, 30, build, forward, lambda t: t, "mas", 16, torch.Generator())


def test_omega_adabn_setting_is_validated():
    from fedpersonal.adaptation.dua import experts_for

    assert parse_config({"dua.omega-adabn": True}, [DUASettings]).section(DUASettings).omega_adabn
    with pytest.raises(ConfigError, match="'dua.omega-adabn' = 'yes' has type str; expected bool"):
        parse_config({"dua.omega-adabn": "yes"}, [DUASettings])
    # The gaze LeNet has no BatchNorm: nothing to re-estimate.
    with pytest.raises(ConfigError, match="'dua.omega-adabn' = true re-estimates BatchNorm statistics"):
        experts_for(parse_config({"strategy": "dua", "dua.omega-adabn": True}, [DUASettings]))


def test_the_client_sends_omega_after_adabn_when_asked(tmp_path):
    from fedpersonal.adaptation.experts import unpack_states
    from fedpersonal.tasks import get_task
    from simulations.inprocess import run_inprocess
    from simulations.server_app import parse_run_config

    keys = {
        "task": "classify",
        "strategy": "dua",
        "num-clients": 2,
        "num-rounds": 1,
        "samples-per-client": 45,
        "classify.corruptions": "gaussian-noise,contrast",
        "dua.server-samples": 40,
        "dua.generic-epochs": 1,
        "dua.expert-epochs": 1,
        "dua.omega-adabn": True,
    }
    _, grid = run_inprocess({**keys, "results-dir": str(tmp_path)}, record=True)
    experts = unpack_states(next(m for m in grid.sent if m.metadata.message_type == "train").content["arrays"])
    task = get_task("classify", parse_run_config(keys))
    replies = [reply for reply in grid.replies if reply.content.array_records]
    assert len(replies) == 2
    for reply in replies:
        inputs = task.inputs(task.client_data(int(reply.content["metrics"]["partition-id"])).train)
        sent = unpack_states(reply.content["arrays"])
        expected = expert_omegas(experts, task.build_model, task.forward, inputs, "mas", 32, torch.Generator(), True)
        without = expert_omegas(experts, task.build_model, task.forward, inputs, "mas", 32, torch.Generator())
        for omega, after, plain in zip(sent, expected, without):
            for name, value in omega.items():
                torch.testing.assert_close(value, after[name])
            assert any(not torch.allclose(omega[name], plain[name], rtol=1e-3) for name in omega)
