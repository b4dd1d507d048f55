"""Calibration of CATE predictions: best linear predictor (BLP) and sorted group effects (GATES).

Chernozhukov, Demirer, Duflo and Fernandez-Val ("Generic machine learning inference on
heterogeneous treatment effects in randomized experiments", NBER WP 24678, 2018; Econometrica
2025) ask two questions of a CATE proxy ``S(x)`` learned on other folds:

* BLP: in ``E[tau(X) | S] = beta1 + beta2 (S - E S)``, ``beta1`` is the ATE and ``beta2`` is 1
  when ``S`` is calibrated, 0 when it carries no information about the effect; ``beta2 > 0``
  significantly rejects "no detectable heterogeneity".
* GATES: the average effect within quantile groups of ``S``; increasing group effects, and
  a top-minus-bottom difference away from 0, show the ranking sorts units by effect.

Both are regressions of a transformed outcome whose conditional mean is ``tau(x)``. The paper's
strategy B uses the Horvitz-Thompson transform ``H Y``; here the doubly robust (AIPW) score
``Gamma`` takes its place (Semenova and Chernozhukov 2021), which is what the paper's
strategy B becomes with an outcome model and stays valid in observational data with
cross-fitted nuisances. Standard errors are heteroskedasticity-robust (HC1) or clustered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from eocausal.errors import EstimationError

__all__ = ["BlpResult", "GatesResult", "blp_test", "gates"]

_Z95 = float(stats.norm.ppf(0.975))


def _ols(y: NDArray[np.float64], Z: NDArray[np.float64], clusters: ArrayLike | None
         ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """OLS coefficients and their HC1 (or cluster-robust CR1) covariance matrix."""
    n, k = Z.shape
    bread = np.linalg.pinv(Z.T @ Z)
    coef = bread @ Z.T @ y
    u = y - Z @ coef
    if clusters is None:
        meat = (Z * u[:, None] ** 2).T @ Z * n / max(n - k, 1)
    else:
        _, codes = np.unique(np.asarray(clusters), return_inverse=True)
        g = int(codes.max()) + 1
        if g < 2:
            raise EstimationError("cluster-robust errors need at least 2 clusters; got 1.")
        sums = np.zeros((g, k))
        np.add.at(sums, codes.ravel(), Z * u[:, None])
        meat = sums.T @ sums * (g / (g - 1)) * ((n - 1) / max(n - k, 1))
    return coef, bread @ meat @ bread


def _inputs(dr_scores: ArrayLike, cate: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    g, s = np.asarray(dr_scores, dtype=float), np.asarray(cate, dtype=float)
    if g.ndim != 1 or g.shape != s.shape:
        raise EstimationError(
            f"dr_scores and cate must be 1-D of the same length; got shapes {g.shape} and {s.shape}."
        )
    if not (np.isfinite(g).all() and np.isfinite(s).all()):
        raise EstimationError("dr_scores and cate must be finite; drop or impute NaN rows first.")
    return g, s


@dataclass(frozen=True)
class BlpResult:
    """BLP of the effect on the CATE proxy: ``ate`` (beta1), ``slope`` (beta2), their errors.

    ``slope_pvalue`` is one-sided, for H0: ``beta2 <= 0`` (the paper's heterogeneity test).
    """

    ate: float
    ate_se: float
    slope: float
    slope_se: float
    slope_pvalue: float
    n_units: int

    @property
    def slope_interval(self) -> tuple[float, float]:
        """95% interval of the slope."""
        return self.slope - _Z95 * self.slope_se, self.slope + _Z95 * self.slope_se


def blp_test(dr_scores: ArrayLike, cate: ArrayLike, *, clusters: ArrayLike | None = None) -> BlpResult:
    """Best linear predictor of the effect given the CATE proxy (calibration test).

    Regresses ``Gamma_i`` on ``1`` and ``S_i - mean(S)``; a proxy without variation has no
    slope, so a constant ``cate`` raises.

    Parameters
    ----------
    dr_scores : array-like of shape (n_units,)
        AIPW scores from cross-fitted nuisances.
    cate : array-like of shape (n_units,)
        Out-of-fold CATE predictions (the proxy ``S``).
    clusters : array-like of shape (n_units,), default=None

    Returns
    -------
    result : BlpResult
    """
    g, s = _inputs(dr_scores, cate)
    if np.ptp(s) == 0:
        raise EstimationError("cate is constant, so its calibration slope is undefined; use a "
                              "CATE method whose predictions vary across units.")
    Z = np.column_stack([np.ones_like(s), s - s.mean()])
    coef, cov = _ols(g, Z, clusters)
    se = np.sqrt(np.diag(cov))
    return BlpResult(ate=float(coef[0]), ate_se=float(se[0]), slope=float(coef[1]),
                     slope_se=float(se[1]), slope_pvalue=float(stats.norm.sf(coef[1] / se[1])),
                     n_units=int(g.size))


@dataclass(frozen=True, eq=False)
class GatesResult:
    """Sorted group average treatment effects.

    ``table``: one row per group, lowest predicted effect first, with ``n``, ``cate_mean``
    (mean prediction), ``estimate``, ``se``, ``lo``, ``hi``; ``difference``: top minus bottom
    group with ``estimate``, ``se``, ``lo``, ``hi``.
    """

    table: pd.DataFrame
    difference: dict[str, float]


def gates(
    dr_scores: ArrayLike, cate: ArrayLike, *, n_groups: int = 5, clusters: ArrayLike | None = None
) -> GatesResult:
    """GATES: mean AIPW score within quantile groups of the CATE proxy.

    Groups are cut at the quantiles of the rank of ``cate`` (ties broken by position), so
    each holds ``n / n_groups`` units even when predictions repeat. Each group's effect is
    the coefficient of its indicator in a regression of ``Gamma`` on all indicators (the
    group mean), with robust or clustered errors shared across groups for the difference.

    Raises
    ------
    EstimationError
        For fewer than 2 groups or fewer than 2 units per group.
    """
    g, s = _inputs(dr_scores, cate)
    if not isinstance(n_groups, int | np.integer) or n_groups < 2 or g.size < 2 * n_groups:
        raise EstimationError(
            f"n_groups must be an int of at least 2 with 2 units per group; got n_groups="
            f"{n_groups!r} for {g.size} units."
        )
    ranks = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    group = (ranks * n_groups) // g.size
    Z = (group[:, None] == np.arange(n_groups)[None, :]).astype(float)
    coef, cov = _ols(g, Z, clusters)
    se = np.sqrt(np.diag(cov))
    table = pd.DataFrame({
        "group": np.arange(1, n_groups + 1), "n": Z.sum(axis=0).astype(int),
        "cate_mean": [float(s[group == k].mean()) for k in range(n_groups)],
        "estimate": coef, "se": se, "lo": coef - _Z95 * se, "hi": coef + _Z95 * se,
    })
    diff = float(coef[-1] - coef[0])
    diff_se = float(np.sqrt(cov[-1, -1] + cov[0, 0] - 2 * cov[0, -1]))
    return GatesResult(table=table, difference={"estimate": diff, "se": diff_se,
                                                "lo": diff - _Z95 * diff_se, "hi": diff + _Z95 * diff_se})
