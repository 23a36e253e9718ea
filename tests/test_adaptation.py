"""Local adaptation and DUA's building blocks against hand computations."""

import numpy as np
import pytest
import torch
from torch import nn

from fedpersonal.adaptation import AdaptSettings, adapt_model, check_applies
from fedpersonal.adaptation.adabn import adabn, batchnorm_layers
from fedpersonal.adaptation.imm import FLOOR, imm_merge, max_normalized
from fedpersonal.adaptation.importance import FISHER_START, fisher_importance, mas_importance
from fedpersonal.adaptation.pseudo_label import confident_labels, pseudo_label
from fedpersonal.adaptation.tent import mean_entropy, tent
from fedpersonal.config import ConfigError, parse_config
from fedpersonal.models.cnn import SmallCNN
from fedpersonal.tasks.gaze import GazeSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_forward(model, inputs):
    return model(inputs[0])


class Tiny(nn.Module):
    """F(x) = head(body(x)): linear, so gradients are easy to write down."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.body = nn.Linear(2, 2)
        self.head = nn.Linear(2, outputs)

    def forward(self, x):
        return self.head(self.body(x))


def tiny(outputs: int) -> Tiny:
    model = Tiny(outputs)
    with torch.no_grad():
        model.body.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        model.body.bias.copy_(torch.tensor([0.5, -0.5]))
        model.head.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]][:outputs]))
        model.head.bias.copy_(torch.tensor([0.1, 0.0, 0.2][:outputs]))
    return model


X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
W1, B1 = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([0.5, -0.5])


def test_mas_omega_matches_hand_computation():
    # F(x) = w2 . (W1 x + b1) + b2; d F^2 / d W1 = 2 F w2 x^T, d F^2 / d b1 = 2 F w2.
    w2, b2 = np.array([1.0, -2.0]), 0.1
    expected_w, expected_b = np.zeros((2, 2)), np.zeros(2)
    batches = [X[:2], X[2:]]
    for batch in batches:
        grad_w, grad_b = np.zeros((2, 2)), np.zeros(2)
        for x in batch:
            f = w2 @ (W1 @ x + B1) + b2
            grad_w += 2 * f * np.outer(w2, x) / len(batch)
            grad_b += 2 * f * w2 / len(batch)
        expected_w += np.abs(grad_w) / len(batches)
        expected_b += np.abs(grad_b) / len(batches)

    omega = mas_importance(tiny(1), plain_forward, (torch.tensor(X, dtype=torch.float32),), batch_size=2)
    assert set(omega) == {"body.weight", "body.bias"}  # the head gets no Omega
    np.testing.assert_allclose(omega["body.weight"].numpy(), expected_w, rtol=1e-5)
    np.testing.assert_allclose(omega["body.bias"].numpy(), expected_b, rtol=1e-5)


def test_fisher_omega_matches_hand_computation_with_the_same_sampled_labels():
    model = tiny(3)
    w2, b2 = model.head.weight.detach().numpy().astype(float), model.head.bias.detach().numpy().astype(float)
    replay = torch.Generator().manual_seed(5)
    expected = np.zeros((2, 2))
    for batch in (X[:2], X[2:]):
        logits = (W1 @ batch.T + B1[:, None]).T @ w2.T + b2
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        labels = torch.multinomial(torch.tensor(probs, dtype=torch.float32), 1, generator=replay).flatten().numpy()
        grad = np.zeros((2, 2))
        for x, p, y in zip(batch, probs, labels):  # d NLL / d W1 = (W2^T (p - e_y)) x^T
            grad += np.outer(w2.T @ (p - np.eye(3)[y]), x) / len(batch)
        expected += grad**2 / 2

    omega = fisher_importance(
        model, plain_forward, (torch.tensor(X, dtype=torch.float32),), 2, torch.Generator().manual_seed(5)
    )
    assert set(omega) == {"body.weight", "body.bias"}
    np.testing.assert_allclose(omega["body.weight"].numpy(), expected + FISHER_START, rtol=1e-4, atol=1e-7)
    dead = fisher_importance(model, plain_forward, (torch.zeros(4, 2),), 2, torch.Generator().manual_seed(5))
    assert float(dead["body.weight"].min()) == pytest.approx(FISHER_START)  # no gradient: exactly the start value


def test_imm_merge_formula_floor_head_and_buffers():
    experts = [
        {"body.w": torch.tensor([1.0, 5.0, 2.0]), "head.w": torch.tensor([2.0]), "bn.count": torch.tensor(3),
         "bn.running_mean": torch.tensor([0.0]), "bn.running_var": torch.tensor([1.0])},
        {"body.w": torch.tensor([5.0, 7.0, 4.0]), "head.w": torch.tensor([4.0]), "bn.count": torch.tensor(9),
         "bn.running_mean": torch.tensor([2.0]), "bn.running_var": torch.tensor([3.0])},
    ]  # fmt: skip
    omegas = [{"body.w": torch.tensor([3.0, 0.0, 1e-12])}, {"body.w": torch.tensor([1.0, 0.0, 1e-12])}]
    merged = imm_merge(experts, omegas)
    # (3*1 + 1*5) / 4 = 2; all-zero Omega: 0 / 1e-10 = 0; tiny non-zero Omegas are divided as they are
    # (the floor applies only where the sum is exactly zero): (1e-12*2 + 1e-12*4) / 2e-12 = 3.
    torch.testing.assert_close(merged["body.w"], torch.tensor([2.0, 0.0, 3.0]))
    assert FLOOR == 1e-10
    torch.testing.assert_close(merged["head.w"], torch.tensor([3.0]))  # no Omega: the mean
    assert merged["bn.count"].item() == 3  # integer buffer: the first expert's
    # running statistics are one model's (the first expert's), not a uniform mean
    assert merged["bn.running_mean"].item() == 0.0 and merged["bn.running_var"].item() == 1.0
    normalized = max_normalized({"a": torch.tensor([2.0, 4.0]), "b": torch.tensor([1.0])})
    torch.testing.assert_close(normalized["a"], torch.tensor([0.5, 1.0]))


def test_imm_merge_rejects_omegas_that_do_not_fit():
    experts = [{"body.w": torch.zeros(3)}, {"body.w": torch.ones(3)}]
    with pytest.raises(ValueError, match=r"Omega 1\['body.w'\] has shape \(2,\); expected \(3,\)"):
        imm_merge(experts, [{"body.w": torch.ones(3)}, {"body.w": torch.ones(2)}])
    with pytest.raises(ValueError, match="one Omega per expert"):
        imm_merge(experts, [{"body.w": torch.ones(3)}])


def cnn_and_data(seed: int = 0, count: int = 50):
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=1, num_classes=3, width=4)
    images = torch.rand(count, 1, 8, 8) * 2.0 + 0.5  # shifted: statistics differ from the initial ones
    return model, (images,)


def parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_adabn_changes_only_bn_running_statistics():
    model, inputs = cnn_and_data()
    before_params = parameters(model)
    before_stats = [layer.running_mean.clone() for layer in batchnorm_layers(model)]
    adabn(model, plain_forward, inputs, batch_size=16)  # 50 = 16 + 16 + 16 + 2: uneven batches
    for name, value in parameters(model).items():
        torch.testing.assert_close(value, before_params[name], rtol=0, atol=0)
    for layer, old in zip(batchnorm_layers(model), before_stats):
        assert not torch.allclose(layer.running_mean, old)
    # The first BN's running mean is the mean of the first conv's output over all samples.
    conv_out = model.body[0](inputs[0])
    torch.testing.assert_close(model.body[1].running_mean, conv_out.mean(dim=(0, 2, 3)).detach(), rtol=1e-4, atol=1e-5)
    assert all(layer.momentum == 0.1 for layer in batchnorm_layers(model))  # restored
    assert not model.training


def bn_affine_names(model):
    return {
        f"{name}.{p}" for name, m in model.named_modules() if m in batchnorm_layers(model) for p in ("weight", "bias")
    }


def test_tent_changes_only_bn_affine_parameters_and_lowers_entropy():
    model, inputs = cnn_and_data(1)
    reference = adabn(cnn_and_data(1)[0], plain_forward, inputs, 16)
    before = parameters(model)
    tent(model, plain_forward, inputs, epochs=5, lr=0.05, batch_size=16, generator=torch.Generator().manual_seed(0))
    affine = bn_affine_names(model)
    assert affine and affine < set(before)
    for name, value in parameters(model).items():
        if name in affine:
            assert not torch.allclose(value, before[name]), name
        else:
            torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again
    with torch.no_grad():
        assert mean_entropy(model(inputs[0])) < mean_entropy(reference(inputs[0]))


def test_pseudo_labels_keep_only_confident_predictions():
    model, inputs = cnn_and_data(2)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(inputs[0]), dim=1)
    threshold = float(probs.max(dim=1).values.median())
    keep, labels = confident_labels(model, plain_forward, inputs, threshold, batch_size=16)
    expected = torch.nonzero(probs.max(dim=1).values >= threshold).flatten()
    assert torch.equal(keep, expected) and torch.equal(labels, probs.argmax(dim=1)[expected])
    # Nothing confident enough: the model is left as it was.
    before = parameters(model)
    pseudo_label(model, plain_forward, inputs, 2, 0.01, 1.0, 16, torch.Generator().manual_seed(0))
    for name, value in parameters(model).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_adapt_settings_pipelines_and_task_checks():
    from fedpersonal.tasks import get_task

    cfg = parse_config({"adapt.method": "adabn+pseudo-label"}, [AdaptSettings])
    assert cfg.section(AdaptSettings).method == "adabn+pseudo-label"
    for bad in ("adabn+bogus", "none+adabn", "entropy"):
        with pytest.raises(ConfigError, match=r"'adapt.method' = .* is invalid; expected one of \['none', 'adabn'"):
            parse_config({"adapt.method": bad}, [AdaptSettings])
    with pytest.raises(ConfigError, match=r"'adapt.method' = 'adabn\+tent' needs class probabilities, but task 'gaze'"):
        check_applies(AdaptSettings(method="adabn+tent"), get_task("gaze"))
    check_applies(AdaptSettings(method="adabn"), get_task("gaze"))
    unlabelled = (torch.randint(0, 255, (8, 1, 36, 60), dtype=torch.uint8), torch.zeros(8, 2))
    with pytest.raises(ValueError, match="AdaBN adapts BatchNorm layers, but the model"):
        adapt_model(
            get_task("gaze").build_model(),
            get_task("gaze"),
            unlabelled,
            AdaptSettings(method="adabn"),
            torch.Generator(),
        )
    # The gaze LeNet has BatchNorm on request, and then AdaBN applies to the regression.
    gaze = get_task("gaze", parse_config({"gaze.batchnorm": True}, [GazeSettings]))
    model = gaze.build_model()
    adapted = adapt_model(model, gaze, unlabelled, AdaptSettings(method="adabn"), torch.Generator())
    assert len(batchnorm_layers(adapted)) == 2 and int(adapted.body[1].num_batches_tracked) == 1
