"""Average treatment effects with 95% intervals: weighting, doubly robust and DML.

Several estimators of the same ATE side by side, because they fail differently: the
difference in means is unbiased only in a trial; Hajek IPW (the estimator of the
``causalimages`` package) rests on the propensity alone; AIPW is consistent when either the
outcome or the propensity model is right (doubly robust); econml's LinearDML and DRLearner
are the same ideas with econml's cross-fitting and inference. All use the same folds, grouped
by a cluster key or spatial blocks (:mod:`models.crossfit`), and standard errors that sum
influence functions within clusters when ``groups`` are given.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.effects.checks import (
    as_matrix,
    check_groups,
    check_treatment_outcome,
    difference_in_means,
)
from eocausal.models.effects.crossfit import (
    Folds,
    Nuisances,
    cluster_se,
    crossfit_nuisances,
    make_folds,
    make_outcome_model,
)
from eocausal.models.effects.diagnostics import check_overlap, covariate_balance
from eocausal.models.effects.intervals import variance_label
from eocausal.models.effects.overlap import estimand_label
from eocausal.models.effects.propensity import KnownPropensity, make_propensity_model
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from threadpoolctl import threadpool_limits

from eocausal.errors import EstimationError

__all__ = ["ATE_METHODS", "AteEstimate", "AteReport", "aipw", "dim", "estimate_ate", "hajek_ipw"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

_Z95 = float(stats.norm.ppf(0.975))
ATE_METHODS = ("difference_in_means", "ipw", "aipw", "linear_dml", "dr_learner")


@dataclass(frozen=True)
class AteEstimate:
    """One estimate with its standard error and 95% interval, on ``n_used`` units.

    ``estimand``: what it estimates (``ATE``, ``ATE on the trimmed population ...``, or an
    overlap-weighted effect with its weights); ``variance``: what the interval rests on.
    """

    method: str
    estimate: float
    se: float
    lo: float
    hi: float
    n_used: int
    note: str = ""
    estimand: str = "ATE"
    variance: str = ""

    @classmethod
    def normal(cls, method: str, estimate: float, se: float, n_used: int, note: str = "", *,
               estimand: str = "ATE", variance: str = "") -> AteEstimate:
        """Estimate with a normal-approximation 95% interval."""
        return cls(method, float(estimate), float(se), float(estimate - _Z95 * se),
                   float(estimate + _Z95 * se), int(n_used), note, estimand, variance)


def dim(treatment: ArrayLike, outcome: ArrayLike, *, clusters: ArrayLike | None = None) -> AteEstimate:
    """Difference in means; Welch interval, or cluster-robust from its influence function.

    With clusters the influence function ``t (y - ybar1) / p1 - (1 - t)(y - ybar0) / p0``
    (``p1``, ``p0`` the arm shares) is summed within clusters: units that share an image or
    a village are not independent draws.
    """
    t, y = check_treatment_outcome(treatment, outcome)
    if clusters is None:
        r = difference_in_means(t, y)
        return AteEstimate("difference_in_means", r["estimate"], r["se"], r["lo"], r["hi"], t.size, "Welch")
    p1 = t.mean()
    m1, m0 = y[t == 1].mean(), y[t == 0].mean()
    phi = t * (y - m1) / p1 - (1 - t) * (y - m0) / (1 - p1)
    return AteEstimate.normal("difference_in_means", m1 - m0, cluster_se(phi, clusters), t.size,
                              "cluster-robust")


def hajek_ipw(
    treatment: ArrayLike, outcome: ArrayLike, propensity: ArrayLike, *,
    clusters: ArrayLike | None = None,
) -> AteEstimate:
    """Hajek (normalised) inverse propensity weighting estimator of the ATE.

    ``sum(t y / e) / sum(t / e) - sum((1-t) y / (1-e)) / sum((1-t) / (1-e))`` (Hajek 1971;
    Lunceford and Davidian 2004, eq. 3): the weights of each arm are normalised to sum to
    one, which keeps the estimate inside the outcome's range when some ``e`` are small.
    The standard error comes from the influence function
    ``n [w1 (y - mu1) / sum(w1) - w0 (y - mu0) / sum(w0)]`` with the propensity treated as
    known, which is conservative for a fitted propensity (Hirano, Imbens and Ridder 2003).
    """
    t = np.asarray(treatment, dtype=float)
    y, e = np.asarray(outcome, dtype=float), np.asarray(propensity, dtype=float)
    w1, w0 = t / e, (1 - t) / (1 - e)
    mu1, mu0 = np.sum(w1 * y) / w1.sum(), np.sum(w0 * y) / w0.sum()
    n = t.size
    phi = n * (w1 * (y - mu1) / w1.sum() - w0 * (y - mu0) / w0.sum())
    return AteEstimate.normal("ipw", mu1 - mu0, cluster_se(phi, clusters), n, _note(clusters))


def aipw(dr_scores: ArrayLike, *, clusters: ArrayLike | None = None) -> AteEstimate:
    """Augmented IPW (doubly robust) ATE: the mean of the AIPW scores.

    ``Gamma_i = mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0) / (1 - e)`` (Robins,
    Rotnitzky and Zhao 1994); with cross-fitted nuisances its standard error is that of a
    mean, ``sd(Gamma) / sqrt(n)`` (Chernozhukov et al. 2018, Theorem 5.1), clustered when
    ``clusters`` are given. Scores from :meth:`Nuisances.dr_scores`.
    """
    g = np.asarray(dr_scores, dtype=float)
    return AteEstimate.normal("aipw", g.mean(), cluster_se(g, clusters), g.size, _note(clusters))


def _note(clusters: ArrayLike | None) -> str:
    return "influence function" if clusters is None else "cluster-robust"


@dataclass(frozen=True, eq=False)
class AteReport:
    """Result of :func:`estimate_ate`: estimates, what trimming did, and diagnostics.

    ``estimates``: method name -> :class:`AteEstimate` (after trimming, when asked);
    ``trimming``: ``rule``, ``threshold``, ``n_affected``, ``n_used`` and ``before``/
    ``after`` ATE of IPW and AIPW (None without a rule); ``overlap``: see
    :func:`~models.diagnostics.overlap_summary`; ``balance``: standardised mean
    differences; ``nuisance_scores``: out-of-fold scores; ``nuisances``: the predictions.
    """

    estimates: dict[str, AteEstimate]
    design: str
    n_units: int
    trimming: dict[str, Any] | None
    overlap: dict[str, Any] | None
    balance: pd.DataFrame
    nuisance_scores: dict[str, float | None]
    nuisances: Nuisances = field(repr=False)
    used: NDArray[np.bool_] | None = field(default=None, repr=False)
    sensitivity: Any = None

    def table(self) -> pd.DataFrame:
        """One row per method: estimate, se, lo, hi, n_used, note."""
        return pd.DataFrame([asdict(e) for e in self.estimates.values()]).set_index("method")

    def summary(self) -> dict[str, Any]:
        """Plain values for ``summary.json`` (histograms and balance included)."""
        return {"design": self.design, "n_units": self.n_units,
                "estimates": {k: asdict(v) for k, v in self.estimates.items()},
                "trimming": self.trimming, "overlap": self.overlap,
                "max_abs_smd_before": _max_abs(self.balance["smd_before"]),
                "max_abs_smd_after": _max_abs(self.balance["smd_after"]),
                "nuisance_scores": self.nuisance_scores,
                "sensitivity": None if self.sensitivity is None else self.sensitivity.summary()}


def _max_abs(values: pd.Series) -> float | None:
    v = np.abs(values.to_numpy(dtype=float))
    return float(np.nanmax(v)) if np.isfinite(v).any() else None


def _dml_ate(
    method: str, X: NDArray[np.float64], t: NDArray[np.int64], y: NDArray[np.float64], *,
    folds: Folds, propensity: float | None, outcome_model: str, propensity_model: str,
    clusters: NDArray[Any] | None, random_state: int | None,
) -> AteEstimate:
    """Constant-effect ATE from econml's LinearDML (partialling out) or LinearDRLearner.

    The images and covariates enter as controls ``W`` (``X=None``), so the final stage is an
    intercept: DML's residual-on-residual slope (Robinson 1988; Chernozhukov et al. 2018),
    or the mean of DRLearner's doubly robust pseudo-outcomes. econml's intervals are
    heteroskedasticity-robust (HC0); with clusters they are recomputed here from the cached
    residuals or pseudo-outcomes.
    """
    from econml.dml import LinearDML
    from econml.dr import LinearDRLearner

    rs = random_state
    model_y = make_outcome_model(outcome_model, rs)
    model_t = KnownPropensity(propensity) if propensity is not None else make_propensity_model(rs, kind=propensity_model)
    cv = [(tr, te) for tr, te in folds]
    with threadpool_limits(1, user_api="openmp"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Co-variance matrix is underdetermined.*")
        if method == "linear_dml":
            est = LinearDML(model_y=model_y, model_t=model_t, discrete_treatment=True, cv=cv,
                            random_state=rs)
        else:
            est = LinearDRLearner(model_regression=model_y, model_propensity=model_t, cv=cv,
                                  min_propensity=1e-3, random_state=rs)
        est.fit(y, t, X=None, W=X, cache_values=True)
    inf = est.ate_inference()
    estimate, se = float(np.ravel(inf.mean_point)[0]), float(np.ravel(inf.stderr_mean)[0])
    note = "HC0"
    if clusters is not None:
        phi = _dml_influence(est, method, estimate, X)
        if phi is not None:
            se, note = cluster_se(phi, clusters), "cluster-robust"
    estimand = "ATE"
    if method == "linear_dml":
        estimand = _overlap_weighted_label(est, propensity)
    return AteEstimate.normal(method, estimate, se, t.size, note, estimand=estimand)


def _overlap_weighted_label(est: Any, propensity: float | None) -> str:
    """LinearDML without X weights units by ``e (1 - e)``: name it and say how unequal they are."""
    if propensity is not None:
        return "ATE (constant assignment probability: the e(1-e) weights are equal)"
    try:
        _, t_res, _, _ = est.residuals_
        e = 1 - np.abs(np.ravel(t_res))  # |t - e| is 1 - e for treated, e for controls
    except AttributeError:
        return "overlap-weighted effect (weights e(1-e)), not the ATE"
    w = np.clip(np.abs(np.ravel(t_res)) * e, 0, None)
    ess = float(w.sum() ** 2 / np.sum(w**2)) if w.sum() > 0 else 0.0
    return (f"overlap-weighted effect, not the ATE: units weighted by e(1-e) (Li, Morgan and "
            f"Zaslavsky 2018), effective sample {ess:.0f} of {w.size}")


def _dml_influence(est: Any, method: str, estimate: float, X: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Influence function values from econml's cached first stage, None if unavailable."""
    cached = getattr(est, "_cached_values", None)  # econml keeps these when cache_values=True
    if cached is None or cached.W is None or not np.array_equal(cached.W, X):
        return None  # rows reordered or API changed: keep econml's HC0 error
    if method == "linear_dml":
        y_res, t_res = (np.ravel(v) for v in cached.nuisances)
        return t_res * (y_res - estimate * t_res) / np.mean(t_res**2)
    y_pred = np.asarray(cached.nuisances[0]).reshape(X.shape[0], -1)
    return y_pred[:, 1] - y_pred[:, 0]


def _trim_mask(e: NDArray[np.float64], trim: float | None) -> NDArray[np.bool_]:
    if trim is None:
        return np.ones(e.shape, dtype=bool)
    return (e >= trim) & (e <= 1 - trim)


def _check_threshold(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and 0 < value < 0.5):
        raise EstimationError(f"{name} must be a float in (0, 0.5), such as 0.05; got {value!r}.")


def estimate_ate(
    X: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *, design: str = "observational",
    propensity: float | None = None, methods: tuple[str, ...] | list[str] = ATE_METHODS,
    cv: int = 5, groups: ArrayLike | None = None, trim: float | None = None,
    clip: float | None = None, outcome_model: str = "gbm", propensity_model: str = "gbm",
    check: bool = True, random_state: int | None = 0, groups_name: str = "groups",
) -> AteReport:
    """ATE by several estimators on shared cross-fitted nuisances, with diagnostics.

    Parameters
    ----------
    X : array-like or DataFrame of shape (n_units, n_columns)
        Image features (reduced as you like) joined with covariates; the propensity and
        outcome models use all columns.
    treatment, outcome : array-like of shape (n_units,)
    design : {"rct", "observational"}, default="observational"
        In a trial the propensity is ``propensity`` (or the treated share), not fitted.
    propensity : float, default=None
        Known assignment probability of a trial.
    methods : sequence of str, default=all of ``ATE_METHODS``
    cv : int, default=5
        Cross-fitting folds.
    groups : array-like of shape (n_units,), default=None
        Cluster labels (image keys, :func:`~models.crossfit.spatial_blocks`): folds are
        grouped and standard errors clustered by them.
    trim : float, default=None
        Drop units whose propensity lies outside ``[trim, 1 - trim]`` before estimating
        (Crump et al. 2009); the target becomes the ATE on the overlap population.
    clip : float, default=None
        Bound propensities to ``[clip, 1 - clip]`` in IPW and AIPW, keeping every unit.
    outcome_model : {"gbm", "linear"}, default="gbm"
    propensity_model : {"gbm", "logistic"}, default="gbm"
    check : bool, default=True
        Raise when the arms do not overlap, warn :class:`~models.diagnostics.OverlapWarning`
        when they overlap poorly; run on the units left after trimming (or on the clipped
        propensities), so that trimming can fix what it is meant to fix.
    random_state : int or None, default=0
    groups_name : str, default="groups"
        The column ``groups`` came from, named in messages and in each ``variance``.

    Returns
    -------
    report : AteReport

    Raises
    ------
    EstimationError
        For invalid inputs, an unknown method (the message lists the valid ones), both
        ``trim`` and ``clip``, or no overlap.
    """
    unknown = [m for m in methods if m not in ATE_METHODS]
    if unknown or not methods:
        raise EstimationError(f"unknown ATE method(s) {unknown}; choose from {', '.join(ATE_METHODS)}.")
    if design not in ("rct", "observational"):
        raise EstimationError(f"design must be 'rct' or 'observational'; got {design!r}.")
    if design == "observational" and propensity is not None:
        raise EstimationError(f"propensity={propensity} is a trial's known assignment probability; "
                              "with design='observational' drop it.")
    if trim is not None and clip is not None:
        raise EstimationError("give trim or clip, not both: trim drops units, clip keeps them.")
    _check_threshold("trim", trim)
    _check_threshold("clip", clip)
    t, y = check_treatment_outcome(treatment, outcome)
    M, names = as_matrix(X, "X", t.size)
    clusters = check_groups(groups, groups_name, t.size, treatment=t)
    known = (float(t.mean()) if propensity is None else float(propensity)) if design == "rct" else None
    folds = make_folds(t, cv=cv, groups=clusters, random_state=random_state)
    nu = crossfit_nuisances(M, t, y, folds=folds, propensity=known, outcome_model=outcome_model,
                            propensity_model=propensity_model, random_state=random_state)
    keep = _trim_mask(nu.e, trim)
    c = clip or 0.0
    n_t, n_c = int(t[keep].sum()), int((1 - t[keep]).sum())
    if min(n_t, n_c) < 2:
        raise EstimationError(
            f"trim={trim} removes {int((~keep).sum())} of {t.size} units and leaves {n_t} treated "
            f"and {n_c} control (estimated propensities range {nu.e.min():.2g}-{nu.e.max():.2g}); "
            "lower trim, or restrict the units to a region where both arms occur.")
    e_checked = np.clip(nu.e[keep], c, 1 - c) if c else nu.e[keep]
    overlap = check_overlap(t[keep], e_checked) if (check and known is None) else None
    balance = covariate_balance(M, t, None if known is not None else nu.e, names=names)
    n_affected = int((~keep).sum()) if trim is not None else int(((nu.e < c) | (nu.e > 1 - c)).sum())
    rule = "trim" if trim is not None else "clip" if clip is not None else None
    estimand = estimand_label(rule, trim or clip, n_affected, int(keep.sum()), t.size)
    variance = variance_label(None if clusters is None else clusters[keep], groups_name)

    def weighted(mask: NDArray[np.bool_], clip_at: float) -> dict[str, AteEstimate]:
        e = np.clip(nu.e[mask], clip_at, 1 - clip_at) if clip_at else nu.e[mask]
        cl = None if clusters is None else clusters[mask]
        scores = nu.dr_scores(t, y, clip=clip_at)[mask]
        return {"ipw": hajek_ipw(t[mask], y[mask], e, clusters=cl), "aipw": aipw(scores, clusters=cl)}

    trimming = None
    after = weighted(keep, c)
    if trim is not None or clip is not None:
        before = weighted(np.ones(t.size, dtype=bool), 0.0)
        trimming = {"rule": rule, "threshold": trim or clip, "n_affected": n_affected,
                    "n_used": int(keep.sum()), "estimand": estimand,
                    "before": {k: v.estimate for k, v in before.items()},
                    "after": {k: v.estimate for k, v in after.items()}}
        logger.info("%s at %s affected %d units: %s", rule, trimming["threshold"], n_affected, trimming)
    estimates: dict[str, AteEstimate] = {}
    for method in methods:
        cl = None if clusters is None else clusters[keep]
        if method == "difference_in_means":
            est = dim(t[keep], y[keep], clusters=cl)
            label = estimand if known is not None else "difference in means (no adjustment; the ATE only in a trial)"
        elif method in after:
            est, label = after[method], estimand
        else:
            sub = folds if trim is None else make_folds(t[keep], cv=cv, groups=cl, random_state=random_state)
            est = _dml_ate(method, M[keep], t[keep], y[keep], folds=sub,
                           propensity=known, outcome_model=outcome_model,
                           propensity_model=propensity_model, clusters=cl,
                           random_state=random_state)
            label = est.estimand if est.estimand != "ATE" else estimand
            if method == "linear_dml" and trim is not None and n_affected and known is None:
                label = f"{est.estimand}, on the trimmed population ({int(keep.sum())} of {t.size} units)"
        var = variance if cl is not None or est.note != "Welch" else "Welch (units independent)"
        if cl is None and est.note == "HC0":
            var = "heteroskedasticity-robust (HC0), units independent"
        estimates[method] = replace(est, estimand=label, variance=var)
    sensitivity = None
    if known is None:
        from eocausal.models.effects.sensitivity import dr_sensitivity_params, sensitivity_result

        e_s = np.clip(nu.e[keep], max(c, 1e-3), 1 - max(c, 1e-3))
        params = dr_sensitivity_params(t[keep], y[keep], nu.mu0[keep], nu.mu1[keep], e_s)
        try:
            sensitivity = sensitivity_result(params, estimand="AIPW " + ("ATE" if estimand == "ATE" else "estimate"))
        except ValueError as exc:  # negative nu: propensities too poorly calibrated for bounds
            logger.warning("no sensitivity bounds: %s", exc)
    return AteReport(estimates=estimates, design=design, n_units=int(t.size), trimming=trimming,
                     overlap=overlap, balance=balance, nuisance_scores=dict(nu.scores), nuisances=nu,
                     used=keep, sensitivity=sensitivity)
