"""Cross-fitting that respects a study's structure, and the nuisance models it fits.

Doubly robust and weighting estimators need the outcome regressions ``mu0(x)``, ``mu1(x)``
and the propensity ``e(x)`` predicted for each unit by models that never saw it
(Chernozhukov et al. 2018, "Double/debiased machine learning"). When units share an image
(the Uganda trial: up to 54 units per image key) or sit next to each other, a random split
leaks: a model learns a village from its neighbours. So folds are grouped by a key or by
spatial blocks, and standard errors sum influence functions within clusters
(:func:`cluster_se`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from eocausal.models.effects.propensity import make_propensity_model
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import log_loss, r2_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from eocausal.errors import EstimationError

__all__ = [
    "Folds",
    "Nuisances",
    "cluster_se",
    "crossfit_nuisances",
    "crossfit_propensity",
    "make_folds",
    "make_outcome_model",
    "spatial_blocks",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Folds = list[tuple[NDArray[np.int64], NDArray[np.int64]]]


def spatial_blocks(x: ArrayLike, y: ArrayLike, block_size: float) -> NDArray[np.int64]:
    """Square-block ids from map coordinates, to use as cross-fitting groups.

    Units in one block share a fold, so nuisance models are always evaluated on places
    at least partly away from those they were trained on (spatial cross-validation; Roberts
    et al. 2017, Ecography). Use a block at least as large as the range of spatial
    autocorrelation of the outcome (often the chip footprint or a village's extent).

    Parameters
    ----------
    x, y : array-like of shape (n_units,)
        Projected coordinates (metres) of the units; degrees work, with a block size in degrees.
    block_size : float
        Side of a square block in the coordinates' units; must be positive.

    Returns
    -------
    blocks : ndarray of int64, shape (n_units,)
        Block ids numbered 0, 1, ... in order of first appearance.

    Raises
    ------
    EstimationError
        For a non-positive block size, coordinates of different lengths or NaN coordinates.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (isinstance(block_size, int | float) and math.isfinite(block_size) and block_size > 0):
        raise EstimationError(
            f"block_size must be a positive number in the coordinates' units; got {block_size!r}."
        )
    if xs.shape != ys.shape or xs.ndim != 1:
        raise EstimationError(
            f"x and y must be 1-D with one value per unit; got shapes {xs.shape} and {ys.shape}."
        )
    bad = ~(np.isfinite(xs) & np.isfinite(ys))
    if bad.any():
        raise EstimationError(
            f"coordinates are NaN or infinite for {int(bad.sum())} units (first rows "
            f"{np.flatnonzero(bad)[:5].tolist()}); fix or drop those units before blocking."
        )
    cells = np.stack([np.floor(xs / block_size), np.floor(ys / block_size)], axis=1)
    _, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber blocks by first appearance
    return order[inverse.ravel()].astype(np.int64)


def make_folds(
    treatment: ArrayLike, *, cv: int = 5, groups: ArrayLike | None = None,
    random_state: int | None = 0,
) -> Folds:
    """Cross-fitting folds, stratified by treatment and grouped when ``groups`` are given.

    Stratifying keeps both arms in every training split (the outcome model of each arm needs
    units of that arm); grouping keeps a cluster's units in one fold.

    Parameters
    ----------
    treatment : array-like of shape (n_units,)
        0/1 treatment.
    cv : int, default=5
        Number of folds, at least 2.
    groups : array-like of shape (n_units,), default=None
        Cluster labels (image keys, villages, :func:`spatial_blocks` ids).
    random_state : int or None, default=0
        Seed of the shuffled assignment of units (or groups) to folds.

    Returns
    -------
    folds : list of (train, test) index arrays

    Raises
    ------
    EstimationError
        If ``cv`` < 2, there are fewer groups than folds, or a training split lacks an arm.
    """
    t = np.asarray(treatment).astype(np.int64)
    if not isinstance(cv, int | np.integer) or cv < 2:
        raise EstimationError(f"cv must be an int of at least 2; got {cv!r}.")
    dummy = np.zeros((t.size, 1))
    if groups is None:
        n_arm = int(min(t.sum(), t.size - t.sum()))
        if n_arm < cv:
            raise EstimationError(
                f"the smaller arm has {n_arm} units, too few for {cv}-fold cross-fitting; "
                f"it needs at least {cv} treated and {cv} control units."
            )
        splits = StratifiedKFold(cv, shuffle=True, random_state=random_state).split(dummy, t)
    else:
        g = np.asarray(groups)
        if g.shape != t.shape:
            raise EstimationError(
                f"groups must give one label per unit ({t.size}); got shape {g.shape}."
            )
        n_groups = np.unique(g).size
        if n_groups < cv:
            raise EstimationError(
                f"groups has {n_groups} distinct labels, fewer than cv={cv} folds; use a "
                "smaller cv, finer groups or smaller spatial blocks."
            )
        splitter = StratifiedGroupKFold(cv, shuffle=True, random_state=random_state)
        splits = splitter.split(dummy, t, groups=g)
    folds = [(train.astype(np.int64), test.astype(np.int64)) for train, test in splits]
    for k, (train, _) in enumerate(folds):
        n_treated = int(t[train].sum())
        if n_treated in (0, train.size):
            raise EstimationError(
                f"the training split of fold {k} holds only {'treated' if n_treated else 'control'} "
                "units; with groups, every fold needs groups from both arms. Use a smaller cv or "
                "finer groups."
            )
    return folds


def make_outcome_model(kind: str = "gbm", random_state: int | None = 0) -> BaseEstimator:
    """Outcome regression for the nuisance ``mu_t(x)``.

    ``"gbm"``: histogram gradient boosting with early stopping (non-linear image effects, a
    few seconds on thousands of units); ``"linear"``: ridge with a cross-validated penalty on
    standardised inputs (small samples such as IHDP, where boosting overfits an arm of 100).
    """
    if kind == "gbm":
        return HistGradientBoostingRegressor(
            learning_rate=0.05, max_iter=300, min_samples_leaf=20, early_stopping=True,
            validation_fraction=0.15, n_iter_no_change=20, random_state=random_state,
        )
    if kind == "linear":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    raise EstimationError(f"unknown outcome model {kind!r}; choose 'gbm' or 'linear'.")


def cluster_se(influence: ArrayLike, clusters: ArrayLike | None = None) -> float:
    """Standard error of a mean estimator from its influence function values.

    Without clusters: ``sqrt(sum(phi_i^2)) / n`` for centred ``phi``. With clusters the
    ``phi_i`` are summed within each cluster first, so correlated units count as one draw
    (Liang and Zeger 1986; Cameron and Miller 2015), with the small-sample factor
    ``G / (G - 1)`` for ``G`` clusters.

    Parameters
    ----------
    influence : array-like of shape (n_units,)
        Influence function values ``phi_i`` of the estimator (centred here).
    clusters : array-like of shape (n_units,), default=None
        Cluster labels.

    Returns
    -------
    se : float
    """
    phi = np.asarray(influence, dtype=float)
    phi = phi - phi.mean()
    n = phi.size
    if clusters is None:
        return float(np.sqrt(np.sum(phi**2) * n / (n - 1)) / n)
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(codes.ravel(), weights=phi)
    g = sums.size
    if g < 2:
        raise EstimationError("cluster-robust standard errors need at least 2 clusters; got 1.")
    return float(np.sqrt(np.sum(sums**2) * g / (g - 1)) / n)


@dataclass(frozen=True, eq=False)
class Nuisances:
    """Out-of-fold nuisance predictions of one cross-fit.

    ``mu0``, ``mu1``: outcome regressions in each arm; ``e``: propensity (the known
    assignment probability in a trial); ``folds``: the (train, test) splits used;
    ``scores``: out-of-fold ``outcome_r2`` (factual outcome), ``propensity_auc`` and
    ``propensity_log_loss`` (None when the propensity is known).
    """

    mu0: NDArray[np.float64]
    mu1: NDArray[np.float64]
    e: NDArray[np.float64]
    folds: Folds
    propensity_known: bool
    scores: dict[str, float | None] = field(default_factory=dict)

    def dr_scores(self, treatment: ArrayLike, outcome: ArrayLike, *, clip: float = 0.0) -> NDArray[np.float64]:
        """AIPW scores ``mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0) / (1 - e)``.

        The doubly robust pseudo-outcome of Robins, Rotnitzky and Zhao (1994): its mean is
        the AIPW ATE, and grf's ``get_scores`` gives the same quantity for RATE.
        ``clip`` bounds ``e`` to ``[clip, 1 - clip]`` first.
        """
        t, y = np.asarray(treatment, dtype=float), np.asarray(outcome, dtype=float)
        e = np.clip(self.e, clip, 1 - clip) if clip > 0 else self.e
        return self.mu1 - self.mu0 + t * (y - self.mu1) / e - (1 - t) * (y - self.mu0) / (1 - e)


def crossfit_nuisances(
    X: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *, folds: Folds,
    propensity: float | None = None, outcome_model: str | BaseEstimator = "gbm",
    propensity_model: str | BaseEstimator = "gbm", random_state: int | None = 0,
) -> Nuisances:
    """Fit ``mu0``, ``mu1`` and ``e`` on each training split and predict the held-out fold.

    Separate outcome models per arm (a T-learner's regressions) let the effect vary freely
    with the images; the propensity is a classifier of treatment on the same inputs, or the
    known constant of a trial.

    Parameters
    ----------
    X : array-like of shape (n_units, n_columns)
        Image features (possibly reduced) and covariates.
    treatment : array-like of shape (n_units,)
    outcome : array-like of shape (n_units,)
    folds : list of (train, test) index arrays
        From :func:`make_folds`; every unit must be in exactly one test fold.
    propensity : float, default=None
        Known assignment probability; None fits ``propensity_model``.
    outcome_model : {"gbm", "linear"} or regressor, default="gbm"
    propensity_model : {"gbm", "logistic"} or classifier, default="gbm"
    random_state : int or None, default=0

    Returns
    -------
    nuisances : Nuisances
    """
    X = np.asarray(X, dtype=float)
    t, y = np.asarray(treatment).astype(np.int64), np.asarray(outcome, dtype=float)
    n = t.size
    model_y = make_outcome_model(outcome_model, random_state) if isinstance(outcome_model, str) else outcome_model
    if propensity is None:
        model_t = (make_propensity_model(random_state, kind=propensity_model)
                   if isinstance(propensity_model, str) else propensity_model)
    mu0, mu1 = np.full(n, np.nan), np.full(n, np.nan)
    e = np.full(n, np.nan if propensity is None else float(propensity))
    with threadpool_limits(1, user_api="openmp"):  # see models.estimate._fit_causal_forest
        for train, test in folds:
            for arm, target in ((0, mu0), (1, mu1)):
                rows = train[t[train] == arm]
                target[test] = clone(model_y).fit(X[rows], y[rows]).predict(X[test])
            if propensity is None:
                fitted = clone(model_t).fit(X[train], t[train])
                e[test] = fitted.predict_proba(X[test])[:, 1]
    if np.isnan(mu0).any() or np.isnan(e).any():
        raise EstimationError("the folds do not cover every unit once; build them with make_folds.")
    factual = np.where(t == 1, mu1, mu0)
    scores: dict[str, float | None] = {"outcome_r2": float(r2_score(y, factual)),
                                       "propensity_auc": None, "propensity_log_loss": None}
    if propensity is None:
        scores["propensity_auc"] = float(roc_auc_score(t, e))
        scores["propensity_log_loss"] = float(log_loss(t, np.clip(e, 1e-15, 1 - 1e-15)))
    logger.debug("nuisances over %d folds: %s", len(folds), scores)
    return Nuisances(mu0=mu0, mu1=mu1, e=e, folds=folds, propensity_known=propensity is not None,
                     scores=scores)



def crossfit_propensity(
    X: ArrayLike, treatment: ArrayLike, *, folds: Folds,
    propensity_model: str | BaseEstimator = "gbm", random_state: int | None = 0,
) -> NDArray[np.float64]:
    """Out-of-fold propensity of every unit, for trimming before any learner is fitted.

    Trimming on in-sample probabilities would drop the units a flexible classifier memorised;
    out-of-fold ones are what the learners' own cross-fitting will see.
    """
    M = np.asarray(X, dtype=float)
    t = np.asarray(treatment).astype(np.int64)
    model_t = (make_propensity_model(random_state, kind=propensity_model)
               if isinstance(propensity_model, str) else propensity_model)
    e = np.full(t.size, np.nan)
    with threadpool_limits(1, user_api="openmp"):
        for train, test in folds:
            e[test] = clone(model_t).fit(M[train], t[train]).predict_proba(M[test])[:, 1]
    if np.isnan(e).any():
        raise EstimationError("the folds do not cover every unit once; build them with make_folds.")
    return e
