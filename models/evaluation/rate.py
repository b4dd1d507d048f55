"""Rank-weighted average treatment effects (RATE), as grf defines them.

A CATE model is useful for targeting only if the units it ranks first gain more than
average. Yadlowsky, Fleming, Shah, Brunskill and Wager ("Evaluating treatment prioritization
rules via rank-weighted average treatment effects", JASA 2024; arXiv:2111.07966) measure
this with the Targeting Operator Characteristic

    TOC(q) = E[Y(1) - Y(0) | S(X) in top q fraction] - E[Y(1) - Y(0)],

estimated from doubly robust scores ``Gamma_i`` sorted by priority ``S``, and its weighted
areas: AUTOC ``= int_0^1 TOC(q) dq`` (power when few units respond) and Qini
``= int_0^1 q TOC(q) dq`` (power when effects are diffuse). This module follows grf's
``rank_average_treatment_effect.fit`` and ``estimate_rate`` (R package grf 2.3): the
integrals are sums over the ``n`` sorted units,
``AUTOC = (1/n) sum_i TOC(i/n)`` and ``Qini = (1/n) sum_i (i/n) TOC(i/n)``; units with tied
priorities share the mean of their scores; the TOC on a grid ``q`` uses fractional units;
standard errors come from a half-sample bootstrap over clusters (half of the clusters drawn
without replacement, the standard deviation of the replicates). No maintained Python
package implements these weights (causalml's ``rate_score`` uses others).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from eocausal.errors import EstimationError

__all__ = ["RateResult", "rank_average_treatment_effect", "toc_curve"]

_Z95 = float(stats.norm.ppf(0.975))
DEFAULT_Q = tuple(np.round(np.arange(1, 11) / 10, 10))


@dataclass(frozen=True, eq=False)
class RateResult:
    """A RATE estimate with its bootstrap standard error and the TOC curve.

    ``toc`` has columns ``q``, ``estimate``, ``se`` (the TOC on the grid); ``estimate`` is the
    AUTOC or Qini; ``n_bootstrap`` the half-sample replicates behind ``se``.
    """

    target: str
    estimate: float
    se: float
    toc: pd.DataFrame
    n_bootstrap: int

    @property
    def lo(self) -> float:
        """Lower end of the 95% interval."""
        return self.estimate - _Z95 * self.se

    @property
    def hi(self) -> float:
        """Upper end of the 95% interval."""
        return self.estimate + _Z95 * self.se

    @property
    def pvalue(self) -> float:
        """Two-sided p-value of RATE = 0 (no heterogeneity the priorities can find)."""
        if self.se <= 0:
            return float("nan")
        return float(2 * stats.norm.sf(abs(self.estimate / self.se)))

    def summary(self) -> dict[str, float | str | int]:
        """Plain values for ``summary.json``."""
        return {"target": self.target, "estimate": self.estimate, "se": self.se, "lo": self.lo,
                "hi": self.hi, "pvalue": self.pvalue, "n_bootstrap": self.n_bootstrap}


def _dense_ranks(priorities: NDArray[np.float64]) -> NDArray[np.int64]:
    """Integer ranks 0..K-1 of the distinct priorities (grf: ``as.integer(as.factor(x))``)."""
    return np.unique(priorities, return_inverse=True)[1].ravel().astype(np.int64)


def _estimate(
    scores: NDArray[np.float64], ranks: NDArray[np.int64], q: NDArray[np.float64], target: str
) -> NDArray[np.float64]:
    """RATE followed by the TOC on ``q``, for unit weights (grf's ``estimate_rate``).

    Sorted by decreasing priority, ``TOC_i = mean(Gamma_1..Gamma_i) - mean(Gamma)``; tied
    units first get the mean score of their tie group. On the grid, ``q n`` units are
    averaged, the last one fractionally.
    """
    order = np.argsort(-ranks, kind="stable")
    r, g = ranks[order], scores[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    if starts.size < r.size:  # ties: every unit gets its group's mean score
        sums = np.add.reduceat(g, starts)
        counts = np.diff(np.r_[starts, r.size])
        g = np.repeat(sums / counts, counts)
    n = g.size
    cum_w = np.arange(1, n + 1, dtype=float)
    cum_g = np.cumsum(g)
    ate = cum_g[-1] / n
    toc = cum_g / cum_w - ate
    if target == "AUTOC":
        rate = toc.sum() / n
    else:  # QINI: weights cumsum(w) / sum(w)
        rate = np.sum(cum_w / n * toc) / n
    nw = q * n
    idx = np.searchsorted(cum_w, nw + 1e-15, side="right")  # R findInterval
    denom_adj = nw - cum_w[np.maximum(idx, 1) - 1]
    num_adj = denom_adj * g[np.minimum(idx + 1, idx.max()) - 1]
    idx = np.maximum(idx, 1)
    toc_grid = (cum_g[idx - 1] + num_adj) / (cum_w[idx - 1] + denom_adj) - ate
    return np.r_[rate, toc_grid]


def _check(dr_scores: ArrayLike, priorities: ArrayLike, q: ArrayLike, target: str
           ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    scores = np.asarray(dr_scores, dtype=float)
    prio = np.asarray(priorities, dtype=float)
    grid = np.asarray(q, dtype=float)
    if target not in ("AUTOC", "QINI"):
        raise EstimationError(f"target must be 'AUTOC' or 'QINI'; got {target!r}.")
    if scores.ndim != 1 or scores.shape != prio.shape:
        raise EstimationError(
            f"dr_scores and priorities must be 1-D of the same length; got shapes "
            f"{scores.shape} and {prio.shape}."
        )
    if not (np.isfinite(scores).all() and np.isfinite(prio).all()):
        raise EstimationError("dr_scores and priorities must be finite; drop or impute NaN rows first.")
    if grid.size == 0 or np.any(np.diff(grid) <= 0) or grid[0] <= 0 or grid[-1] != 1:
        raise EstimationError(f"q must increase strictly within (0, 1] and end at 1; got {grid.tolist()}.")
    return scores, prio, grid


def toc_curve(dr_scores: ArrayLike, priorities: ArrayLike, q: ArrayLike = DEFAULT_Q) -> pd.DataFrame:
    """The TOC on a grid ``q`` without bootstrap: columns ``q`` and ``estimate``."""
    scores, prio, grid = _check(dr_scores, priorities, q, "AUTOC")
    values = _estimate(scores, _dense_ranks(prio), grid, "AUTOC")[1:]
    return pd.DataFrame({"q": grid, "estimate": values})


def rank_average_treatment_effect(
    dr_scores: ArrayLike, priorities: ArrayLike, *, target: str = "AUTOC",
    q: ArrayLike = DEFAULT_Q, n_bootstrap: int = 200, clusters: ArrayLike | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> RateResult:
    """RATE (AUTOC or Qini) of a prioritisation rule, with a half-sample bootstrap error.

    Port of grf's ``rank_average_treatment_effect.fit`` with unit sample weights. For a
    valid test the priorities must come from a model that did not see these units' outcomes
    (out-of-fold CATE, :func:`models.compare.evaluate_heterogeneity`), and the scores from
    cross-fitted nuisances (:meth:`models.crossfit.Nuisances.dr_scores`).

    Parameters
    ----------
    dr_scores : array-like of shape (n_units,)
        Doubly robust (AIPW) scores ``Gamma_i``.
    priorities : array-like of shape (n_units,)
        Higher means treat first (for a harmful treatment pass ``-cate``).
    target : {"AUTOC", "QINI"}, default="AUTOC"
    q : array-like, default=(0.1, 0.2, ..., 1.0)
        Grid of treated fractions for the TOC; increasing, ending at 1.
    n_bootstrap : int, default=200
        Half-sample bootstrap replicates (grf's ``R``); below 2 the errors are 0.
    clusters : array-like of shape (n_units,), default=None
        Cluster labels: whole clusters are drawn, as in grf.
    random_state : int, Generator or None, default=0
        Seed of the bootstrap draws.

    Returns
    -------
    result : RateResult

    Raises
    ------
    EstimationError
        For inputs of different lengths, NaN, a bad grid or target, or fewer than 4 clusters.
    """
    scores, prio, grid = _check(dr_scores, priorities, q, target)
    ranks = _dense_ranks(prio)
    point = _estimate(scores, ranks, grid, target)
    labels = np.arange(scores.size) if clusters is None else np.asarray(clusters)
    if labels.shape != scores.shape:
        raise EstimationError(f"clusters must have one label per unit ({scores.size}); got shape {labels.shape}.")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.ravel()
    n_clusters = int(codes.max()) + 1
    if n_clusters // 2 <= 1:
        raise EstimationError(f"the half-sample bootstrap needs at least 4 clusters; got {n_clusters}.")
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    rng = np.random.default_rng(random_state)
    reps = np.empty((max(n_bootstrap, 0), point.size))
    for b in range(reps.shape[0]):
        chosen = rng.choice(n_clusters, n_clusters // 2, replace=False)
        idx = np.concatenate([members[c] for c in chosen])
        reps[b] = _estimate(scores[idx], ranks[idx], grid, target)
    se = reps.std(axis=0, ddof=1) if reps.shape[0] >= 2 else np.zeros(point.size)
    point = np.where(np.abs(point) < 1e-15, 0.0, point)
    se = np.where(np.abs(se) < 1e-15, 0.0, se)
    toc = pd.DataFrame({"q": grid, "estimate": point[1:], "se": se[1:]})
    return RateResult(target=target, estimate=float(point[0]), se=float(se[0]), toc=toc,
                      n_bootstrap=int(reps.shape[0]))
