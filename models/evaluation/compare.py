"""Evaluate CATE methods on one study: RATE, calibration, GATES, and a comparison table.

Heterogeneity claims need held-out checks: a CATE model always "finds" variation on the
units it was fitted to. So priorities here are predictions for each fold from the method
refitted on the other folds, and the doubly robust scores come from nuisances cross-fitted
on the same folds (grouped by image key or spatial block when given). RATE
(:mod:`models.rate`), BLP and GATES (:mod:`models.calibration`) then judge those
priorities, and :func:`compare_methods` lines methods up in one table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.effects import cate as cate_methods
from eocausal.models.effects.checks import check_groups, check_treatment_outcome
from eocausal.models.effects.crossfit import Folds, crossfit_nuisances, make_folds
from eocausal.models.effects.estimate import EffectModel
from eocausal.models.effects.overlap import plan_overlap
from eocausal.models.effects.settings import DEFAULT_SETTINGS as _D
from eocausal.models.evaluation.calibration import BlpResult, GatesResult, blp_test, gates
from eocausal.models.evaluation.rate import DEFAULT_Q, RateResult, rank_average_treatment_effect
from eocausal.models.evaluation.truth import compare_with_truth
from numpy.typing import ArrayLike, NDArray

from eocausal.errors import EstimationError

__all__ = ["HeterogeneityReport", "compare_methods", "crossfit_cate", "evaluate_heterogeneity",
           "judge_priorities"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True, eq=False)
class HeterogeneityReport:
    """Held-out evaluation of one CATE method.

    ``priorities``: out-of-fold CATE of every unit; ``dr_scores``: cross-fitted AIPW scores;
    ``autoc``, ``qini``: :class:`~models.rate.RateResult`; ``blp``, ``gates``: calibration;
    ``nuisance_scores``: out-of-fold scores of the nuisance models; ``used``: mask of the
    input units evaluated (after trimming); ``folds``: the folds over those units;
    ``variance``: what the RATE and the BLP/GATES errors rest on (clustered with groups).
    """

    method: str
    priorities: NDArray[np.float64]
    dr_scores: NDArray[np.float64]
    autoc: RateResult
    qini: RateResult
    blp: BlpResult | None
    gates: GatesResult | None
    nuisance_scores: dict[str, float | None]
    used: NDArray[np.bool_] | None = None
    folds: Folds | None = None
    variance: dict[str, str] | None = None

    def summary(self) -> dict[str, Any]:
        """Plain values for ``summary.json``."""
        blp = None if self.blp is None else {
            "ate": self.blp.ate, "ate_se": self.blp.ate_se, "slope": self.blp.slope,
            "slope_se": self.blp.slope_se, "slope_pvalue": self.blp.slope_pvalue}
        return {"method": self.method, "rate_autoc": self.autoc.summary(),
                "rate_qini": self.qini.summary(), "blp": blp,
                "gates": None if self.gates is None else {
                    "table": self.gates.table.to_dict(orient="list"),
                    "difference": self.gates.difference},
                "nuisance_scores": self.nuisance_scores, "variance": self.variance}


def _seed(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, Integral):
        return random_state
    return int(np.random.RandomState(random_state).randint(2**31))


def crossfit_cate(
    method: str, settings: EffectModel, X: NDArray[np.float64], t: NDArray[np.int64],
    y: NDArray[np.float64], *, folds: Folds, groups: NDArray[Any] | None = None,
    propensity: float | None = None,
) -> NDArray[np.float64]:
    """Out-of-fold CATE: each fold predicted by ``method`` fitted on the other folds.

    ``settings`` supplies the learner's settings (an :class:`EffectModel`); ``X`` is the
    design matrix already built from features and covariates.
    """
    priorities = np.full(t.size, np.nan)
    for train, test in folds:
        sub_groups = None if groups is None else groups[train]
        est = cate_methods.fit_cate(method, settings, X[train], t[train], y[train], sub_groups, propensity)
        priorities[test] = np.ravel(est.effect(X[test]))
    return priorities


def _prepare(settings: EffectModel, features: ArrayLike, treatment: ArrayLike, outcome: ArrayLike,
             covariates: ArrayLike | None, groups: ArrayLike | None,
             groups_name: str = "groups") -> tuple[Any, ...]:
    """Design matrix, trimmed as in the fit, with grouped folds and cross-fitted nuisances."""
    settings._check_settings()
    t, y = check_treatment_outcome(treatment, outcome)
    X = settings._design_matrix(features, covariates, t.size)
    g = check_groups(groups, groups_name, t.size, treatment=t)
    plan = plan_overlap(X, t, design=settings.design, trim=settings.trim, clip=settings.clip,
                        cv=settings.cv, groups=g, random_state=_seed(settings.random_state),
                        check=False, min_arm=2 * settings.cv)
    X, t, y = X[plan.keep], t[plan.keep], y[plan.keep]
    g = None if g is None else g[plan.keep]
    known = None
    if settings.design == "rct":
        known = float(t.mean()) if settings.propensity is None else float(settings.propensity)
    folds = make_folds(t, cv=settings.cv, groups=g, random_state=_seed(settings.random_state))
    nu = crossfit_nuisances(X, t, y, folds=folds, propensity=known, random_state=_seed(settings.random_state))
    return t, y, X, g, known, folds, nu, settings.clip or 0.0, plan.keep


def _judge(method: str, priorities: NDArray[np.float64], scores: NDArray[np.float64],
           groups: NDArray[Any] | None, nuisance_scores: dict[str, float | None], *,
           n_bootstrap: int, n_groups: int, q: ArrayLike, random_state: Any) -> HeterogeneityReport:
    rate = {target: rank_average_treatment_effect(
        scores, priorities, target=target, q=q, n_bootstrap=n_bootstrap, clusters=groups,
        random_state=_seed(random_state)) for target in ("AUTOC", "QINI")}
    varies = np.ptp(priorities) > 0
    return HeterogeneityReport(
        method=method, priorities=priorities, dr_scores=scores, autoc=rate["AUTOC"], qini=rate["QINI"],
        blp=blp_test(scores, priorities, clusters=groups) if varies else None,
        gates=gates(scores, priorities, n_groups=n_groups, clusters=groups) if varies else None,
        nuisance_scores=nuisance_scores)


def evaluate_heterogeneity(
    features: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *,
    covariates: ArrayLike | None = None, method: str = "causal_forest", design: str = "rct",
    propensity: float | None = None, groups: ArrayLike | None = None, cv: int = 3,
    n_components: int | None = _D.n_components, n_estimators: int = _D.n_estimators,
    min_samples_leaf: int = _D.min_samples_leaf, max_samples: float | str = _D.max_samples,
    degree: int = 1, n_bootstrap: int = 200, n_groups: int = 5, q: ArrayLike = DEFAULT_Q,
    n_jobs: int | None = -1, random_state: int | None = 0, trim: float | None = _D.trim,
    clip: float | None = _D.clip, groups_name: str = "groups",
) -> HeterogeneityReport:
    """RATE (AUTOC, Qini), BLP and GATES of ``method``'s held-out CATE on one study.

    Features are scaled and reduced as in :class:`~models.estimate.EffectModel` (PCA is
    unsupervised, so fitting it on every unit leaks no outcome). ``cv`` folds (grouped by
    ``groups``) give both the out-of-fold priorities and the cross-fitted AIPW scores; the
    method's own nuisance cross-fitting runs inside each training split. ``n_bootstrap`` is
    the number of half-sample replicates of the RATE errors (clustered by ``groups``, as are
    the BLP and GATES errors). Observational designs are trimmed (or clipped) first, as in
    :class:`~models.effects.estimate.EffectModel`, so every metric is on the fitted population.
    ``features=None`` evaluates the covariates alone.

    Returns
    -------
    report : HeterogeneityReport

    Raises
    ------
    EstimationError
        For invalid inputs or settings, as :func:`~models.estimate.estimate_effects`.
    """
    settings = EffectModel(design=design, propensity=propensity, method=method,
                           n_components=n_components, n_estimators=n_estimators,
                           min_samples_leaf=min_samples_leaf, max_samples=max_samples, cv=cv,
                           n_jobs=n_jobs, random_state=random_state, degree=degree, trim=trim,
                           clip=clip)
    t, y, X, g, known, folds, nu, clip, keep = _prepare(settings, features, treatment, outcome,
                                                        covariates, groups, groups_name)
    priorities = crossfit_cate(method, settings, X, t, y, folds=folds, groups=g, propensity=known)
    report = _judge(method, priorities, nu.dr_scores(t, y, clip=clip), g, dict(nu.scores),
                    n_bootstrap=n_bootstrap, n_groups=n_groups, q=q, random_state=random_state)
    return replace(report, used=keep, folds=folds, variance=_variance(g, groups_name))


def _variance(groups: NDArray[Any] | None, name: str) -> dict[str, str]:
    if groups is None:
        return {"rate": "half-sample bootstrap over units", "blp_gates": "heteroskedasticity-robust (HC1)"}
    n = np.unique(groups).size
    return {"rate": f"half-sample bootstrap over {n} clusters ({name})",
            "blp_gates": f"cluster-robust (CR1), {n} clusters ({name})"}


def judge_priorities(
    method: str, priorities: ArrayLike, reference: HeterogeneityReport, *,
    groups: ArrayLike | None = None, n_bootstrap: int = 200, n_groups: int = 5,
    q: ArrayLike = DEFAULT_Q, random_state: int | None = 0,
) -> HeterogeneityReport:
    """RATE, BLP and GATES of other held-out priorities against ``reference``'s scores.

    ``priorities`` are for ``reference``'s units (its ``used`` mask, in order) and must be
    out-of-fold on its ``folds``; ``groups`` are those units' cluster labels. Lets several
    models (feature sets, learners) be judged by one set of doubly robust scores.
    """
    p = np.asarray(priorities, dtype=float)
    if p.shape != reference.dr_scores.shape:
        raise EstimationError(f"priorities have shape {p.shape}; the reference scores "
                              f"{reference.dr_scores.shape}. Predict the reference's units.")
    g = None if groups is None else np.asarray(groups)
    report = _judge(method, p, reference.dr_scores, g, dict(reference.nuisance_scores),
                    n_bootstrap=n_bootstrap, n_groups=n_groups, q=q, random_state=random_state)
    return replace(report, used=reference.used, folds=reference.folds, variance=reference.variance)


def compare_methods(
    features: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *,
    methods: list[str] | tuple[str, ...] = ("causal_forest", "dr_learner", "linear_dml", "t_learner"),
    covariates: ArrayLike | None = None, design: str = "rct", propensity: float | None = None,
    groups: ArrayLike | None = None, cv: int = _D.cv, n_components: int | None = _D.n_components,
    n_estimators: int = _D.n_estimators, min_samples_leaf: int = _D.min_samples_leaf,
    max_samples: float | str = _D.max_samples, degree: int = _D.degree, n_bootstrap: int = 200,
    evaluate: bool = True, true_cate: ArrayLike | None = None, n_jobs: int | None = -1,
    random_state: int | None = 0, trim: float | None = _D.trim, clip: float | None = _D.clip,
    groups_name: str = "groups",
) -> pd.DataFrame:
    """One row per method: ATE with interval, RATE (AUTOC, Qini) and calibration slope.

    The ATE is each method's fit on all units (:func:`~models.estimate.estimate_effects`);
    the heterogeneity columns come from held-out priorities judged against AIPW scores
    cross-fitted once, on the same folds, for every method. With ``true_cate`` (simulations,
    IHDP) the table adds ``ate_error``, ``covers``, ``root_pehe`` and ``spearman``.

    Returns
    -------
    table : DataFrame
        Index ``method``; columns ``ate``, ``ate_lo``, ``ate_hi``, ``ate_se``,
        ``ate_source``, ``cate_interval``, and with ``evaluate``: ``autoc``, ``autoc_se``,
        ``qini``, ``qini_se``, ``blp_slope``, ``blp_slope_se``, ``gates_top_minus_bottom``.

    Raises
    ------
    EstimationError
        For an empty list, an unknown method (the message lists valid names) or bad inputs.
    """
    if not methods:
        raise EstimationError(f"methods is empty; choose from {', '.join(cate_methods.CATE_METHODS)}.")
    for m in methods:
        cate_methods.check_method(m)
    common = dict(design=design, propensity=propensity, n_components=n_components,
                  n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                  max_samples=max_samples, cv=cv, n_jobs=n_jobs, random_state=random_state,
                  degree=degree, trim=trim, clip=clip)
    prepared = None
    rows = []
    for method in methods:
        settings = EffectModel(method=method, **common)
        fit = settings.fit(features, treatment, outcome, covariates=covariates, groups=groups,
                           groups_name=groups_name).estimates_
        row: dict[str, Any] = {"method": method, "ate": fit.ate, "ate_lo": fit.ate_lo,
                               "ate_hi": fit.ate_hi, "ate_se": fit.ate_se,
                               "ate_source": fit.ate_source, "cate_interval": fit.cate_interval,
                               "estimand": fit.estimand, "variance": fit.variance}
        if true_cate is not None:
            truth = np.asarray(true_cate, dtype=float)
            m = compare_with_truth(fit, float(truth[fit.used].mean()), truth)
            row.update(ate_error=m["ate_error"], covers=m["interval_covers_truth"],
                       root_pehe=m["root_pehe"], spearman=m["spearman_cate"])
        if evaluate:
            if prepared is None:
                prepared = _prepare(settings, features, treatment, outcome, covariates, groups,
                                    groups_name)
            t, y, X, g, known, folds, nu, clip, _ = prepared
            priorities = crossfit_cate(method, settings, X, t, y, folds=folds, groups=g, propensity=known)
            report = _judge(method, priorities, nu.dr_scores(t, y, clip=clip), g, dict(nu.scores),
                            n_bootstrap=n_bootstrap, n_groups=5, q=DEFAULT_Q, random_state=random_state)
            row.update(autoc=report.autoc.estimate, autoc_se=report.autoc.se,
                       qini=report.qini.estimate, qini_se=report.qini.se,
                       blp_slope=None if report.blp is None else report.blp.slope,
                       blp_slope_se=None if report.blp is None else report.blp.slope_se,
                       gates_top_minus_bottom=None if report.gates is None else report.gates.difference["estimate"])
        logger.info("compared %s: %s", method, row)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
