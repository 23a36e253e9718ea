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
