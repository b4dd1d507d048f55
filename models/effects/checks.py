"""Input checks shared by every estimator, and the difference-in-means baseline.

The difference in means is the estimate a reader trusts without a model, so every run
reports it next to the forest's; the checks make a user's mistake read the same wherever
it is caught.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from eocausal.errors import EstimationError

__all__ = ["as_matrix", "check_groups", "check_treatment_outcome", "difference_in_means", "first_rows"]


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


def as_matrix(
    values: Any, name: str, n_units: int | None = None, reference: str = "treatment"
) -> tuple[NDArray[np.float64], list[str] | None]:
    """2-D finite float matrix and its column names (data frames only), else EstimationError.

    Shared by every estimator that takes features or covariates, so their errors read alike.
    """
    columns = getattr(values, "columns", None)
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise EstimationError(f"{name} must be numeric; conversion to float failed: {exc}.") from exc
    if matrix.ndim != 2:
        raise EstimationError(
            f"{name} must be 2-D of shape (n_units, n_columns); got shape {matrix.shape}. "
            "Reshape a single column with values.reshape(-1, 1)."
        )
    if n_units is not None and matrix.shape[0] != n_units:
        raise EstimationError(
            f"{name} has {matrix.shape[0]} rows but {reference} has {n_units}; "
            "give one row per unit, in the same order."
        )
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise EstimationError(
            f"{name} has NaN or infinite values in {int(bad.sum())} rows (rows {first_rows(bad)}); "
            "drop those units or impute the values first."
        )
    return matrix, None if columns is None else [str(c) for c in columns]


def _missing_labels(g: NDArray[Any]) -> NDArray[np.bool_]:
    if g.dtype.kind == "f":
        return ~np.isfinite(g)
    if g.dtype.kind in "OUS":
        return np.array([v is None or (isinstance(v, float) and math.isnan(v))
                         or (isinstance(v, str | bytes) and not v.strip()) for v in g.tolist()],
                        dtype=bool)
    return np.zeros(g.size, dtype=bool)


def check_groups(
    groups: ArrayLike | None, name: str = "groups", n_units: int | None = None, *,
    treatment: ArrayLike | None = None, min_clusters: int = 2,
) -> NDArray[Any] | None:
    """Cluster labels checked once, so every entry point rejects bad ones the same way.

    ``name`` is the column the labels came from (``image_key``), so the message names it.
    NaN, None or empty labels would otherwise crash scikit-learn ("Input contains NaN") or be
    merged silently into one cluster; one cluster has no cluster-robust variance. Returns the
    labels as an array (object labels as strings); None stays None.

    Raises
    ------
    EstimationError
        For a length that differs from ``n_units``, NaN or empty labels (naming the rows),
        or fewer than ``min_clusters`` distinct labels.
    """
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.ndim != 1:
        raise EstimationError(f"{name} must be 1-D with one label per unit; got shape {g.shape}.")
    if n_units is not None and g.size != n_units:
        raise EstimationError(
            f"{name} has {g.size} labels but there are {n_units} units; give one label per unit, "
            "in the same order."
        )
    bad = _missing_labels(g)
    if bad.any():
        raise EstimationError(
            f"{name} has {int(bad.sum())} missing or empty labels (rows {first_rows(bad)}); "
            f"give every unit a label in {name} or drop those rows."
        )
    if g.dtype.kind == "O":
        g = g.astype(str)
    labels = np.unique(g)
    if labels.size < min_clusters:
        arms = ""
        if treatment is not None and np.unique(np.asarray(treatment)).size > 1:
            arms = ", holding both arms"
        shown = f" ({labels[0]!s})" if labels.size == 1 else ""
        raise EstimationError(
            f"{name} has {labels.size} distinct label{'' if labels.size == 1 else 's'}{shown} for "
            f"{g.size} units{arms}; cluster-robust errors and grouped folds need at least "
            f"{min_clusters} clusters. Use a finer {name}, or leave groups out if units are "
            "independent."
        )
    return g
