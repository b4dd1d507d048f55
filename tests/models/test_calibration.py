"""BLP and GATES against statsmodels and against a CATE known to be right or useless."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from eocausal.models.evaluation.calibration import blp_test, gates

from eocausal.errors import EstimationError


def trial(seed: int, n: int = 4000) -> dict[str, np.ndarray]:
    """A trial with tau = 1 + x0 and AIPW scores from the true nuisances (p = 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    tau, mu0 = 1.0 + x[:, 0], x[:, 1]
    t = rng.binomial(1, 0.5, n)
    y = mu0 + t * tau + rng.normal(size=n)
    mu1 = mu0 + tau
    scores = mu1 - mu0 + t * (y - mu1) / 0.5 - (1 - t) * (y - mu0) / 0.5
    return {"tau": tau, "scores": scores, "groups": rng.integers(0, 200, n)}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return trial(0)


def test_blp_slope_is_one_for_the_true_cate(data) -> None:
    result = blp_test(data["scores"], data["tau"])
    assert result.slope == pytest.approx(1.0, abs=0.1)  # 1.00 (se 0.03) at seed 0
    assert result.ate == pytest.approx(1.0, abs=0.1)
    lo, hi = result.slope_interval
    assert lo < 1.0 < hi and result.slope_pvalue < 1e-10


def test_blp_slope_is_near_zero_for_noise(data) -> None:
    noise = np.random.default_rng(1).normal(size=data["tau"].size)
    result = blp_test(data["scores"], noise)
    assert abs(result.slope) < 3 * result.slope_se


def test_blp_halves_slope_for_a_cate_twice_too_spread(data) -> None:
    assert blp_test(data["scores"], 2 * data["tau"]).slope == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("clustered", [False, True])
def test_blp_matches_statsmodels(data, clustered: bool) -> None:
    s = data["tau"]
    Z = sm.add_constant(s - s.mean())
    model = sm.OLS(data["scores"], Z)
    if clustered:
        ref = model.fit(cov_type="cluster", cov_kwds={"groups": data["groups"]})
    else:
        ref = model.fit(cov_type="HC1")
    result = blp_test(data["scores"], s, clusters=data["groups"] if clustered else None)
    np.testing.assert_allclose([result.ate, result.slope], ref.params, rtol=1e-10)
    np.testing.assert_allclose([result.ate_se, result.slope_se], ref.bse, rtol=1e-8)


def test_gates_are_group_means_in_cate_order(data) -> None:
    result = gates(data["scores"], data["tau"], n_groups=4)
    order = np.argsort(data["tau"], kind="stable")
    by_hand = [data["scores"][idx].mean() for idx in np.array_split(order, 4)]
    np.testing.assert_allclose(result.table["estimate"], by_hand, rtol=1e-10)
    assert result.table["n"].tolist() == [1000] * 4
    assert np.all(np.diff(result.table["estimate"]) > 0)
    # true group means of tau are about -0.27, 0.68, 1.32, 2.27: difference about 2.5
    assert result.difference["estimate"] == pytest.approx(2.54, abs=0.3)


def test_gates_errors_match_statsmodels_clustered(data) -> None:
    result = gates(data["scores"], data["tau"], n_groups=5, clusters=data["groups"])
    ranks = np.argsort(np.argsort(data["tau"], kind="stable"), kind="stable")
    dummies = (ranks[:, None] * 5 // ranks.size == np.arange(5)).astype(float)
    ref = sm.OLS(data["scores"], dummies).fit(cov_type="cluster", cov_kwds={"groups": data["groups"]})
    np.testing.assert_allclose(result.table["se"], ref.bse, rtol=1e-8)
    diff = ref.t_test(np.r_[-1.0, 0, 0, 0, 1.0])
    assert result.difference["se"] == pytest.approx(float(np.ravel(diff.sd)[0]), rel=1e-8)


def test_constant_cate_has_no_slope(data) -> None:
    with pytest.raises(EstimationError, match="cate is constant"):
        blp_test(data["scores"], np.ones_like(data["tau"]))


def test_gates_rejects_too_many_groups() -> None:
    with pytest.raises(EstimationError, match="n_groups must be an int of at least 2 .* got n_groups=5 for 6"):
        gates(np.zeros(6), np.arange(6.0), n_groups=5)
