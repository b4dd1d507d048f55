"""Causal forest estimates against known truths: simulated worlds and IHDP.

The simulated world has 10 "image features"; the effect depends on two of them
(tau = 1 + x0 + 0.5 x1, standard deviation 1.12) and the outcome's baseline on two others.
In the observational version treatment also depends on those baseline features, so the
difference in means is biased by about +1.7 while the forest should remove most of that.
"""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.checks import difference_in_means
from eocausal.models.effects.estimate import (
    EffectEstimates,
    EffectModel,
    KnownPropensity,
    ModelVersionWarning,
    estimate_effects,
)
from eocausal.models.evaluation.truth import compare_with_truth
from scipy import stats

from eocausal.errors import EstimationError, InputFileError

N_UNITS = 1500


def simulate(seed: int, *, observational: bool, n_units: int = N_UNITS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_units, 10))
    tau = 1.0 + x[:, 0] + 0.5 * x[:, 1]
    mu0 = 2.0 * x[:, 2] + x[:, 3] ** 2
    logit = 1.2 * x[:, 2] + 0.6 * x[:, 3] if observational else np.zeros(n_units)
    t = rng.binomial(1, 1.0 / (1.0 + np.exp(-logit)))
    y = mu0 + t * tau + rng.normal(size=n_units)
    return {"features": x, "treatment": t, "outcome": y, "tau": tau}


@pytest.fixture(scope="module")
def rct() -> dict[str, np.ndarray]:
    return simulate(0, observational=False)


@pytest.fixture(scope="module")
def rct_fit(rct: dict[str, np.ndarray]) -> EffectEstimates:
    return estimate_effects(rct["features"], rct["treatment"], rct["outcome"], propensity=0.5)


@pytest.fixture(scope="module")
def small_frame_fit() -> tuple[EffectModel, pd.DataFrame, pd.DataFrame]:
    """A quick fit on data frames with covariates, for the column checks."""
    world = simulate(1, observational=False, n_units=300)
    features = pd.DataFrame(world["features"][:, :8], columns=[f"f{i}" for i in range(8)])
    covariates = pd.DataFrame(world["features"][:, 8:], columns=["rain", "elevation"])
    model = EffectModel(n_estimators=40, n_jobs=1).fit(
        features, world["treatment"], world["outcome"], covariates=covariates
    )
    return model, features, covariates


def test_rct_ate_interval_covers_truth(rct, rct_fit) -> None:
    assert rct_fit.ate_lo <= rct["tau"].mean() <= rct_fit.ate_hi
    assert abs(rct_fit.ate - rct["tau"].mean()) < 0.15


def test_rct_cate_ranks_units(rct, rct_fit) -> None:
    assert stats.spearmanr(rct_fit.cate, rct["tau"]).statistic > 0.8  # 0.97 at seed 0


def test_rct_root_pehe_below_bound(rct, rct_fit) -> None:
    # Bound: about half the standard deviation of the true effect (1.12); 0.34 at seed 0.
    assert compare_with_truth(rct_fit, rct["tau"].mean(), rct["tau"])["root_pehe"] < 0.6


def test_rct_reports_design_and_naive_estimate(rct, rct_fit) -> None:
    assert (rct_fit.design, rct_fit.method, rct_fit.n_used) == ("rct", "causal_forest", N_UNITS)
    assert rct_fit.propensity_used == 0.5
    assert rct_fit.naive == difference_in_means(rct["treatment"], rct["outcome"])
    assert rct_fit.ate_lo < rct_fit.ate < rct_fit.ate_hi
    assert rct_fit.ate_hi - rct_fit.ate == pytest.approx(1.959964 * rct_fit.ate_se, rel=1e-5)
    assert np.all((rct_fit.cate_lo <= rct_fit.cate) & (rct_fit.cate <= rct_fit.cate_hi))
    assert 0.0 < rct_fit.nuisance_scores["outcome_r2"] < 1.0
    assert rct_fit.nuisance_scores["treatment_accuracy"] is None
    assert json.loads(json.dumps(rct_fit.summary()))["ate"] == rct_fit.ate


def test_rct_uses_treated_share_without_propensity() -> None:
    world = simulate(2, observational=False, n_units=300)
    fit = estimate_effects(world["features"], world["treatment"], world["outcome"], n_estimators=40)
    assert fit.propensity_used == pytest.approx(world["treatment"].mean())


def test_observational_forest_removes_most_confounding_bias() -> None:
    world = simulate(3, observational=True)
    fit = estimate_effects(
        world["features"], world["treatment"], world["outcome"], design="observational"
    )
    metrics = compare_with_truth(fit, world["tau"].mean(), world["tau"])
    assert metrics["naive_ate_error"] > 1.0  # +1.67: treated units have a higher baseline
    assert metrics["abs_ate_error"] < 0.25
    assert metrics["bias_removed_fraction"] > 0.8  # 0.97 at seed 3
    assert fit.propensity_used is None
    assert fit.nuisance_scores["treatment_accuracy"] > 0.5


def test_known_propensity_returns_p() -> None:
    clf = KnownPropensity(0.3).fit(np.zeros((4, 2)), [0, 1, 1, 0])
    np.testing.assert_array_equal(clf.predict_proba(np.zeros((3, 5))), [[0.7, 0.3]] * 3)
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    np.testing.assert_array_equal(clf.predict(np.zeros((2, 5))), [0, 0])


@pytest.mark.parametrize("p", [0.0, 1.0, 1.5])
def test_known_propensity_rejects_p_outside_unit_interval(p: float) -> None:
    with pytest.raises(ValueError, match="p must be a probability strictly between 0 and 1"):
        KnownPropensity(p).fit(np.zeros((2, 1)), [0, 1])


def test_predict_cate_matches_effects_on_training_rows(rct, rct_fit) -> None:
    cate, lo, hi = rct_fit.model.predict_cate(rct["features"])
    np.testing.assert_allclose(cate, rct_fit.cate, rtol=1e-12)
    np.testing.assert_allclose(lo, rct_fit.cate_lo, rtol=1e-12)
    np.testing.assert_allclose(hi, rct_fit.cate_hi, rtol=1e-12)
    direct = rct_fit.model.estimator_.effect(rct_fit.model.scaler_.transform(rct["features"]))
    np.testing.assert_allclose(cate, direct, rtol=1e-12)  # 10 features: scaled, no PCA


def test_predict_cate_at_new_locations(rct_fit) -> None:
    new = simulate(10, observational=False, n_units=400)
    cate, lo, hi = rct_fit.model.predict_cate(new["features"])
    assert cate.shape == lo.shape == hi.shape == (400,)
    assert np.all((lo <= cate) & (cate <= hi))
    assert stats.spearmanr(cate, new["tau"]).statistic > 0.8


def test_save_load_round_trip_gives_identical_predictions(small_frame_fit, tmp_path) -> None:
    # n_jobs=1: with several threads the forest sums trees in varying order (last-bit noise).
    model, features, covariates = small_frame_fit
    loaded = EffectModel.load(model.save(tmp_path / "effect_model.joblib"))
    before, after = model.predict_cate(features, covariates), loaded.predict_cate(features, covariates)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(b, a)
    assert loaded.get_params() == model.get_params()
    assert loaded.feature_names_in_ == list(features.columns)


def test_load_warns_on_version_mismatch(small_frame_fit, tmp_path) -> None:
    path = small_frame_fit[0].save(tmp_path / "effect_model.joblib")
    payload = joblib.load(path)
    payload["versions"]["econml"] = "0.0.1"
    joblib.dump(payload, path)
    with pytest.warns(ModelVersionWarning, match=r"econml 0\.0\.1 at save, .* now"):
        EffectModel.load(path)


def test_load_missing_file_raises(tmp_path) -> None:
    with pytest.raises(InputFileError, match="effect model file .*missing.joblib' does not exist"):
        EffectModel.load(tmp_path / "missing.joblib")


def test_predict_cate_rejects_feature_count_mismatch(rct, rct_fit) -> None:
    with pytest.raises(
        EstimationError, match="features have 9 columns but the model was fitted on 10"
    ):
        rct_fit.model.predict_cate(rct["features"][:, :9])


def test_predict_cate_rejects_renamed_columns(small_frame_fit) -> None:
    model, features, covariates = small_frame_fit
    renamed = features.rename(columns={"f3": "band_3"})
    with pytest.raises(EstimationError, match=r"columns differ .*'band_3' \(fit: 'f3'\)"):
        model.predict_cate(renamed, covariates)


def test_predict_cate_requires_the_fitted_covariates(small_frame_fit) -> None:
    model, features, covariates = small_frame_fit
    with pytest.raises(EstimationError, match="fitted with 2 covariates; pass the same"):
        model.predict_cate(features)
    cate, _, _ = model.predict_cate(features, covariates)
    np.testing.assert_allclose(cate, model.estimates_.cate, rtol=1e-12)


def test_same_seed_repeats_and_other_seed_differs() -> None:
    world = simulate(4, observational=False, n_units=300)
    args = (world["features"], world["treatment"], world["outcome"])
    first = estimate_effects(*args, n_estimators=40, n_jobs=1, random_state=7)
    again = estimate_effects(*args, n_estimators=40, n_jobs=1, random_state=7)
    other = estimate_effects(*args, n_estimators=40, n_jobs=1, random_state=8)
    np.testing.assert_array_equal(first.cate, again.cate)
    assert first.ate == again.ate
    assert not np.allclose(first.cate, other.cate)


def test_pca_reduces_wide_features() -> None:
    rng = np.random.default_rng(5)
    world = simulate(5, observational=False, n_units=300)
    wide = world["features"] @ rng.normal(size=(10, 64))  # 64 features spanning 10 dimensions
    fit = estimate_effects(wide, world["treatment"], world["outcome"], n_components=10, n_estimators=40)
    assert fit.model.pca_.n_components_ == 10
    assert fit.model.pca_.explained_variance_ratio_.sum() > 0.999


def test_grouped_cross_fitting_runs_with_clusters() -> None:
    world = simulate(6, observational=False, n_units=600)
    groups = np.random.default_rng(6).integers(0, 30, size=600)
    fit = estimate_effects(
        world["features"], world["treatment"], world["outcome"], groups=groups, n_estimators=40
    )
    assert fit.ate_lo <= world["tau"].mean() <= fit.ate_hi


def _bad_inputs(n: int = 200) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    return {
        "features": rng.normal(size=(n, 4)),
        "treatment": np.tile([0, 1], n // 2),
        "outcome": rng.normal(size=n),
    }


def _with(**changes):
    inputs = _bad_inputs()
    settings = changes.pop("settings", {})
    inputs.update(changes)
    return inputs, settings


def _nan_rows(values: np.ndarray, rows: list[int]) -> np.ndarray:
    values = values.copy()
    values[rows] = np.nan
    return values


BAD_INPUTS = {
    "constant treatment": (
        dict(features=np.zeros((2000, 3)), treatment=np.ones(2000), outcome=np.zeros(2000)),
        "treatment takes only the value 1 for all 2000 units; an effect needs both treated "
        "and control units",
    ),
    "nan outcome": (
        dict(outcome=_nan_rows(_bad_inputs()["outcome"], [4, 17, 42])),
        r"outcome has NaN or infinite values in 3 of 200 rows \(rows 4, 17, 42\)",
    ),
    "infinite outcome": (
        dict(outcome=np.where(np.arange(200) == 7, np.inf, 0.0)),
        r"outcome has NaN or infinite values in 1 of 200 rows \(rows 7\)",
    ),
    "non-binary treatment": (
        dict(treatment=np.tile([0, 1, 2, 1], 50)),
        r"treatment must be binary \(0 for control, 1 for treated\); got values 0, 1, 2",
    ),
    "outcome length": (
        dict(outcome=np.zeros(199)),
        r"one value per unit; got shapes \(200,\) and \(199,\)",
    ),
    "feature rows": (
        dict(features=np.zeros((150, 4))),
        "features has 150 rows but treatment has 200",
    ),
    "nan features": (
        dict(features=_nan_rows(_bad_inputs()["features"], [3])),
        r"features has NaN or infinite values in 1 rows \(rows 3\)",
    ),
    "1-d features": (dict(features=np.zeros(200)), r"features must be 2-D .* got shape \(200,\)"),
    "covariate rows": (
        dict(covariates=np.zeros((10, 2))),
        "covariates has 10 rows but features has 200",
    ),
    "propensity above 1": (
        dict(settings={"propensity": 1.5}),
        r"invalid estimator setting: propensity=1.5: Input should be less than 1",
    ),
    "propensity at 0": (
        dict(settings={"propensity": 0.0}),
        r"propensity=0.0: Input should be greater than 0",
    ),
    "propensity in observational": (
        dict(settings={"propensity": 0.5, "design": "observational"}),
        "propensity=0.5 is a trial's known assignment probability; with design='observational'",
    ),
    "unknown design": (dict(settings={"design": "quasi"}), "design='quasi': Input should be 'rct' or 'observational'"),
    "n_estimators": (dict(settings={"n_estimators": 402}), "multiple of 4 .* got 402. Use 400"),
    "groups length": (
        dict(groups=np.zeros(5)),
        r"groups has 5 labels but there are 200 units; give one label per unit",
    ),
    "tiny arm": (
        dict(treatment=np.r_[np.ones(3), np.zeros(197)]),
        "the smaller arm has 3 units, too few for 3-fold cross-fitting",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_raises_estimation_error(case: str) -> None:
    changes, message = BAD_INPUTS[case]
    inputs, settings = _with(**changes)
    with pytest.raises(EstimationError, match=message):
        estimate_effects(**inputs, **settings)


def test_ihdp_known_answer(data_dir) -> None:
    """IHDP replication 1 (Hill 2011; 747 children, 25 covariates, true ATE 4.016)."""
    table = np.loadtxt(data_dir / "known_answer" / "ihdp_npci_1.csv", delimiter=",")
    treatment, outcome, mu0, mu1, x = table[:, 0], table[:, 1], table[:, 3], table[:, 4], table[:, 5:]
    fit = estimate_effects(x, treatment, outcome, design="observational", n_components=None)
    metrics = compare_with_truth(fit, 4.016, mu1 - mu0)
    assert (mu1 - mu0).mean() == pytest.approx(4.016, abs=5e-4)
    # Gives 3.977 [3.710, 4.243] and root PEHE 0.51 (replications 1-5: errors -0.04 to -0.22).
    assert metrics["abs_ate_error"] < 0.3
    assert metrics["interval_covers_truth"]
    assert metrics["root_pehe"] < 0.8
