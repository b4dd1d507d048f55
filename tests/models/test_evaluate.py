"""Difference in means and truth comparisons against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eocausal.models.effects.checks import check_treatment_outcome, difference_in_means
from eocausal.models.evaluation.truth import compare_with_truth
from scipy import stats

from eocausal.errors import EstimationError


def test_difference_in_means_equals_hand_computation() -> None:
    treatment = [1, 1, 1, 0, 0, 0, 0]
    outcome = [5.0, 7.0, 9.0, 1.0, 2.0, 3.0, 6.0]
    # Treated: mean 7, variance 4; controls: mean 3, variance 14/3.
    se = math.sqrt(4 / 3 + (14 / 3) / 4)
    df = (4 / 3 + 14 / 12) ** 2 / ((4 / 3) ** 2 / 2 + (14 / 12) ** 2 / 3)
    half = stats.t.ppf(0.975, df) * se
    result = difference_in_means(treatment, outcome)
    assert result == pytest.approx({"estimate": 4.0, "se": se, "lo": 4.0 - half, "hi": 4.0 + half})
    assert se == pytest.approx(1.5811388, rel=1e-7)  # sqrt(2.5)


def test_difference_in_means_matches_scipy_welch_test() -> None:
    rng = np.random.default_rng(0)
    treatment = rng.integers(0, 2, size=300)
    outcome = rng.normal(size=300) + 0.5 * treatment * rng.normal(2.0, 1.0, size=300)
    result = difference_in_means(treatment, outcome)
    welch = stats.ttest_ind(outcome[treatment == 1], outcome[treatment == 0], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert (result["lo"], result["hi"]) == pytest.approx((low, high), rel=1e-10)
    assert result["estimate"] / result["se"] == pytest.approx(welch.statistic, rel=1e-10)


def test_difference_in_means_needs_two_units_per_arm() -> None:
    with pytest.raises(EstimationError, match="at least 2 treated and 2 control units; got 1 treated"):
        difference_in_means([1, 0, 0], [1.0, 2.0, 3.0])


def test_check_treatment_outcome_accepts_bool_and_float_coding() -> None:
    t, y = check_treatment_outcome(np.array([True, False, True]), [1, 2, 3])
    assert t.dtype == np.int64 and y.dtype == np.float64
    np.testing.assert_array_equal(t, [1, 0, 1])
    np.testing.assert_array_equal(check_treatment_outcome([1.0, 0.0], [0.0, 1.0])[0], [1, 0])


def test_compare_with_truth_on_hand_example() -> None:
    estimates = {
        "ate": 2.5,
        "ate_lo": 2.0,
        "ate_hi": 3.0,
        "cate": [1.0, 2.0, 3.0, 4.0],
        "naive": {"estimate": 4.0},
    }
    metrics = compare_with_truth(estimates, true_ate=2.0, true_cate=[1.0, 3.0, 2.0, 4.0])
    assert metrics == {
        "ate_error": 0.5,
        "abs_ate_error": 0.5,
        "interval_covers_truth": True,
        # ranks (1, 2, 3, 4) vs (1, 3, 2, 4): 1 - 6 * 2 / (4 * 15) = 0.8
        "spearman_cate": pytest.approx(0.8),
        # centred (-1.5, -0.5, 0.5, 1.5) vs (-1.5, 0.5, -0.5, 1.5): 4 / 5 = 0.8
        "pearson_cate": pytest.approx(0.8),
        "root_pehe": pytest.approx(math.sqrt(0.5)),  # errors (0, -1, 1, 0)
        "naive_ate_error": 2.0,
        "bias_removed_fraction": 0.75,  # 1 - 0.5 / 2.0
    }
    assert all(type(v) in (float, bool) for v in metrics.values())
    json.dumps(metrics)


def test_compare_with_truth_interval_misses_truth() -> None:
    metrics = compare_with_truth({"ate": 1.0, "ate_lo": 0.9, "ate_hi": 1.1}, true_ate=1.2)
    assert metrics["interval_covers_truth"] is False
    assert metrics["ate_error"] == pytest.approx(-0.2)
    assert metrics["root_pehe"] is None and metrics["bias_removed_fraction"] is None


def test_compare_with_truth_zero_naive_error_gives_no_fraction() -> None:
    estimates = {"ate": 1.5, "ate_lo": 1.0, "ate_hi": 2.0, "naive": 1.0}
    metrics = compare_with_truth(estimates, true_ate=1.0)
    assert metrics["naive_ate_error"] == 0.0
    assert metrics["bias_removed_fraction"] is None


def test_compare_with_truth_constant_cate_has_no_correlation() -> None:
    estimates = {"ate": 1.0, "ate_lo": 0.0, "ate_hi": 2.0, "cate": [1.0, 1.0, 1.0]}
    metrics = compare_with_truth(estimates, true_ate=1.0, true_cate=[0.0, 1.0, 2.0])
    assert metrics["spearman_cate"] is None and metrics["pearson_cate"] is None
    assert metrics["root_pehe"] == pytest.approx(math.sqrt(2 / 3))


def test_compare_with_truth_rejects_length_mismatch() -> None:
    estimates = {"ate": 1.0, "ate_lo": 0.0, "ate_hi": 2.0, "cate": [1.0, 2.0]}
    with pytest.raises(EstimationError, match="estimated CATE has 2 values but true_cate has 3"):
        compare_with_truth(estimates, true_ate=1.0, true_cate=[1.0, 2.0, 3.0])
