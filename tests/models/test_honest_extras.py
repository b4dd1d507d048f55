"""Calibrated per-unit intervals, the three-way feature-set comparison and sensitivity bounds.

Known answers: the bias-aware critical values' defining probability, econml's own
sensitivity interval and robustness value, and the published 401(k) DML estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.estimate import EffectModel, estimate_effects
from eocausal.models.effects.intervals import bias_aware_critical_value
from eocausal.models.effects.sensitivity import (
    dml_sensitivity_params,
    sensitivity_grid,
    sensitivity_result,
)
from eocausal.models.evaluation.baselines import compare_feature_sets
from eocausal.models.evaluation.plots import plot_sensitivity_contour
from scipy import stats

from tests.models.worlds import FAST_FOREST, clustered_world

FAST = FAST_FOREST
world = clustered_world


# --- per-unit intervals ------------------------------------------------------------------

def test_bias_aware_critical_value_matches_known_quantiles() -> None:
    cv = bias_aware_critical_value([0.0, 1.0, 5.0])
    assert cv[0] == pytest.approx(1.959964, abs=1e-5)
    # P(|N(b,1)| <= cv) = 0.95 by definition
    for b, c in zip([1.0, 5.0], cv[1:], strict=True):
        assert stats.norm.cdf(c - b) - stats.norm.cdf(-c - b) == pytest.approx(0.95, abs=1e-6)
    assert cv[2] == pytest.approx(5.0 + 1.645, abs=0.01)


def test_calibrated_intervals_cover_where_the_forest_misses() -> None:
    w = world(7, 1500)
    model = EffectModel(**FAST).fit(w["x"], w["t"], w["y"])
    fit = model.estimates_
    own = np.mean((fit.cate_lo <= w["tau"]) & (w["tau"] <= fit.cate_hi))
    cal = np.mean((fit.cate_lo_calibrated <= w["tau"]) & (w["tau"] <= fit.cate_hi_calibrated))
    assert own < 0.9 and cal >= 0.9
    assert np.all(fit.cate_hi_calibrated - fit.cate_lo_calibrated >= fit.cate_hi - fit.cate_lo - 1e-9)
    _, lo, hi = model.predict_cate(w["x"][:50], calibrated=True)
    assert np.allclose(lo, fit.cate_lo_calibrated[:50]) and np.allclose(hi, fit.cate_hi_calibrated[:50])


def test_feature_sets_find_the_effect_where_it_lives() -> None:
    w = world(9, 500, per_cluster=4)
    images, tabular = w["x"][:, 2:], w["x"][:, :2]  # the effect depends on the tabular columns only
    result = compare_feature_sets(images, tabular, w["t"], w["y"], groups=w["g"], groups_name="image_key",
                                  n_bootstrap=30, **FAST)
    table = result.table
    assert list(table.index) == ["tabular", "image", "image+tabular"]
    assert table.loc["tabular", "autoc"] - 2 * table.loc["tabular", "autoc_se"] > 0
    assert table.loc["tabular", "blp_slope"] > 0.5 > table.loc["image", "blp_slope"]
    assert table["variance"].str.startswith("cluster-robust influence function, 125 clusters (image_key)").all()
    het = result.reports["image"]["heterogeneity"]
    assert het.variance == {"rate": "half-sample bootstrap over 125 clusters (image_key)",
                            "blp_gates": "cluster-robust (CR1), 125 clusters (image_key)"}
    assert len(result.figure().axes) == 3


# --- sensitivity -------------------------------------------------------------------------

def test_sensitivity_matches_econml_and_shrinks_to_the_ci() -> None:
    from econml.dml import LinearDML
    from sklearn.linear_model import LinearRegression, LogisticRegression

    w = world(10, 1000, confounding=1.0)
    est = LinearDML(model_y=LinearRegression(), model_t=LogisticRegression(), discrete_treatment=True,
                    cv=3, random_state=0).fit(w["y"], w["t"], X=None, W=w["x"], cache_values=True)
    y_res, t_res, _, _ = est.residuals_
    ours = sensitivity_result(dml_sensitivity_params(t_res, y_res), c_y=0.05, c_t=0.05)
    lo, hi = est.sensitivity_interval(alpha=0.05, c_y=0.05, c_t=0.05)
    assert (ours.lo, ours.hi) == pytest.approx((lo, hi), rel=1e-9)
    assert ours.robustness_value == pytest.approx(est.robustness_value(alpha=0.05), abs=1e-6)
    none = sensitivity_result(ours.params, c_y=0.0, c_t=0.0)
    se = np.sqrt(ours.params.cov[0, 0])
    assert (none.lo, none.hi) == pytest.approx((ours.estimate - 1.959964 * se, ours.estimate + 1.959964 * se), rel=1e-5)
    assert "hidden confounder would have to explain" in ours.sentence()
    c, Z = sensitivity_grid(ours.params)
    assert Z[0, 0] == pytest.approx(none.lo) and np.all(np.diff(Z[:, -1]) < 0)  # stronger: lower
    fig = plot_sensitivity_contour(c, Z, estimate=ours.estimate, robustness_value=ours.robustness_value)
    assert len(fig.axes) == 1


def test_401k_image_free_dml_within_published_range_with_bounds(data_dir) -> None:
    """Chernozhukov et al. (2018): about $9,000 (7,000-10,000 across learners)."""
    frame = pd.read_csv(data_dir / "known_answer" / "sipp1991_401k.csv")
    cov = ["age", "inc", "educ", "fsize", "marr", "twoearn", "db", "pira", "hown"]
    fit = estimate_effects(None, frame["e401"], frame["net_tfa"], covariates=frame[cov],
                           design="observational", method="linear_dml", trim=0.01, **FAST)
    assert 7000 < fit.ate < 11000 and fit.ate_lo < 9000 < fit.ate_hi
    sens = fit.sensitivity
    assert sens["lo"] < fit.ate_lo and sens["hi"] > fit.ate_hi and 0 < sens["robustness_value"] < 0.5
    report = estimate_ate(frame[cov], frame["e401"], frame["net_tfa"], cv=3, trim=0.01,
                          methods=["aipw"])
    s = report.sensitivity
    assert 7000 < s.estimate < 11000 and s.lo < s.theta_lo < s.estimate < s.theta_hi < s.hi
