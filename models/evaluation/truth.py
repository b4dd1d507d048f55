"""Known-truth checks: an estimate against the true effect of a simulated world or IHDP.

On simulated or semi-simulated data the truth is known, and :func:`compare_with_truth` turns
an estimate into JSON-ready error metrics for ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from eocausal.errors import EstimationError

__all__ = ["compare_with_truth"]


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
        error|``, None when the naive error is zero); with per-unit intervals also
        ``cate_coverage``/``cate_mean_width`` and, for calibrated ones,
        ``cate_coverage_calibrated``/``cate_mean_width_calibrated``. Plain floats, bools and None, ready for
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
        for suffix in ("", "_calibrated"):
            lo, hi = _get(estimates, "cate_lo" + suffix), _get(estimates, "cate_hi" + suffix)
            if lo is None or hi is None or not np.isfinite(np.asarray(lo, dtype=float)).all():
                continue
            lo, hi = np.asarray(lo, dtype=float).ravel(), np.asarray(hi, dtype=float).ravel()
            metrics["cate_coverage" + suffix] = float(np.mean((lo <= truth) & (truth <= hi)))
            metrics["cate_mean_width" + suffix] = float(np.mean(hi - lo))
    naive = _get(estimates, "naive")
    if naive is not None:
        naive_estimate = naive["estimate"] if isinstance(naive, Mapping) else naive
        naive_error = float(naive_estimate) - true_ate
        metrics["naive_ate_error"] = naive_error
        if naive_error != 0.0:
            metrics["bias_removed_fraction"] = 1.0 - abs(ate_error) / abs(naive_error)
    return metrics
