"""Baselines and known-truth checks for effect estimates.

The difference in means is the estimate a reader trusts without a model, so every run
reports it next to the forest's. On simulated or semi-simulated data (IHDP) the truth is
known, and :func:`compare_with_truth` turns an estimate into JSON-ready error metrics for
``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from pipeline.errors import EstimationError

__all__ = ["check_treatment_outcome", "compare_with_truth", "difference_in_means", "first_rows"]


def first_rows(mask: NDArray[np.bool_], limit: int = 5) -> str:
    """The first row indices where ``mask`` is true, for error messages ("3, 17, ...")."""
    rows = np.flatnonzero(mask)
    return ", ".join(str(r) for r in rows[:limit]) + (", ..." if rows.size > limit else "")


def check_treatment_outcome(
    treatment: ArrayLike, outcome: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Validate a 0/1 treatment with both arms and a finite outcome of the same length.

    Shared by every estimator, so a user's mistake reads the same wherever it is caught.

    Returns
    -------
    treatment : ndarray of int64, shape (n_units,)
    outcome : ndarray of float64, shape (n_units,)

    Raises
    ------
    EstimationError
        For shapes that differ, a non-binary or constant treatment, or NaN/inf outcomes.
    """
    t, y = np.asarray(treatment), np.asarray(outcome, dtype=float)
    if t.ndim != 1 or y.ndim != 1 or t.size != y.size:
        raise EstimationError(
            f"treatment and outcome must be 1-D with one value per unit; got shapes {t.shape} "
            f"and {y.shape}. Give one treatment and one outcome per unit, in the same order."
        )
    values = np.unique(t)
    if not np.isin(values, [0, 1]).all():
        shown = ", ".join(str(v) for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise EstimationError(
            f"treatment must be binary (0 for control, 1 for treated); got values {shown}. "
            "Recode the treatment column to 0/1."
        )
    if values.size == 1:
        raise EstimationError(
            f"treatment takes only the value {int(values[0])} for all {t.size} units; "
            "an effect needs both treated and control units."
        )
    bad = ~np.isfinite(y)
    if bad.any():
        raise EstimationError(
            f"outcome has NaN or infinite values in {int(bad.sum())} of {y.size} rows "
            f"(rows {first_rows(bad)}); drop those units or impute the outcome first."
        )
    return t.astype(np.int64), y


def difference_in_means(treatment: ArrayLike, outcome: ArrayLike, *, alpha: float = 0.05) -> dict[str, float]:
    """Mean outcome of treated minus mean outcome of controls, with a Welch interval.

    The naive estimate: unbiased in a randomized trial, biased under confounding. Welch's
    interval does not assume equal variances in the two arms.

    Parameters
    ----------
    treatment : array-like of shape (n_units,)
        0/1 treatment.
    outcome : array-like of shape (n_units,)
    alpha : float, default=0.05
        One minus the interval's coverage.

    Returns
    -------
    result : dict
        ``estimate``, ``se``, ``lo`` and ``hi``, as plain floats; the interval uses a t
        quantile with Welch-Satterthwaite degrees of freedom.

    Raises
    ------
    EstimationError
        For invalid inputs (see :func:`check_treatment_outcome`) or an arm of one unit.
    """
    t, y = check_treatment_outcome(treatment, outcome)
    y1, y0 = y[t == 1], y[t == 0]
    if min(y1.size, y0.size) < 2:
        raise EstimationError(
            f"difference in means needs at least 2 treated and 2 control units; got "
            f"{y1.size} treated and {y0.size} control."
        )
    v1, v0 = y1.var(ddof=1) / y1.size, y0.var(ddof=1) / y0.size
    se = math.sqrt(v1 + v0)
    estimate = float(y1.mean() - y0.mean())
    if se == 0.0:
        return {"estimate": estimate, "se": 0.0, "lo": estimate, "hi": estimate}
    df = (v1 + v0) ** 2 / (v1**2 / (y1.size - 1) + v0**2 / (y0.size - 1))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return {"estimate": estimate, "se": se, "lo": estimate - half, "hi": estimate + half}


def _get(estimates: Any, name: str) -> Any:
    if isinstance(estimates, Mapping):
        return estimates.get(name)
    return getattr(estimates, name, None)


def _num(value: float) -> float | None:
    """Plain float, or None where the value is not finite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def compare_with_truth(
    estimates: Any, true_ate: float, true_cate: ArrayLike | None = None
) -> dict[str, float | bool | None]:
    """Error metrics of an estimate against a known true effect.

    Parameters
    ----------
    estimates : EffectEstimates or mapping
        Anything with ``ate``, ``ate_lo``, ``ate_hi`` and, for the per-unit metrics, ``cate``
        of shape (n_units,). An optional ``naive`` (a float, or a dict with ``estimate``)
        enables ``naive_ate_error`` and ``bias_removed_fraction``.
    true_ate : float
        The true average effect on the same units.
    true_cate : array-like of shape (n_units,), default=None
        The true per-unit effects; without it the per-unit metrics are None.

    Returns
    -------
    metrics : dict
        ``ate_error`` (estimate minus truth), ``abs_ate_error``, ``interval_covers_truth``,
        ``spearman_cate``, ``pearson_cate``, ``root_pehe`` (root mean squared CATE error),
        ``naive_ate_error`` and ``bias_removed_fraction`` (``1 - |ate_error| / |naive
        error|``, None when the naive error is zero). Plain floats, bools and None, ready for
        ``json.dump``.

    Raises
    ------
    EstimationError
        If ``cate`` and ``true_cate`` differ in length.
    """
    ate, lo, hi = (float(_get(estimates, k)) for k in ("ate", "ate_lo", "ate_hi"))
    true_ate = float(true_ate)
    ate_error = ate - true_ate
    metrics: dict[str, float | bool | None] = {
        "ate_error": ate_error,
        "abs_ate_error": abs(ate_error),
        "interval_covers_truth": bool(lo <= true_ate <= hi),
        "spearman_cate": None,
        "pearson_cate": None,
        "root_pehe": None,
        "naive_ate_error": None,
        "bias_removed_fraction": None,
    }
    cate = _get(estimates, "cate")
    if true_cate is not None and cate is not None:
        cate = np.asarray(cate, dtype=float).ravel()
        truth = np.asarray(true_cate, dtype=float).ravel()
        if cate.shape != truth.shape:
            raise EstimationError(
                f"estimated CATE has {cate.size} values but true_cate has {truth.size}; "
                "compare effects on the same units."
            )
        if np.ptp(cate) > 0 and np.ptp(truth) > 0:
            metrics["spearman_cate"] = _num(stats.spearmanr(cate, truth).statistic)
            metrics["pearson_cate"] = _num(stats.pearsonr(cate, truth).statistic)
        metrics["root_pehe"] = float(np.sqrt(np.mean((cate - truth) ** 2)))
    naive = _get(estimates, "naive")
    if naive is not None:
        naive_estimate = naive["estimate"] if isinstance(naive, Mapping) else naive
        naive_error = float(naive_estimate) - true_ate
        metrics["naive_ate_error"] = naive_error
        if naive_error != 0.0:
            metrics["bias_removed_fraction"] = 1.0 - abs(ate_error) / abs(naive_error)
    return metrics
