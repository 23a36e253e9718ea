import pytest

from fedpersonal.metrics.fairness import fairness_summary


def test_lower_is_better_worst_is_largest():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    summary = fairness_summary(values, "lower")
    assert summary["mean"] == pytest.approx(6.0)
    assert summary["worst"] == 11.0
    # ceil(0.1 * 11) = 2 worst clients: 11 and 10.
    assert summary["worst10_mean"] == pytest.approx(10.5)
    assert summary["std"] == pytest.approx(10**0.5)


def test_higher_is_better_worst_is_smallest():
    summary = fairness_summary([0.9, 0.5, 0.7], "higher")
    assert summary["worst"] == 0.5
    assert summary["worst10_mean"] == 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="better"):
        fairness_summary([1.0], "smaller")
    with pytest.raises(ValueError, match="at least one"):
        fairness_summary([], "lower")


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
    clear = paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 0.0, 1: 0.1, 2: 0.2})
    assert clear["low"] == pytest.approx(1.0) and not clear["contains_zero"]  # identical differences: no spread
    rows = [
        {"scenario": "s", "algorithm": "fedavg", "metric": "accuracy", "per_seed": {"0": 0.5, "1": 0.6}},
        {"scenario": "s", "algorithm": "fedper", "metric": "accuracy", "per_seed": {"0": 0.7, "1": 0.6}},
    ]
    table = paired_table(rows, "fedavg")
    assert "| s | fedper | accuracy | +0.100 |" in table and "interval contains 0" in table
