import torch

from fedpersonal.config import parse_config
from fedpersonal.model_pool import pooled_initial_model, seeded_model
from fedpersonal.tasks import get_task


def test_pooled_model_is_reused_and_reset_to_the_seeded_initial_weights():
    cfg = parse_config({"seed": 5})
    task = get_task("gaze", cfg)
    reference = seeded_model(task, 5).state_dict()
    model = pooled_initial_model(task, cfg)
    with torch.no_grad():
        model.head.weight.add_(1.0)  # a client trains it in place
    again = pooled_initial_model(task, cfg)
    assert again is model
    for key, value in reference.items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    other = pooled_initial_model(task, parse_config({"seed": 6}))
    assert other is not model and not torch.equal(other.head.weight, model.head.weight)


def test_seeded_model_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeded_model(get_task("gaze"), 0)
    torch.testing.assert_close(torch.rand(3), expected)


def test_without_reset_the_pooled_model_is_returned_as_left():
    cfg = parse_config({"seed": 7})
    task = get_task("gaze", cfg)
    model = pooled_initial_model(task, cfg)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    kept = model.head.weight.clone()
    assert pooled_initial_model(task, cfg, reset=False) is model
    torch.testing.assert_close(model.head.weight, kept, rtol=0, atol=0)
