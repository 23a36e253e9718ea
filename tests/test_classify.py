"""The classification task: shapes and digits, users' domains, and the adaptation hook of any algorithm."""

import numpy as np
import pytest
import torch

from fedpersonal.config import ConfigError
from fedpersonal.data.corruptions import CORRUPTIONS, corrupt
from fedpersonal.data.synthetic.shapes import NUM_CLASSES, generate, sample_style
from fedpersonal.tasks import get_task
from fedpersonal.tasks.classify import server_data, user_domain
from simulations.inprocess import run_inprocess
from simulations.server_app import parse_run_config


def test_shapes_are_deterministic_per_source_and_styles_differ():
    images, labels = generate(3, 40, [1, 4], seed=0)
    again, same_labels = generate(3, 40, [1, 4], seed=0)
    assert images.shape == (40, 3, 24, 24) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, same_labels)
    assert set(labels.tolist()) == {1, 4}
    assert sample_style(3, 0) != sample_style(4, 0)
    assert sample_style(3, 0, heterogeneity=0.0) == sample_style(4, 0, heterogeneity=0.0)
    with pytest.raises(ValueError, match=f"subset of 0..{NUM_CLASSES - 1}"):
        generate(0, 5, [NUM_CLASSES], seed=0)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_changes_images_and_keeps_their_layout(name):
    images, _ = generate(0, 8, list(range(NUM_CLASSES)), seed=0)
    out = corrupt(images, name, 0.8, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - images).mean() > 1.0
    assert np.array_equal(out, corrupt(images, name, 0.8, np.random.default_rng(1)))


def test_users_domains_transprior_and_catprior():
    cfg = parse_run_config({"task": "classify", "samples-per-client": 50, "classify.corruptions": "blur,jpeg"})
    task = get_task("classify", cfg)
    assert [user_domain(cfg, i).corruption for i in range(4)] == ["blur", "jpeg", "blur", "jpeg"]
    user = task.client_data(0)
    assert user.num_train == 40 and user.num_test == 10 and tuple(user.train[0].shape[1:]) == (3, 24, 24)
    server = server_data(cfg, user_domain(cfg, 0), 80)
    assert len(server[0]) >= 80 and not any(torch.equal(server[0][0], image) for image in user.train[0])

    cfg = parse_run_config(
        {"task": "classify", "samples-per-client": 50, "classify.user-shift": "category", "classify.category-groups": 5}
    )
    for partition in range(6):
        labels = get_task("classify", cfg).client_data(partition).train[1]
        group = partition % 5
        assert set(labels.tolist()) <= {2 * group, 2 * group + 1}


def test_digits_are_bundled_grayscale_16x16():
    cfg = parse_run_config({"task": "classify", "dataset": "digits", "partition.name": "iid"})
    task = get_task("classify", cfg)
    data = task.client_data(1)
    assert tuple(data.train[0].shape[1:]) == (1, 16, 16)
    assert task.build_model()(data.train[0][:2].float() / 255).shape == (2, 10)


def test_bad_classify_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"'classify.corruptions' = 'blur,fog' is invalid"):
        parse_run_config({"classify.corruptions": "blur,fog"})
    with pytest.raises(ConfigError, match=r"'dataset' = 'cifar100' is unknown"):
        get_task("classify", parse_run_config({"task": "classify", "dataset": "cifar100"})).build_model()


def test_fedavg_with_tent_reports_personalized_accuracy_that_learns(tmp_path, one_thread):
    run_dir, _ = run_inprocess(
        {
            "task": "classify",
            "num-clients": 3,
            "num-rounds": 3,
            "samples-per-client": 200,
            "lr": 0.1,
            "batch-size": 32,
            "classify.user-shift": "none",
            "adapt.method": "tent",
            "results-dir": str(tmp_path),
        }
    )
    rounds = run_dir.read_rows("rounds.jsonl")
    # Users draw in their own palettes: the averaged BN statistics fit nobody, so the received
    # model stays near chance while its TENT-adapted copy (BN re-estimated) learns.
    first, last = rounds[0], rounds[-1]
    assert last["personalized-accuracy"] > first["personalized-accuracy"] + 0.2
    assert last["personalized-accuracy"] > last["global-accuracy"] + 0.2
    assert "worst-client-personalized-accuracy" in last
