"""Overlap, effective sample size and covariate balance against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from eocausal.models.effects.diagnostics import (
    OverlapWarning,
    check_overlap,
    covariate_balance,
    effective_sample_size,
    ipw_weights,
    overlap_summary,
)

from eocausal.errors import EstimationError


def test_effective_sample_size_by_hand() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    # (1 + 1 + 2)^2 / (1 + 1 + 4) = 16 / 6
    assert effective_sample_size([1.0, 1.0, 2.0]) == pytest.approx(16 / 6)


def test_ipw_weights_by_hand() -> None:
    np.testing.assert_allclose(ipw_weights([1, 0, 1], [0.25, 0.25, 0.5]), [4.0, 4 / 3, 2.0])


def test_overlap_summary_counts() -> None:
    t = np.array([1, 1, 1, 0, 0, 0])
    e = np.array([0.995, 0.5, 0.03, 0.5, 0.2, 0.001])
    s = overlap_summary(t, e, bins=10)
    assert (s["n_extreme"], s["n_inside_hard_treated"], s["n_inside_hard_control"]) == (3, 2, 2)
    assert s["hist_treated"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert sum(s["hist_control"]) == 3 and len(s["hist_edges"]) == 11
    assert s["min_treated"] == 0.03 and s["max_control"] == 0.5


def test_poor_overlap_warns_with_numbers() -> None:
    rng = np.random.default_rng(0)
    e = np.r_[np.full(50, 0.02), rng.uniform(0.2, 0.8, 150)]
    t = (rng.uniform(size=200) < e).astype(int)
    t[:2] = 1  # a few treated units among the extreme ones
    with pytest.warns(OverlapWarning, match=r"poor propensity overlap: 50 of 200 units \(25.0%\)"):
        check_overlap(t, e)


def test_good_overlap_is_silent(recwarn) -> None:
    rng = np.random.default_rng(1)
    e = rng.uniform(0.3, 0.7, 500)
    check_overlap((rng.uniform(size=500) < e).astype(int), e)
    assert not [w for w in recwarn if issubclass(w.category, OverlapWarning)]


def test_no_overlap_raises_with_numbers() -> None:
    t = np.r_[np.ones(100), np.zeros(100)].astype(int)
    e = np.r_[np.full(99, 0.999), [0.5], np.full(100, 0.001)]
    with pytest.raises(EstimationError, match=r"no overlap in the propensity: of 200 units only 1 treated "
                                              r"and 0 control .* inside \[0.01, 0.99\]"):
        check_overlap(t, e)


def test_covariate_balance_by_hand() -> None:
    X = np.array([[1.0], [3.0], [0.0], [2.0]])
    t = np.array([1, 1, 0, 0])
    # means 2 and 1, variances 2 and 2: SMD = 1 / sqrt(2)
    balance = covariate_balance(X, t)
    assert balance.loc["x0", "smd_before"] == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(balance.loc["x0", "smd_after"])
    # weights 1/e = (4, 4/3) for treated, 1/(1-e) = (2, 2) for controls:
    # weighted means (4 + 4) / (16 / 3) = 1.5 and 1
    after = covariate_balance(X, t, [0.25, 0.75, 0.5, 0.5]).loc["x0", "smd_after"]
    assert after == pytest.approx(0.5 / np.sqrt(2))


def test_weighting_by_the_true_propensity_balances_a_confounder() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20000, 1))
    e = 1 / (1 + np.exp(-x[:, 0]))
    t = (rng.uniform(size=20000) < e).astype(int)
    balance = covariate_balance(x, t, e, names=["rain"])
    assert balance.loc["rain", "smd_before"] > 0.5
    assert abs(balance.loc["rain", "smd_after"]) < 0.05
