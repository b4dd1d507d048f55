"""Overlap and balance diagnostics for weighting and doubly robust estimators.

An ATE from weights is only as good as the overlap of the arms: where the propensity is near
0 or 1, a few units carry the estimate and its interval understates the uncertainty
(Crump et al. 2009; Khan and Tamer 2010). These functions put numbers on that, so that a run
reports them and warns (:class:`OverlapWarning`) instead of quietly returning a fragile ATE.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from eocausal.errors import EstimationError

__all__ = [
    "OverlapWarning",
    "check_overlap",
    "covariate_balance",
    "effective_sample_size",
    "ipw_weights",
    "overlap_summary",
]

#: Propensities outside [0.05, 0.95] count as extreme (a common rule of thumb; Crump et al.
#: 2009 derive 0.1 for homogeneous effects).
EXTREME = 0.05
#: No overlap at all: fewer than 2 units of an arm inside [0.01, 0.99], or more than 95% of
#: all units outside [0.05, 0.95] (a boosted classifier rarely predicts below 0.01, so the
#: first rule alone misses treatment that the features decide exactly).
HARD = 0.01
MAX_SHARE_EXTREME = 0.95


class OverlapWarning(UserWarning):
    """Propensities crowd 0 or 1, so weighting estimates rest on few units."""


def ipw_weights(treatment: ArrayLike, propensity: ArrayLike) -> NDArray[np.float64]:
    """Inverse probability weights for the ATE: ``t / e + (1 - t) / (1 - e)``."""
    t, e = np.asarray(treatment, dtype=float), np.asarray(propensity, dtype=float)
    return t / e + (1 - t) / (1 - e)


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (Kish 1965).

    Equal weights give n; one dominant weight gives about 1. Reported per arm, it says how
    many units an IPW mean effectively averages over.
    """
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / np.sum(w**2)) if w.size else 0.0


def overlap_summary(
    treatment: ArrayLike, propensity: ArrayLike, *, bins: int = 20
) -> dict[str, Any]:
    """Numbers that describe propensity overlap, and histogram data for a plot.

    Returns
    -------
    summary : dict
        ``n_treated``, ``n_control``; ``min``/``max`` of the propensity per arm;
        ``n_extreme`` and ``share_extreme`` (outside [0.05, 0.95]); ``n_inside_hard`` per arm
        (inside [0.01, 0.99]); ``ess_treated``, ``ess_control`` (Kish ESS of the IPW weights
        within each arm) and their ratios to the arm sizes; ``hist_edges`` (bins + 1) and
        ``hist_treated``, ``hist_control`` (counts), as plain lists for JSON.
    """
    t = np.asarray(treatment).astype(np.int64)
    e = np.asarray(propensity, dtype=float)
    w = ipw_weights(t, e)
    edges = np.linspace(0.0, 1.0, bins + 1)
    treated, control = t == 1, t == 0
    extreme = (e < EXTREME) | (e > 1 - EXTREME)
    inside = (e >= HARD) & (e <= 1 - HARD)
    ess_t, ess_c = effective_sample_size(w[treated]), effective_sample_size(w[control])
    return {
        "n_treated": int(treated.sum()), "n_control": int(control.sum()),
        "min_treated": float(e[treated].min()), "max_treated": float(e[treated].max()),
        "min_control": float(e[control].min()), "max_control": float(e[control].max()),
        "n_extreme": int(extreme.sum()), "share_extreme": float(extreme.mean()),
        "n_inside_hard_treated": int((inside & treated).sum()),
        "n_inside_hard_control": int((inside & control).sum()),
        "ess_treated": ess_t, "ess_control": ess_c,
        "ess_ratio_treated": ess_t / max(int(treated.sum()), 1),
        "ess_ratio_control": ess_c / max(int(control.sum()), 1),
        "hist_edges": edges.tolist(),
        "hist_treated": np.histogram(e[treated], edges)[0].tolist(),
        "hist_control": np.histogram(e[control], edges)[0].tolist(),
    }


def check_overlap(
    treatment: ArrayLike, propensity: ArrayLike, *, max_share_extreme: float = 0.1,
    min_ess_ratio: float = 0.2,
) -> dict[str, Any]:
    """Overlap summary, with an error when the arms do not overlap and a warning when poorly.

    Raises :class:`~pipeline.errors.EstimationError` when fewer than 2 treated or 2 control
    units have a propensity inside [0.01, 0.99], or more than 95% of the units lie outside
    [0.05, 0.95]: the ATE is then not identified from these data. Warns :class:`OverlapWarning` when more than ``max_share_extreme`` of the units
    lie outside [0.05, 0.95] or an arm's effective sample size is below ``min_ess_ratio``
    of its size. Trimming (``trim=0.05``) or a target of the overlap population helps.

    Returns
    -------
    summary : dict
        As :func:`overlap_summary`.
    """
    s = overlap_summary(treatment, propensity)
    n = s["n_treated"] + s["n_control"]
    if min(s["n_inside_hard_treated"], s["n_inside_hard_control"]) < 2 or s["share_extreme"] > MAX_SHARE_EXTREME:
        raise EstimationError(
            f"no overlap in the propensity: of {n} units only {s['n_inside_hard_treated']} treated "
            f"and {s['n_inside_hard_control']} control have an estimated propensity inside "
            f"[{HARD}, {1 - HARD}] and {n - s['n_extreme']} inside [{EXTREME}, {1 - EXTREME}] "
            f"(treated range {s['min_treated']:.3f}-{s['max_treated']:.3f}, "
            f"control {s['min_control']:.3f}-{s['max_control']:.3f}); the features predict "
            "treatment almost perfectly, so no ATE is identified. Restrict the units to a "
            "region where both arms occur, or drop features that determine treatment."
        )
    ratio = min(s["ess_ratio_treated"], s["ess_ratio_control"])
    if s["share_extreme"] > max_share_extreme or ratio < min_ess_ratio:
        warnings.warn(OverlapWarning(
            f"poor propensity overlap: {s['n_extreme']} of {n} units ({s['share_extreme']:.1%}) have "
            f"a propensity outside [{EXTREME}, {1 - EXTREME}]; effective sample sizes "
            f"{s['ess_treated']:.0f} of {s['n_treated']} treated and {s['ess_control']:.0f} of "
            f"{s['n_control']} control. Weighting estimates rest on few units; consider trim=0.05."
        ), stacklevel=2)
    return s


def covariate_balance(
    X: ArrayLike, treatment: ArrayLike, propensity: ArrayLike | None = None, *,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Standardised mean differences of each column, before and after IPW weighting.

    ``SMD = (mean_treated - mean_control) / sqrt((var_treated + var_control) / 2)`` with the
    unweighted variances in the denominator for both columns, so the two are comparable
    (Austin and Stuart 2015). ``|SMD| < 0.1`` is the usual bar for balance.

    Parameters
    ----------
    X : array-like of shape (n_units, n_columns)
    treatment : array-like of shape (n_units,)
    propensity : array-like of shape (n_units,), default=None
        Without it only ``smd_before`` is computed.
    names : list of str, default=None
        Column names; ``x0, x1, ...`` when None (a data frame's own names are used).

    Returns
    -------
    balance : DataFrame
        Index ``column``; columns ``smd_before`` and ``smd_after`` (NaN without propensity).
    """
    names = names or [str(c) for c in getattr(X, "columns", [])] or None
    M = np.asarray(X, dtype=float)
    t = np.asarray(treatment).astype(bool)
    if M.ndim != 2 or M.shape[0] != t.size:
        raise EstimationError(f"X must be 2-D with {t.size} rows; got shape {M.shape}.")
    names = names or [f"x{j}" for j in range(M.shape[1])]
    pooled = np.sqrt((M[t].var(axis=0, ddof=1) + M[~t].var(axis=0, ddof=1)) / 2)
    pooled = np.where(pooled > 0, pooled, np.nan)
    before = (M[t].mean(axis=0) - M[~t].mean(axis=0)) / pooled
    after = np.full(M.shape[1], np.nan)
    if propensity is not None:
        w = ipw_weights(t, propensity)
        m1 = np.average(M[t], axis=0, weights=w[t])
        m0 = np.average(M[~t], axis=0, weights=w[~t])
        after = (m1 - m0) / pooled
    return pd.DataFrame({"smd_before": before, "smd_after": after},
                        index=pd.Index(names, name="column"))
