"""Honest inference: clustered headline errors, trimming in every learner, estimand labels,
calibrated per-unit intervals, image-free fits, sensitivity bounds and bad group labels.

Small worlds with known effects (tau = 1 + x0 + 0.5 x1); coverage over many seeds is in
benchmarks/honest_inference.py and benchmarks/README.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.checks import check_groups
from eocausal.models.effects.crossfit import cluster_se
from eocausal.models.effects.diagnostics import OverlapWarning
from eocausal.models.effects.estimate import EffectModel, estimate_effects
from eocausal.models.effects.intervals import dml_dr_scores

from eocausal.errors import EstimationError
from tests.models.worlds import FAST_FOREST, clustered_world

FAST = FAST_FOREST
world = clustered_world


# --- group labels ------------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "message"), [
    (pd.Series(["a", None, "b", ""] * 10), r"image_key has 20 missing or empty labels \(rows 1, 3, 5, 7, 9, \.\.\.\)"),
    (np.r_[np.ones(39), np.nan], r"image_key has 1 missing or empty labels \(rows 39\)"),
    (np.zeros(40), r"image_key has 1 distinct label \(0.0\) for 40 units, holding both arms"),
])
def test_bad_group_labels_give_one_clear_message(labels, message) -> None:
    t = np.tile([0, 1], 20)
    with pytest.raises(EstimationError, match=message):
        check_groups(labels, "image_key", 40, treatment=t)


def test_every_entry_point_checks_groups() -> None:
    w = world(0, 200)
    bad = w["g"].astype(float)
    bad[[5, 17]] = np.nan
    with pytest.raises(EstimationError, match=r"image_key has 2 missing or empty labels \(rows 5, 17\)"):
        estimate_effects(w["x"], w["t"], w["y"], groups=bad, groups_name="image_key", **FAST)
    with pytest.raises(EstimationError, match=r"image_key has 2 missing or empty labels \(rows 5, 17\)"):
        estimate_ate(w["x"], w["t"], w["y"], design="rct", groups=bad, groups_name="image_key", cv=3)
    with pytest.raises(EstimationError, match=r"village has 1 distinct label \(v1\) for 200 units"):
        estimate_ate(w["x"], w["t"], w["y"], design="rct", groups=["v1"] * 200, groups_name="village", cv=3)


def test_trim_that_removes_an_arm_says_so() -> None:
    w = world(1, 400, confounding=6.0)
    with pytest.raises(EstimationError, match=r"trim=0.45 removes \d+ of 400 units and leaves \d+ treated"):
        estimate_effects(w["x"], w["t"], w["y"], design="observational", trim=0.45, **FAST)
    with pytest.raises(EstimationError, match=r"trim=0.49 removes \d+ of 400 units"):
        estimate_ate(w["x"], w["t"], w["y"], trim=0.49, cv=3)


# --- cluster-robust headline -------------------------------------------------------------

def test_forest_headline_is_its_own_dr_mean_with_a_clustered_error() -> None:
    w = world(2, 900, per_cluster=9, shock=1.5)
    model = EffectModel(**FAST).fit(w["x"], w["t"], w["y"], groups=w["g"], groups_name="image_key")
    fit = model.estimates_
    assert fit.ate == pytest.approx(float(np.ravel(model.estimator_.ate_)[0]), rel=1e-9)
    scores = dml_dr_scores(model.estimator_, "causal_forest", model.transform(w["x"]), w["t"])
    assert fit.ate_se == pytest.approx(cluster_se(scores, w["g"]))
    assert fit.variance == "cluster-robust influence function, 100 clusters (image_key)"
    # a shock shared by 9 units, treatment per cluster: the clustered error is far larger
    assert fit.ate_se > 1.8 * float(np.ravel(model.estimator_.ate_stderr_)[0])


@pytest.mark.parametrize("method", ["linear_dml", "t_learner"])
def test_other_learners_cluster_their_headline_too(method: str) -> None:
    w = world(3, 600, per_cluster=6, shock=1.5)
    fit = estimate_effects(w["x"], w["t"], w["y"], method=method, groups=w["g"], **FAST)
    unclustered = estimate_effects(w["x"], w["t"], w["y"], method=method, **FAST)
    assert fit.variance.startswith("cluster-robust influence function, 100 clusters")
    assert unclustered.variance.startswith("influence function, units independent")
    assert fit.ate_se > 1.5 * unclustered.ate_se


# --- trimming, overlap and estimands -----------------------------------------------------

def test_forest_trims_extreme_propensities_and_names_the_estimand() -> None:
    w = world(4, 1000, confounding=5.0)  # true propensities down to ~1e-6
    assert min(w["e"].min(), 1 - w["e"].max()) < 1e-3
    fit = estimate_effects(w["x"], w["t"], w["y"], design="observational", **FAST)
    assert fit.trimming["rule"] == "trim" and fit.trimming["n_affected"] > 100
    assert fit.n_used == 1000 - fit.trimming["n_affected"] == int(fit.used.sum())
    assert fit.estimand.startswith(f"ATE on the trimmed population: the {fit.n_used} of 1000 units")
    assert fit.overlap["n_treated"] + fit.overlap["n_control"] == fit.n_used  # checked after trimming
    truth = w["tau"][fit.used].mean()
    assert abs(fit.ate - truth) < 4 * fit.ate_se and fit.ate_se < 0.3
    assert fit.cate.shape == (1000,)  # every unit keeps a CATE for the map


def test_no_trim_with_extreme_propensities_warns_with_numbers() -> None:
    w = world(4, 600, confounding=5.0)
    with pytest.warns(OverlapWarning, match=r"\d+ of 600 units \(\d+\.\d%\) have a propensity outside"):
        estimate_effects(w["x"], w["t"], w["y"], design="observational", trim=None, **FAST)


def test_clip_labels_a_weighted_effect() -> None:
    w = world(5, 800, confounding=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        fit = estimate_effects(w["x"], w["t"], w["y"], design="observational", clip=0.05, **FAST)
    assert fit.n_used == 800 and fit.trimming["rule"] == "clip"
    assert fit.estimand.startswith(f"weighted effect, not the ATE: propensities of {fit.trimming['n_affected']} of 800")


def test_ate_table_checks_overlap_after_trimming_and_labels_linear_dml() -> None:
    w = world(6, 800, confounding=4.0)
    report = estimate_ate(w["x"], w["t"], w["y"], trim=0.05, cv=3)
    assert report.overlap["n_treated"] + report.overlap["n_control"] == report.trimming["n_used"]
    assert report.estimates["aipw"].estimand.startswith("ATE on the trimmed population")
    assert report.estimates["linear_dml"].estimand.startswith("overlap-weighted effect, not the ATE")
    trial = world(6, 600)
    rct = estimate_ate(trial["x"], trial["t"], trial["y"], design="rct", cv=3, methods=["linear_dml"])
    assert rct.estimates["linear_dml"].estimand.startswith("ATE (constant assignment probability")


# --- image-free and combined -------------------------------------------------------------

def test_image_free_fit_uses_covariates_alone() -> None:
    w = world(8, 800)
    fit = estimate_effects(None, w["t"], w["y"], covariates=pd.DataFrame(w["x"]).add_prefix("c"), **FAST)
    assert fit.model.n_features_in_ == 0 and fit.model.n_covariates_ == 6
    assert fit.ate_lo <= w["tau"].mean() <= fit.ate_hi
    assert np.corrcoef(fit.cate, w["tau"])[0, 1] > 0.8
    with pytest.raises(EstimationError, match="give features, covariates or both; got neither"):
        estimate_effects(None, w["t"], w["y"], **FAST)
    with pytest.raises(EstimationError, match="fitted on covariates alone; pass features=None"):
        fit.model.predict_cate(w["x"], pd.DataFrame(w["x"]).add_prefix("c"))


