"""Average and per-unit treatment effects from image features with a causal forest.

Features are standardised and reduced with PCA (forests split poorly on hundreds of correlated
encoder outputs), joined to covariates, and given as ``X`` to econml's ``CausalForestDML``. The
treatment model is the known assignment probability in a trial, else a classifier on ``X`` (the
images stand in for confounders). The ATE is the forest's doubly robust average; per-unit
effects get bootstrap-of-little-bags intervals. :class:`EffectModel` keeps transform and forest
so the map stage can predict effects where no trial ran.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, fields
from importlib.metadata import version
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from models.evaluate import check_treatment_outcome, difference_in_means, first_rows
from models.propensity import KnownPropensity, make_propensity_model
from pipeline.errors import EstimationError, InputFileError

__all__ = ["EffectEstimates", "EffectModel", "KnownPropensity", "ModelVersionWarning", "estimate_effects"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())  # the library never configures logging itself

_Z95 = float(stats.norm.ppf(0.975))


class ModelVersionWarning(UserWarning):
    """A saved effect model was written with other package versions than the running ones."""


@dataclass(frozen=True, eq=False)
class EffectEstimates:
    """Effect estimates of one fit, as a read-only value object.

    ``ate``, ``ate_lo``, ``ate_hi``, ``ate_se``: doubly robust average effect over the units
    used, its 95% interval and standard error. ``cate``, ``cate_lo``, ``cate_hi`` (arrays of
    shape (n_used,)): per-unit effects with 95% intervals. ``naive``: the difference in means
    (``estimate``, ``se``, ``lo``, ``hi``; Welch interval). ``propensity_used``: the assignment
    probability given to the treatment model in a trial, None when it was estimated.
    ``nuisance_scores``: out-of-fold ``outcome_r2`` and ``treatment_accuracy`` (None in a trial,
    where nothing is fitted; compare it with the larger arm's share), averaged over folds.
    ``model``: the fitted :class:`EffectModel`, to predict at new locations and to save.
    """

    ate: float
    ate_lo: float
    ate_hi: float
    ate_se: float
    method: str
    design: str
    n_used: int
    cate: NDArray[np.float64]
    cate_lo: NDArray[np.float64]
    cate_hi: NDArray[np.float64]
    naive: dict[str, float]
    propensity_used: float | None
    nuisance_scores: dict[str, float | None] = field(default_factory=dict)
    model: EffectModel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("cate", "cate_lo", "cate_hi"):
            values = getattr(self, name)
            if values.shape != (self.n_used,):
                raise ValueError(f"{name} has shape {values.shape}; expected ({self.n_used},).")
            values.setflags(write=False)
        if not self.ate_lo <= self.ate <= self.ate_hi:
            raise ValueError(f"ATE {self.ate} lies outside its interval [{self.ate_lo}, {self.ate_hi}].")

    def summary(self) -> dict[str, Any]:
        """The scalar results as plain Python values, for ``summary.json``."""
        skip = ("cate", "cate_lo", "cate_hi", "model")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _as_matrix(
    values: Any, name: str, n_units: int | None = None, reference: str = "treatment"
) -> tuple[NDArray[np.float64], list[str] | None]:
    """2-D finite float matrix and its column names (data frames only), else EstimationError."""
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


def _check_columns(
    name: str, n_given: int, names: list[str] | None, n_fit: int, names_fit: list[str] | None
) -> None:
    if n_given != n_fit:
        raise EstimationError(
            f"{name} have {n_given} columns but the model was fitted on {n_fit}; use the same "
            "encoder and settings as in the fit."
        )
    if names is not None and names_fit is not None and names != names_fit:
        diff = [f"{a!r} (fit: {b!r})" for a, b in zip(names, names_fit, strict=True) if a != b]
        raise EstimationError(
            f"{name} columns differ from those in the fit: {', '.join(diff[:5])}"
            f"{', ...' if len(diff) > 5 else ''}. Select and order the columns as in the fit."
        )


def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("econml", "scikit-learn", "numpy")}


def _mean_score(scores: list[list[float]] | None) -> float | None:
    values = np.asarray(scores or [], dtype=float)
    return float(values.mean()) if values.size and np.isfinite(values).all() else None


class EffectModel(BaseEstimator):
    """Causal forest on reduced image features, reusable at new locations.

    Parameters
    ----------
    design : {"rct", "observational"}, default="rct"
        In a trial the treatment model is the known assignment probability; otherwise a
        classifier learns treatment from the features and covariates.
    propensity : float, default=None
        Assignment probability of a trial, in (0, 1); None uses the treated share. Only
        with ``design="rct"``.
    method : {"causal_forest"}, default="causal_forest"
        The only estimator so far.
    n_components : int or None, default=20
        PCA components kept from the standardised features; None, or no more features than
        this, keeps the standardised features.
    n_estimators : int, default=400
        Trees; a multiple of 4 (econml grows subforests of 4 for its intervals).
    min_samples_leaf : int, default=5
        Smallest leaf of the causal forest.
    cv : int, default=3
        Cross-fitting folds of the nuisance models, grouped when ``fit`` gets ``groups``.
    n_jobs : int or None, default=-1
        Parallel jobs of the causal forest; -1 uses every core.
    random_state : int, RandomState instance or None, default=0
        Seed for PCA, nuisance models, folds and forest.

    Attributes
    ----------
    scaler_, pca_, estimator_ : StandardScaler, PCA (or None), econml CausalForestDML
    n_features_in_, feature_names_in_, n_covariates_, covariate_names_ : int, list or None
        Column counts, and names when features or covariates were data frames.
    versions_ : dict
        econml, scikit-learn and numpy versions at fit time.
    estimates_ : EffectEstimates
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "design": [StrOptions({"rct", "observational"})],
        "propensity": [Interval(Real, 0, 1, closed="neither"), None],
        "method": [StrOptions({"causal_forest"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "n_estimators": [Interval(Integral, 4, None, closed="left")],
        "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self, *, design: str = "rct", propensity: float | None = None,
        method: str = "causal_forest", n_components: int | None = 20, n_estimators: int = 400,
        min_samples_leaf: int = 5, cv: int = 3, n_jobs: int | None = -1,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.design = design
        self.propensity = propensity
        self.method = method
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_settings(self) -> None:
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise EstimationError(f"{exc} Change the setting and run again.") from exc
        if self.n_estimators % 4:
            raise EstimationError(
                f"n_estimators must be a multiple of 4 (the forest's subforest size); got "
                f"{self.n_estimators}. Use {self.n_estimators - self.n_estimators % 4}."
            )
        if self.propensity is not None and self.design != "rct":
            raise EstimationError(
                f"propensity={self.propensity} is a trial's known assignment probability; with "
                f"design={self.design!r} drop it, and treatment is modelled from the features."
            )

    def _design_matrix(self, features: Any, covariates: Any, n_units: int | None) -> NDArray[np.float64]:
        """Scale, reduce and join features and covariates; learns the transform when fitting."""
        fitting = n_units is not None
        F, names = _as_matrix(features, "features", n_units)
        if fitting:
            self.n_features_in_, self.feature_names_in_ = F.shape[1], names
            self.scaler_ = StandardScaler().fit(F)
            self.pca_ = None
            if self.n_components is not None and F.shape[1] > self.n_components:
                if self.n_components > F.shape[0]:
                    raise EstimationError(
                        f"n_components={self.n_components} exceeds the {F.shape[0]} units; "
                        "lower it or set n_components=None."
                    )
                pca = PCA(self.n_components, random_state=self.random_state)
                self.pca_ = pca.fit(self.scaler_.transform(F))
        else:
            _check_columns("features", F.shape[1], names, self.n_features_in_, self.feature_names_in_)
        X = self.scaler_.transform(F)
        X = X if self.pca_ is None else self.pca_.transform(X)
        if fitting:
            self.n_covariates_, self.covariate_names_ = 0, None
        if covariates is None:
            if self.n_covariates_:
                raise EstimationError(
                    f"the model was fitted with {self.n_covariates_} covariates; pass the same "
                    "covariates for these units."
                )
            return X
        C, names = _as_matrix(covariates, "covariates", F.shape[0], reference="features")
        if fitting:
            self.n_covariates_, self.covariate_names_ = C.shape[1], names
        else:
            _check_columns("covariates", C.shape[1], names, self.n_covariates_, self.covariate_names_)
        return np.hstack([X, C])

    def fit(
        self, features: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *,
        covariates: ArrayLike | None = None, groups: ArrayLike | None = None,
    ) -> EffectModel:
        """Fit the nuisance models with cross-fitting, then the causal forest.

        Parameters
        ----------
        features : array-like or DataFrame of shape (n_units, n_features)
            Image features; a frame's column names are kept and checked at prediction.
        treatment : array-like of shape (n_units,)
            0/1 treatment.
        outcome : array-like of shape (n_units,)
        covariates : array-like or DataFrame of shape (n_units, n_covariates), default=None
            Tabular covariates, used as given.
        groups : array-like of shape (n_units,), default=None
            Cluster labels (villages, tiles); a group's units share a cross-fitting fold.

        Raises
        ------
        EstimationError
            For invalid settings or inputs: lengths that differ, non-binary or constant
            treatment, NaN or infinite values, too few units in an arm.
        """
        self._check_settings()
        t, y = check_treatment_outcome(treatment, outcome)
        X = self._design_matrix(features, covariates, t.size)
        groups = None if groups is None else np.asarray(groups)
        if groups is not None and (groups.shape != t.shape or np.unique(groups).size < self.cv):
            raise EstimationError(
                f"groups must give one label per unit ({t.size}) and at least cv={self.cv} distinct "
                f"labels; got shape {groups.shape} with {np.unique(groups).size} labels."
            )
        n_arm = int(min(t.sum(), t.size - t.sum()))
        if n_arm < 2 * self.cv:
            raise EstimationError(
                f"the smaller arm has {n_arm} units, too few for {self.cv}-fold cross-fitting; "
                f"it needs at least {2 * self.cv} treated and {2 * self.cv} control units."
            )
        known = t.mean() if self.propensity is None else self.propensity
        propensity = float(known) if self.design == "rct" else None
        self.estimator_ = _fit_causal_forest(self, X, t, y, groups, propensity)
        self.versions_ = _versions()
        self.estimates_ = self._summarise(X, t, y, propensity)
        est = self.estimates_
        logger.info("causal forest, %d units: ATE %.4g [%.4g, %.4g]", t.size, est.ate, est.ate_lo, est.ate_hi)
        return self

    def _summarise(self, X: NDArray[Any], t: NDArray[Any], y: NDArray[Any], propensity: float | None) -> EffectEstimates:
        est = self.estimator_
        # ate_ is the doubly robust mean of out-of-bag forest effects plus an inverse-variance
        # weighted residual correction; ate_stderr_ is the standard error of that mean.
        ate, se = float(np.ravel(est.ate_)[0]), float(np.ravel(est.ate_stderr_)[0])
        lo, hi = (np.ravel(v) for v in est.effect_interval(X, alpha=0.05))
        scores_t = est.nuisance_scores_t if self.design == "observational" else None
        return EffectEstimates(
            ate=ate, ate_lo=ate - _Z95 * se, ate_hi=ate + _Z95 * se, ate_se=se,
            method=self.method, design=self.design, n_used=int(t.size),
            cate=np.ravel(est.effect(X)), cate_lo=lo, cate_hi=hi,
            naive=difference_in_means(t, y), propensity_used=propensity,
            nuisance_scores={"outcome_r2": _mean_score(est.nuisance_scores_y),
                             "treatment_accuracy": _mean_score(scores_t)},
            model=self,
        )

    def predict_cate(
        self, features: ArrayLike, covariates: ArrayLike | None = None, *, alpha: float = 0.05
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Effects and intervals at units or grid cells, in the trial or outside it.

        ``features`` (n_cells, n_features) come from the same encoder and settings as in
        ``fit``; ``covariates`` are required exactly when the fit had them; ``alpha`` is one
        minus the intervals' coverage. Returns ``cate, lo, hi``, each of shape (n_cells,).

        Raises
        ------
        EstimationError
            If the columns differ in number or names from those in ``fit``, or hold NaN.
        """
        check_is_fitted(self, "estimator_")
        X = self._design_matrix(features, covariates, None)
        cate = np.ravel(self.estimator_.effect(X))
        lo, hi = (np.ravel(v) for v in self.estimator_.effect_interval(X, alpha=alpha))
        return cate, lo, hi

    def save(self, path: str | Path) -> Path:
        """Write the fitted model with joblib, with its settings and package versions.

        The versions let :meth:`load` warn when other library versions read the forest.
        """
        check_is_fitted(self, "estimator_")
        path = Path(path)
        columns = {"features": self.feature_names_in_, "n_features": self.n_features_in_,
                   "covariates": self.covariate_names_, "n_covariates": self.n_covariates_}
        payload = {"versions": self.versions_, "settings": self.get_params(), "columns": columns}
        joblib.dump({**payload, "model": self}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EffectModel:
        """Read a model written by :meth:`save`.

        Raises ``InputFileError`` for a missing file and ``EstimationError`` for a file that
        holds no effect model; warns ``ModelVersionWarning`` when econml, scikit-learn or
        numpy differ from the versions at fit time.
        """
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"effect model file '{path}' does not exist; run the estimate stage first.")
        payload = joblib.load(path)
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), cls):
            raise EstimationError(f"'{path}' is not an effect model written by EffectModel.save.")
        saved, running = payload["versions"], _versions()
        changed = [f"{k} {saved.get(k)} at save, {v} now" for k, v in running.items() if saved.get(k) != v]
        if changed:
            message = (f"effect model '{path}' was saved with other package versions "
                       f"({'; '.join(changed)}); predictions may differ. Refit the model to be sure.")
            warnings.warn(ModelVersionWarning(message), stacklevel=2)
        return payload["model"]


def _fit_causal_forest(
    settings: EffectModel, X: NDArray[np.float64], t: NDArray[np.int64], y: NDArray[np.float64],
    groups: NDArray[Any] | None, propensity: float | None,
) -> Any:
    """Fit econml's CausalForestDML (imported here: importing econml takes a while).

    The outcome model is histogram gradient boosting with early stopping: it stops early when
    the outcome carries little signal, and on ~2,000 units and ~20 columns it fits in about
    0.3 s per fold, faster than a random forest of similar accuracy. Its OpenMP threads are
    limited to one: with so few columns, thread synchronisation costs more than the split
    search, and on a loaded 2-core machine it ran 13x slower with two threads.
    """
    from econml.dml import CausalForestDML

    rs = settings.random_state
    model_y = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=300, min_samples_leaf=20,
                                            early_stopping=True, validation_fraction=0.15,
                                            n_iter_no_change=20, random_state=rs)
    model_t = KnownPropensity(propensity) if propensity is not None else make_propensity_model(rs)
    forest = CausalForestDML(
        model_y=model_y, model_t=model_t, discrete_treatment=True, cv=settings.cv,
        n_estimators=settings.n_estimators, min_samples_leaf=settings.min_samples_leaf,
        n_jobs=settings.n_jobs, random_state=rs,
    )
    try:
        with threadpool_limits(1, user_api="openmp"):
            forest.fit(y, t, X=X, groups=groups)
    except AttributeError as exc:  # econml's signal for a fold without one of the arms
        if "don't contain all treatments" not in str(exc):
            raise
        raise EstimationError(
            "a cross-fitting fold holds only treated or only control units; with groups, each of "
            f"the {settings.cv} folds needs groups from both arms. Use a smaller cv or finer groups."
        ) from exc
    return forest


def estimate_effects(
    features: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *,
    covariates: ArrayLike | None = None, design: str = "rct", propensity: float | None = None,
    method: str = "causal_forest", n_components: int | None = 20, n_estimators: int = 400,
    min_samples_leaf: int = 5, cv: int = 3, groups: ArrayLike | None = None,
    n_jobs: int | None = -1, random_state: int | np.random.RandomState | None = 0,
) -> EffectEstimates:
    """Estimate the ATE and per-unit effects of a binary treatment from image features.

    The estimate stage as a plain function; the parameters are those of
    :class:`EffectModel` and :meth:`EffectModel.fit`.

    Returns
    -------
    estimates : EffectEstimates
        Doubly robust ATE with a 95% interval, per-unit effects with intervals, the
        difference in means as the naive baseline, and ``model`` for new locations.

    Raises
    ------
    EstimationError
        For invalid settings or inputs.
    """
    model = EffectModel(
        design=design, propensity=propensity, method=method, n_components=n_components,
        n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, cv=cv, n_jobs=n_jobs,
        random_state=random_state,
    )
    return model.fit(features, treatment, outcome, covariates=covariates, groups=groups).estimates_
