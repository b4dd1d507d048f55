"""Registry of per-unit effect (CATE) learners, each an econml estimator with settings.

One table says, for every method, how to build the econml estimator, what its per-unit
intervals rest on, and where its ATE comes from, so :class:`models.estimate.EffectModel`
fits any of them the same way and a comparison across methods (:mod:`models.compare`) is a
loop over names. Nothing is re-implemented here: the learners are econml's.

================== ================================ ===================== ==================
method             econml estimator                 per-unit interval     headline ATE
================== ================================ ===================== ==================
causal_forest      CausalForestDML                  bootstrap of little   forest's doubly
                                                    bags (BLB)            robust scores
linear_dml         LinearDML (+ featurizer)         statsmodels (HC0)     AIPW
dr_learner         LinearDRLearner (+ featurizer)   statsmodels (HC0)     AIPW
forest_dr_learner  ForestDRLearner                  BLB                   AIPW
x_learner          XLearner                         bootstrap or none     AIPW
t_learner          TLearner                         bootstrap or none     AIPW
s_learner          SLearner                         bootstrap or none     AIPW
================== ================================ ===================== ==================

Every headline ATE is the mean of a doubly robust score, with an influence-function error
clustered by ``groups`` when given (:mod:`models.effects.intervals`). "forest's doubly robust
scores" are econml's own (out-of-bag CATE plus the residual correction), so the point estimate
is ``ate_`` but the error is clustered; "AIPW" is the cross-fitted doubly robust score of
:func:`models.ate.aipw` on the same folds (econml's ``ate_inference`` for a forest is a
conservative bound, the mean of per-unit variances, and ignores clusters). LinearDML's own
score (the same construction from its residuals, with a linear ``theta(x)``) covered the
true ATE in 7 of 9 IHDP replications against 9 of 9 for AIPW, so its headline is AIPW.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from eocausal.models.effects.propensity import (
    ClippedPropensity,
    KnownPropensity,
    make_propensity_model,
)
from eocausal.models.effects.settings import CATE_METHOD_NAMES, forest_max_samples
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.preprocessing import PolynomialFeatures
from threadpoolctl import threadpool_limits

from eocausal.errors import EstimationError

__all__ = ["CATE_METHODS", "CateMethod", "cate_ate", "check_method", "fit_cate", "predict_cate"]


@dataclass(frozen=True)
class CateMethod:
    """How one CATE method is fitted and what its intervals and ATE rest on."""

    name: str
    interval: str  # "blb", "statsmodels", "bootstrap"
    ate_source: str  # "causal_forest" or "aipw" (see the module table)
    uses_groups: bool  # econml cross-fits nuisances, so groups shape its folds


CATE_METHODS: dict[str, CateMethod] = {m.name: m for m in (
    CateMethod("causal_forest", "blb", "causal_forest", True),
    CateMethod("linear_dml", "statsmodels", "aipw", True),
    CateMethod("dr_learner", "statsmodels", "aipw", True),
    CateMethod("forest_dr_learner", "blb", "aipw", True),
    CateMethod("x_learner", "bootstrap", "aipw", False),
    CateMethod("t_learner", "bootstrap", "aipw", False),
    CateMethod("s_learner", "bootstrap", "aipw", False),
)}


assert tuple(CATE_METHODS) == CATE_METHOD_NAMES, "settings.CATE_METHOD_NAMES must list the registry"


def check_method(method: Any) -> CateMethod:
    """The registry entry of ``method``, else EstimationError listing the valid names."""
    if not isinstance(method, str) or method not in CATE_METHODS:
        raise EstimationError(
            f"unknown method {method!r}; choose one of: {', '.join(CATE_METHODS)}."
        )
    return CATE_METHODS[method]


def _outcome_model(random_state: Any) -> HistGradientBoostingRegressor:
    """Gradient boosting with early stopping: stops early when the outcome has little signal."""
    return HistGradientBoostingRegressor(learning_rate=0.05, max_iter=300, min_samples_leaf=20,
                                         early_stopping=True, validation_fraction=0.15,
                                         n_iter_no_change=20, random_state=random_state)


def _build(method: str, settings: Any, propensity: float | None, n_units: int) -> Any:
    """The unfitted econml estimator of ``method`` (econml imported lazily: it is slow)."""
    from econml.dml import CausalForestDML, LinearDML
    from econml.dr import ForestDRLearner, LinearDRLearner
    from econml.metalearners import SLearner, TLearner, XLearner

    rs = settings.random_state
    model_y = _outcome_model(rs)
    clip = getattr(settings, "clip", None)
    model_t = KnownPropensity(propensity) if propensity is not None else make_propensity_model(rs)
    if propensity is None and clip is not None:
        model_t = ClippedPropensity(model_t, clip)
    min_propensity = 1e-3 if clip is None else clip
    forest = {"n_estimators": settings.n_estimators, "min_samples_leaf": settings.min_samples_leaf,
              "max_samples": forest_max_samples(getattr(settings, "max_samples", "auto"), n_units),
              "n_jobs": settings.n_jobs, "random_state": rs}
    featurizer = (PolynomialFeatures(settings.degree, include_bias=False)
                  if settings.degree > 1 else None)
    if method == "causal_forest":
        return CausalForestDML(model_y=model_y, model_t=model_t, discrete_treatment=True,
                               cv=settings.cv, **forest)
    if method == "linear_dml":
        return LinearDML(model_y=model_y, model_t=model_t, discrete_treatment=True,
                         featurizer=featurizer, cv=settings.cv, random_state=rs)
    if method == "dr_learner":
        # LinearDRLearner, not DRLearner with a linear final model: only the former gets
        # econml's linear inference, whose ATE error is exact (DRLearner's is a loose bound).
        return LinearDRLearner(model_regression=model_y, model_propensity=model_t,
                               featurizer=featurizer, min_propensity=min_propensity,
                               cv=settings.cv, random_state=rs)
    if method == "forest_dr_learner":
        return ForestDRLearner(model_regression=model_y, model_propensity=model_t,
                               min_propensity=min_propensity, cv=settings.cv, **forest)
    if method == "t_learner":
        return TLearner(models=model_y)
    if method == "s_learner":
        return SLearner(overall_model=model_y)
    return XLearner(models=model_y, propensity_model=model_t)


def fit_cate(
    method: str, settings: Any, X: NDArray[np.float64], t: NDArray[np.int64],
    y: NDArray[np.float64], groups: NDArray[Any] | None, propensity: float | None,
) -> Any:
    """Build and fit the econml estimator of ``method``.

    ``settings`` carries ``n_estimators``, ``min_samples_leaf``, ``max_samples``, ``cv``, ``n_jobs``,
    ``random_state``, ``degree`` (featurizer of the linear methods) and ``n_bootstrap``
    (bootstrap intervals of the metalearners; 0: none, as each replicate refits the
    learner). OpenMP threads of the boosted nuisances are limited to one: with ~20 columns
    thread synchronisation costs more than the split search (13x slower with two threads
    on a loaded 2-core machine).

    Raises
    ------
    EstimationError
        If a cross-fitting fold holds only one arm.
    """
    spec = check_method(method)
    est = _build(method, settings, propensity, len(X))
    kwargs: dict[str, Any] = {"X": X}
    if spec.uses_groups and groups is not None:
        kwargs["groups"] = groups
    if method in ("causal_forest", "linear_dml"):
        kwargs["cache_values"] = True  # residuals for the doubly robust headline scores
    if spec.interval == "bootstrap" and settings.n_bootstrap > 0:
        from econml.inference import BootstrapInference

        kwargs["inference"] = BootstrapInference(n_bootstrap_samples=settings.n_bootstrap,
                                                 n_jobs=settings.n_jobs)
    try:
        with threadpool_limits(1, user_api="openmp"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Co-variance matrix is underdetermined.*")
            est.fit(y, t, **kwargs)
    except AttributeError as exc:  # econml's signal for a fold without one of the arms
        if "don't contain all treatments" not in str(exc):
            raise
        raise EstimationError(
            "a cross-fitting fold holds only treated or only control units; with groups, each of "
            f"the {settings.cv} folds needs groups from both arms. Use a smaller cv or finer groups."
        ) from exc
    return est


def has_intervals(method: str, settings: Any) -> bool:
    """Whether ``method`` with these settings gives per-unit intervals."""
    return check_method(method).interval != "bootstrap" or settings.n_bootstrap > 0


def predict_cate(
    est: Any, method: str, settings: Any, X: NDArray[np.float64], alpha: float = 0.05
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-unit effects and ``1 - alpha`` intervals (NaN where the method gives none)."""
    with threadpool_limits(1, user_api="openmp"):
        cate = np.ravel(est.effect(X)).astype(float)
        if not has_intervals(method, settings):
            nan = np.full(cate.shape, np.nan)
            return cate, nan, nan.copy()
        lo, hi = (np.ravel(v).astype(float) for v in est.effect_interval(X, alpha=alpha))
    return cate, lo, hi


def cate_ate(est: Any, method: str, X: NDArray[np.float64]) -> tuple[float, float] | None:
    """econml's own ATE and standard error (units independent), or None where it has none.

    Not the headline (that is a doubly robust mean with a clustered error, see the module
    table); kept to compare against: the causal forest's ``ate_``/``ate_stderr_``, and for
    the linear final stages ``ate_inference`` (mean of the featurised X times the coefficients).
    """
    check_method(method)
    if method == "causal_forest":
        return float(np.ravel(est.ate_)[0]), float(np.ravel(est.ate_stderr_)[0])
    if method in ("linear_dml", "dr_learner"):
        inf = est.ate_inference(X)
        return float(np.ravel(inf.mean_point)[0]), float(np.ravel(inf.stderr_mean)[0])
    return None


def nuisance_scores(est: Any, method: str, design: str) -> dict[str, float | None]:
    """econml's out-of-fold first-stage scores, averaged over folds (None where absent).

    ``outcome_r2`` for DML-type methods is the R2 of E[Y|X]; for the DR learners, of the
    regression on (X, T); ``treatment_accuracy`` only when the propensity was fitted.
    """
    def mean(values: Any) -> float | None:
        arr = np.asarray(values or [], dtype=float)
        return float(arr.mean()) if arr.size and np.isfinite(arr).all() else None

    y_scores = getattr(est, "nuisance_scores_y", None) or getattr(est, "nuisance_scores_regression", None)
    t_scores = getattr(est, "nuisance_scores_t", None) or getattr(est, "nuisance_scores_propensity", None)
    return {"outcome_r2": mean(y_scores),
            "treatment_accuracy": mean(t_scores) if design == "observational" else None}
