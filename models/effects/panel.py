"""Partially linear panel DML: units observed over periods, with unit effects the images only
partly show.

Fuhr and Papies (2024, "Double Machine Learning meets Panel Data") show that DML on pooled
unit-periods keeps the unobserved unit effect in its nuisances and stays biased, while the
correlated random effects approach (Mundlak 1978: add each unit's means of the time-varying
features and covariates to the nuisance models) removes it. Four estimators side by side:

- ``mundlak``: correlated random effects (DoubleML ``approach="cre_general"``);
- ``first_difference``: outcome and treatment differenced within unit, features and their
  lags as controls (``"fd_exact"``);
- ``within``: everything demeaned within unit (``"wg_approx"``);
- ``pooled``: DoubleML's partially linear model on unit-periods, ignoring the panel (the
  biased baseline the others are compared with).

All four come from the released DoubleML (0.11): :class:`doubleml.DoubleMLPLPR` implements
the static panel approaches of Clarke and Polselli (2025) on a :class:`DoubleMLPanelData`,
which clusters by unit, and :class:`doubleml.DoubleMLPLR` with ``cluster_cols`` is the pooled
one. DoubleML gives the unit-clustered standard errors (its cluster-robust score variance)
and takes our folds: DoubleML draws its cluster folds from numpy's global random state, so
the folds are drawn here over units from ``random_state`` and handed over with
``set_sample_splitting``. The nuisance learners are the project's own
(:func:`~eocausal.models.effects.crossfit.make_outcome_model`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.effects.crossfit import make_outcome_model
from eocausal.models.effects.panel_settings import PANEL_METHOD_NAMES, check_panel_settings
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from eocausal.errors import EstimationError, MissingColumnError

__all__ = ["PANEL_METHODS", "PanelEstimate", "PanelResult", "estimate_panel", "join_panel",
           "period_ranks"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

PANEL_METHODS = PANEL_METHOD_NAMES
_APPROACH = {"mundlak": "cre_general", "first_difference": "fd_exact", "within": "wg_approx"}
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class PanelEstimate:
    """One panel estimator's effect, unit-clustered SE and 95% interval.

    ``n_unit_periods`` counts the rows the estimator used (differences for
    ``first_difference``); ``biased`` is set for ``pooled`` only, when Mundlak also ran.
    """

    method: str
    estimate: float
    se: float
    lo: float
    hi: float
    n_units: int
    n_unit_periods: int
    biased: bool | None = None
    diff_from_mundlak_se: float | None = None
    note: str = ""


@dataclass(frozen=True, eq=False)
class PanelResult:
    """Result of :func:`estimate_panel`: one :class:`PanelEstimate` per method and the panel."""

    estimates: dict[str, PanelEstimate]
    n_units: int
    n_periods: int
    n_unit_periods: int
    balanced: bool
    n_single_period_units: int
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per method: estimate, se, lo, hi, n_units, n_unit_periods, biased, note."""
        return pd.DataFrame([asdict(e) for e in self.estimates.values()]).set_index("method")

    def summary(self) -> dict[str, Any]:
        """Plain values for ``summary.json`` and the report's panel section."""
        return {"design": "panel", "n_units": self.n_units, "n_periods": self.n_periods,
                "n_unit_periods": self.n_unit_periods, "balanced": self.balanced,
                "n_single_period_units": self.n_single_period_units,
                "estimates": {k: asdict(v) for k, v in self.estimates.items()},
                "settings": dict(self.settings)}


def period_ranks(values: pd.Series, column: str = "period") -> np.ndarray:
    """Order periods: numbers and dates keep their order, ISO date strings are parsed.

    Returns the dense rank (0 = first period) of each row.

    Raises
    ------
    EstimationError
        If the values are missing or cannot be ordered (labels such as ``"spring"``).
    """
    if values.isna().any():
        rows = values.index[values.isna()][:5].tolist()
        raise EstimationError(f"column '{column}' has missing periods at rows {rows}; give "
                              "every unit-period a period (a number or a date).")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        keys = values.to_numpy(dtype=float)
    elif pd.api.types.is_datetime64_any_dtype(values):
        keys = values.to_numpy().astype("datetime64[ns]").astype(np.int64)
    else:
        try:
            keys = pd.to_datetime(values.astype(str), format="ISO8601").to_numpy().astype(np.int64)
        except (ValueError, TypeError):
            examples = sorted(map(str, values.unique()))[:4]
            raise EstimationError(
                f"periods in column '{column}' cannot be ordered: {examples} are neither numbers "
                "nor dates. Give periods as numbers (1, 2, 3...) or ISO dates (2021-06-30)."
            ) from None
    _, ranks = np.unique(keys, return_inverse=True)
    return ranks.astype(np.int64)


def _label(value: Any) -> str:
    """A period as a user wrote it: 2017 or '2021-06-30', never np.int64(2017)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def join_panel(table: pd.DataFrame, features: pd.DataFrame, *, unit: str = "unit_id",
               period: str = "period") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join a survey's long table with per-period features on unit and period.

    Periods are matched as text (``2019`` and ``"2019"`` agree), so label the feature dates
    as the survey labels its rounds first (``encode_panel(..., periods=[d[:4] for d in
    store.dates])`` for yearly rounds). Returns the joined rows and the survey rows without
    features (``unit_id``, ``period``, ``reason``), for ``skipped_units.csv``.
    """
    _check_columns(table, [unit, period])
    _check_columns(features.rename(columns={"unit_id": unit, "period": period}), [unit, period])
    feats = features.rename(columns={"unit_id": unit, "period": period})
    key = [unit, period]
    left = table.assign(_key_u=table[unit].astype(str), _key_p=table[period].astype(str))
    right = feats.drop(columns=key).assign(_key_u=feats[unit].astype(str),
                                          _key_p=feats[period].astype(str))
    joined = left.merge(right, on=["_key_u", "_key_p"], how="left", indicator=True)
    matched = joined["_merge"] == "both"
    missing = pd.DataFrame({"unit_id": joined.loc[~matched, unit].astype(str),
                            "period": joined.loc[~matched, period].astype(str),
                            "reason": "no usable image for this unit and period"})
    out = joined[matched].drop(columns=["_key_u", "_key_p", "_merge"]).reset_index(drop=True)
    if out.empty:
        raise EstimationError(
            f"no row of the table matches a feature row on '{unit}' and '{period}' (table "
            f"periods {sorted(map(str, table[period].unique()))[:3]}, feature periods "
            f"{sorted(map(str, feats[period].unique()))[:3]}); label the feature dates as "
            "the table labels its periods.")
    return out, missing.reset_index(drop=True)


def _check_columns(table: pd.DataFrame, names: Sequence[str]) -> None:
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise MissingColumnError(f"the panel table has no column(s) {missing}; it has "
                                 f"{list(table.columns)[:12]}. Name the right columns.")


def _finite(table: pd.DataFrame, column: str) -> np.ndarray:
    try:
        values = pd.to_numeric(table[column], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError):
        raise EstimationError(f"column '{column}' must be numeric; got values such as "
                              f"{table[column].iloc[:3].tolist()}.") from None
    bad = ~np.isfinite(values)
    if bad.any():
        rows = table.index[bad][:5].tolist()
        raise EstimationError(f"column '{column}' has {int(bad.sum())} missing or infinite "
                              f"value(s), at rows {rows}; drop or fill those unit-periods.")
    return values


def _unit_folds(codes: np.ndarray, cv: int, random_state: int | None) -> tuple[list, list]:
    """Folds over units (every period of a unit in the same fold), in DoubleML's format."""
    clusters = np.unique(codes)
    if clusters.size < cv:
        raise EstimationError(f"cv={cv} folds need at least {cv} units; the panel has "
                              f"{clusters.size}. Lower cv.")
    kfold = KFold(n_splits=cv, shuffle=True, random_state=random_state)
    smpls, smpls_cluster = [], []
    for train, test in kfold.split(clusters):
        train_rows = np.flatnonzero(np.isin(codes, clusters[train]))
        test_rows = np.flatnonzero(np.isin(codes, clusters[test]))
        smpls.append((train_rows, test_rows))
        smpls_cluster.append(([clusters[train]], [clusters[test]]))
    return [smpls], [smpls_cluster]


def _fit_one(method: str, frame: pd.DataFrame, x_cols: list[str], *, cv: int, learner: str,
             random_state: int | None) -> PanelEstimate:
    """Fit one DoubleML panel estimator on the prepared frame (columns _u, _t, _y, _d, x...)."""
    import doubleml as dml

    ml_l, ml_m = make_outcome_model(learner, random_state), make_outcome_model(learner, random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "pooled":
            data = dml.DoubleMLData(frame, y_col="_y", d_cols="_d", x_cols=x_cols,
                                    cluster_cols="_u")
            model = dml.DoubleMLPLR(data, ml_l, ml_m, n_folds=cv, draw_sample_splitting=False)
            used = data
        else:
            data = dml.DoubleMLPanelData(frame, y_col="_y", d_cols="_d", t_col="_t",
                                         id_col="_u", x_cols=x_cols, static_panel=True)
            model = dml.DoubleMLPLPR(data, ml_l, ml_m, n_folds=cv,
                                     approach=_APPROACH[method], draw_sample_splitting=False)
            used = model.data_transform
        codes = np.asarray(used.data["_u"])
        model.set_sample_splitting(*_unit_folds(codes, cv, random_state))
        with threadpool_limits(1, user_api="openmp"):
            model.fit()
    gaps = [w for w in caught if "missing (id, time)" in str(w.message)]
    for w in caught:
        if w not in gaps:
            logger.warning("panel %s: %s", method, w.message)
    notes = []
    if gaps:  # DoubleML fills the complete grid; a difference across a gap is dropped
        n_gaps = re.search(r"contains (\d+) missing", str(gaps[0].message))
        notes.append(f"{n_gaps.group(1) if n_gaps else 'some'} unit-periods missing from the "
                     "complete grid: differences across a gap dropped")
    estimate, se = float(model.coef[0]), float(model.se[0])
    return PanelEstimate(method, estimate, se, estimate - _Z95 * se, estimate + _Z95 * se,
                         n_units=int(np.unique(codes).size), n_unit_periods=int(codes.size),
                         note="; ".join(["unit-clustered", *notes]))


def estimate_panel(
    table: pd.DataFrame, *, unit: str = "unit_id", period: str = "period",
    treatment: str = "treatment", outcome: str = "outcome",
    features: Sequence[str] | None = None, covariates: Sequence[str] = (),
    methods: Sequence[str] = PANEL_METHODS, cv: int = 5, learner: str = "linear",
    n_components: int | None = None, period_effects: bool = True,
    bias_threshold: float = 3.0, random_state: int | None = 0,
) -> PanelResult:
    """Effect of a treatment on an outcome in a long panel, by four DML panel estimators.

    Parameters
    ----------
    table : DataFrame
        One row per unit-period. Unbalanced panels work: units seen in one period only are
        left out of the panel estimators (counted in ``n_single_period_units``).
    unit, period, treatment, outcome : str
        Column names. Periods are numbers, dates or ISO date strings.
    features : sequence of str, default=None
        Time-varying image feature columns; None takes every ``f0000``-style column.
    covariates : sequence of str, default=()
        Time-varying tabular covariates, used like the features.
    methods : sequence of {"mundlak", "first_difference", "within", "pooled"}
    cv : int, default=5
        Folds, drawn over units; standard errors are clustered by unit.
    learner : {"linear", "gbm"}, default="linear"
        Nuisance learner for ``E[Y|X]`` and ``E[D|X]``.
    n_components : int, default=None
        Reduce the features to this many principal components first (seeded).
    period_effects : bool, default=True
        Add a dummy per period to the controls (period fixed effects), so a common trend in
        uptake and outcome is not read as the effect.
    bias_threshold : float, default=3.0
        ``pooled`` is marked biased when it lies this many of its SEs from ``mundlak``.
    random_state : int or None, default=0

    Returns
    -------
    result : PanelResult
        ``.table()`` and ``.summary()``.

    Raises
    ------
    MissingColumnError
        If a named column is absent.
    EstimationError
        For one period, periods that cannot be ordered, duplicate unit-periods, missing
        values, or a treatment that never changes within a unit with a panel estimator.
    """
    settings = check_panel_settings(unit=unit, period=period, methods=list(methods), cv=cv,
                                    learner=learner, n_components=n_components,
                                    period_effects=period_effects,
                                    covariates=list(covariates), bias_threshold=bias_threshold)
    if features is None:
        features = [c for c in table.columns if isinstance(c, str) and c[:1] == "f" and c[1:].isdigit()]
    _check_columns(table, [unit, period, treatment, outcome, *features, *covariates])
    controls = [*features, *covariates]
    if not controls:
        raise EstimationError("the panel has no feature or covariate columns to adjust for; "
                              "pass features=[...] (f0000-style columns are found by default).")
    table = table.reset_index(drop=True)
    ranks = period_ranks(table[period], period)
    n_periods = int(ranks.max()) + 1
    if n_periods < 2:
        raise EstimationError(f"column '{period}' holds one period ({_label(table[period].iloc[0])}); "
                              "a panel needs at least two. Use the cross-sectional estimators "
                              "(design rct or observational) instead.")
    codes = pd.factorize(table[unit])[0]
    dup = pd.Series(list(zip(codes, ranks, strict=True))).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise EstimationError(f"unit {table[unit].iloc[row]!r} appears more than once in period "
                              f"{_label(table[period].iloc[row])} (row {row}); keep one row per "
                              f"'{unit}' and '{period}' (average repeated acquisitions first).")
    y, d = _finite(table, outcome), _finite(table, treatment)
    X = np.column_stack([_finite(table, c) for c in controls])
    if settings.n_components is not None and settings.n_components < len(features):
        k = len(features)
        pcs = PCA(settings.n_components, random_state=random_state).fit_transform(X[:, :k])
        X = np.column_stack([pcs, X[:, k:]])
    if period_effects:  # two-way: a common shock per period (a roll-out, a drought year)
        X = np.column_stack([X, np.eye(n_periods)[ranks][:, 1:]])
    x_cols = [f"x{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=x_cols)
    frame.insert(0, "_u", codes)
    frame.insert(1, "_t", ranks)
    frame.insert(2, "_y", y)
    frame.insert(3, "_d", d)

    counts = np.bincount(codes)
    single = counts == 1
    panel_rows = ~single[codes]
    panel_methods = [m for m in settings.methods if m != "pooled"]
    if panel_methods:
        varies = frame[panel_rows].groupby("_u")["_d"].nunique() > 1
        if not varies.any():
            raise EstimationError(
                f"treatment column '{treatment}' never changes within a unit (each of "
                f"{int(varies.size)} units keeps one value over time), so {panel_methods} cannot "
                "identify its effect: they use within-unit changes only. Run methods=['pooled'] "
                "with the caveat that it keeps the unit effects, or use a design where "
                "treatment switches on over time.")
    estimates: dict[str, PanelEstimate] = {}
    for method in PANEL_METHODS:
        if method not in settings.methods:
            continue
        data = frame if method == "pooled" else frame[panel_rows].reset_index(drop=True)
        estimates[method] = _fit_one(method, data, x_cols, cv=cv, learner=settings.learner,
                                     random_state=random_state)
        logger.info("panel %s: %.4f (se %.4f) on %d unit-periods", method,
                    estimates[method].estimate, estimates[method].se,
                    estimates[method].n_unit_periods)
    if "pooled" in estimates and "mundlak" in estimates:
        pooled, ref = estimates["pooled"], estimates["mundlak"]
        z = abs(pooled.estimate - ref.estimate) / pooled.se
        estimates["pooled"] = PanelEstimate(**{**asdict(pooled), "biased": bool(z >= bias_threshold),
                                               "diff_from_mundlak_se": float(z)})
    n_units = int(counts.size)
    return PanelResult(estimates=estimates, n_units=n_units, n_periods=n_periods,
                       n_unit_periods=int(len(frame)), balanced=bool((counts == n_periods).all()),
                       n_single_period_units=int(single.sum()),
                       settings=settings.model_dump())
