"""Average and per-unit treatment effects from image features with any registered learner.

Features are standardised and reduced with PCA (forests split poorly on hundreds of correlated
encoder outputs), joined to covariates, and given as ``X`` to one of the econml learners of
:mod:`models.cate` (default ``CausalForestDML``). The treatment model is the known assignment
probability in a trial, else a classifier on ``X`` (the images stand in for confounders).
Observational designs are trimmed (or clipped) on out-of-fold propensities before any learner
is fitted (:mod:`models.effects.overlap`). The headline ATE is the mean of a doubly robust
score, the learner's own where econml exposes it, else AIPW on the same folds, with an
influence-function error clustered by ``groups`` (:mod:`models.effects.intervals`); per-unit
intervals come both as the learner's own and bias-aware calibrated. ``features=None`` fits on
covariates alone. :class:`EffectModel` keeps transform and learner so the map stage can
predict effects where no trial ran.
"""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import version
from numbers import Integral
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from eocausal.models.effects import cate as cate_methods
from eocausal.models.effects.checks import (
    as_matrix,
    check_groups,
    check_treatment_outcome,
    difference_in_means,
)
from eocausal.models.effects.intervals import (
    calibrated_cate_intervals,
    dml_dr_scores,
    headline_ate,
    heldout_cate,
    variance_label,
)
from eocausal.models.effects.overlap import plan_overlap
from eocausal.models.effects.propensity import KnownPropensity
from eocausal.models.effects.results import (
    EffectEstimates,
    ModelVersionWarning,
    nuisance_diagnostics,
)
from eocausal.models.effects.settings import DEFAULT_SETTINGS as _D
from eocausal.models.effects.settings import EffectSettings, check_settings
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from eocausal.errors import EstimationError, InputFileError

__all__ = ["CATE_METHODS", "EffectEstimates", "EffectModel", "KnownPropensity", "ModelVersionWarning",
           "estimate_effects"]

CATE_METHODS = tuple(cate_methods.CATE_METHODS)

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())  # the library never configures logging itself

_Z95 = float(stats.norm.ppf(0.975))


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
    method : str, default="causal_forest"
        A name of :data:`CATE_METHODS`: ``causal_forest``, ``linear_dml``, ``dr_learner``,
        ``forest_dr_learner``, ``x_learner``, ``t_learner``, ``s_learner`` (see
        :mod:`models.cate` for their intervals and ATEs).
    n_components : int or None, default=20
        PCA components kept from the standardised features; None, or no more features than
        this, keeps the standardised features.
    n_estimators : int, default=400
        Trees; a multiple of 4 (econml grows subforests of 4 for its intervals).
    min_samples_leaf : int, default=5
        Smallest leaf of the causal forest.
    max_samples : float or "auto", default="auto"
        Share of the units each tree of the forests grows on; "auto" is econml's 0.45 capped
        at 20,000 units a tree (:func:`~models.effects.settings.forest_max_samples`).
    cv : int, default=3
        Cross-fitting folds of the nuisance models, grouped when ``fit`` gets ``groups``.
    n_jobs : int or None, default=-1
        Parallel jobs of the causal forest; -1 uses every core.
    random_state : int, RandomState instance or None, default=0
        Seed for PCA, nuisance models, folds and forest.
    degree : int, default=1
        Degree of the polynomial featurizer of ``linear_dml`` and ``dr_learner``: 1 is linear
        in the columns; 2 adds squares and interactions, for effects that bend, but with 25
        columns on 747 units (IHDP) it overfits (root PEHE 4.0 against 0.64 at degree 1).
    n_bootstrap : int, default=0
        Bootstrap replicates for the metalearners' intervals; each refits the learner, so 0
        (no per-unit intervals, NaN) is the default. Other methods ignore it.
    diagnostics : bool, default=False
        Also report overlap, balance and the scores of the cross-fitted outcome and
        propensity models in ``estimates_.diagnostics``.
    trim : float or None, default=0.05
        Observational designs: units whose out-of-fold propensity lies outside
        ``[trim, 1 - trim]`` are dropped before the learner is fitted, and the estimand is
        the ATE on the trimmed population (``estimates_.estimand``). None keeps every unit.
    clip : float or None, default=None
        Bound propensities to ``[clip, 1 - clip]`` inside the learner instead (turns
        ``trim`` off); the estimate is then labelled a weighted effect.

    Attributes
    ----------
    scaler_, pca_, estimator_ : StandardScaler, PCA (or None), econml CausalForestDML
    n_features_in_, feature_names_in_, n_covariates_, covariate_names_ : int, list or None
        Column counts, and names when features or covariates were data frames.
    versions_ : dict
        econml, scikit-learn and numpy versions at fit time.
    estimates_ : EffectEstimates
    """

    def __init__(
        self, *, design: str = _D.design, propensity: float | None = _D.propensity,
        method: str = _D.method, n_components: int | None = _D.n_components,
        n_estimators: int = _D.n_estimators, min_samples_leaf: int = _D.min_samples_leaf,
        max_samples: float | str = _D.max_samples, cv: int = _D.cv, n_jobs: int | None = -1,
        random_state: int | np.random.RandomState | None = 0, degree: int = _D.degree,
        n_bootstrap: int = _D.n_bootstrap, diagnostics: bool = False,
        trim: float | None = _D.trim, clip: float | None = _D.clip,
    ) -> None:
        self.design = design
        self.propensity = propensity
        self.method = method
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_samples = max_samples
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.degree = degree
        self.n_bootstrap = n_bootstrap
        self.diagnostics = diagnostics
        self.trim = trim
        self.clip = clip

    def _check_settings(self) -> None:
        cate_methods.check_method(self.method)  # lists the valid names
        if isinstance(self.n_estimators, int) and self.n_estimators >= 4 and self.n_estimators % 4:
            raise EstimationError(
                f"n_estimators must be a multiple of 4 (the forest's subforest size); got "
                f"{self.n_estimators}. Use {self.n_estimators - self.n_estimators % 4}."
            )
        check_settings(**{name: getattr(self, name) for name in EffectSettings.model_fields})
        if self.n_jobs is not None and not isinstance(self.n_jobs, Integral):
            raise EstimationError(f"n_jobs must be an integer or None; got {self.n_jobs!r}.")
        if self.propensity is not None and self.design != "rct":
            raise EstimationError(
                f"propensity={self.propensity} is a trial's known assignment probability; with "
                f"design={self.design!r} drop it, and treatment is modelled from the features."
            )

    def _design_matrix(self, features: Any, covariates: Any, n_units: int | None) -> NDArray[np.float64]:
        """Scale, reduce and join features and covariates; learns the transform when fitting.

        ``features=None`` is the image-free baseline: the covariates alone are ``X``.
        """
        fitting = n_units is not None
        if features is None:
            if covariates is None:
                raise EstimationError("give features, covariates or both; got neither. An "
                                      "image-free baseline needs covariates=.")
            X = None
            if fitting:
                self.n_features_in_, self.feature_names_in_ = 0, None
                self.scaler_, self.pca_ = None, None
            elif self.n_features_in_:
                raise EstimationError(
                    f"the model was fitted on {self.n_features_in_} image features; pass them "
                    "for these units too.")
        else:
            F, names = as_matrix(features, "features", n_units)
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
                if not self.n_features_in_:
                    raise EstimationError("the model was fitted on covariates alone; pass "
                                          "features=None.")
                _check_columns("features", F.shape[1], names, self.n_features_in_, self.feature_names_in_)
            X = self.scaler_.transform(F)
            X = X if self.pca_ is None else self.pca_.transform(X)
            n_units = F.shape[0]
        if fitting:
            self.n_covariates_, self.covariate_names_ = 0, None
        if covariates is None:
            if self.n_covariates_:
                raise EstimationError(
                    f"the model was fitted with {self.n_covariates_} covariates; pass the same "
                    "covariates for these units."
                )
            return X
        C, names = as_matrix(covariates, "covariates", n_units,
                             reference="features" if X is not None else "treatment")
        if fitting:
            self.n_covariates_, self.covariate_names_ = C.shape[1], names
        else:
            _check_columns("covariates", C.shape[1], names, self.n_covariates_, self.covariate_names_)
        return C if X is None else np.hstack([X, C])

    def fit(
        self, features: ArrayLike | None, treatment: ArrayLike, outcome: ArrayLike, *,
        covariates: ArrayLike | None = None, groups: ArrayLike | None = None,
        groups_name: str = "groups",
    ) -> EffectModel:
        """Trim (or clip) on out-of-fold propensities, then fit the learner with cross-fitting.

        Parameters
        ----------
        features : array-like or DataFrame of shape (n_units, n_features), or None
            Image features; a frame's column names are kept and checked at prediction. None
            fits on ``covariates`` alone (the image-free baseline).
        treatment : array-like of shape (n_units,)
            0/1 treatment.
        outcome : array-like of shape (n_units,)
        covariates : array-like or DataFrame of shape (n_units, n_covariates), default=None
            Tabular covariates, used as given.
        groups : array-like of shape (n_units,), default=None
            Cluster labels (villages, image keys, :func:`models.crossfit.spatial_blocks`): a
            group's units share a cross-fitting fold, and the headline ATE's error is
            cluster-robust (``estimates_.variance`` says so).
        groups_name : str, default="groups"
            The column the labels came from, named in messages and in ``variance``.

        Raises
        ------
        EstimationError
            For invalid settings or inputs: lengths that differ, non-binary or constant
            treatment, NaN or infinite values, too few units in an arm, NaN or empty group
            labels, a single cluster, a trim that removes an arm, no overlap.
        """
        self._check_settings()
        t_all, y_all = check_treatment_outcome(treatment, outcome)
        X_all = self._design_matrix(features, covariates, t_all.size)
        g_all = check_groups(groups, groups_name, t_all.size, treatment=t_all)
        if g_all is not None and np.unique(g_all).size < self.cv:
            raise EstimationError(
                f"{groups_name} has {np.unique(g_all).size} distinct labels, fewer than cv={self.cv} "
                "folds; use a smaller cv or finer groups."
            )
        n_arm = int(min(t_all.sum(), t_all.size - t_all.sum()))
        if n_arm < 2 * self.cv:
            raise EstimationError(
                f"the smaller arm has {n_arm} units, too few for {self.cv}-fold cross-fitting; "
                f"it needs at least {2 * self.cv} treated and {2 * self.cv} control units."
            )
        known = t_all.mean() if self.propensity is None else self.propensity
        propensity = float(known) if self.design == "rct" else None
        plan = plan_overlap(X_all, t_all, design=self.design, trim=self.trim, clip=self.clip,
                            cv=self.cv, groups=g_all, random_state=_seed(self.random_state),
                            min_arm=2 * self.cv)
        keep = plan.keep
        X, t, y = X_all[keep], t_all[keep], y_all[keep]
        g = None if g_all is None else g_all[keep]
        if g is not None and np.unique(g).size < self.cv:
            raise EstimationError(
                f"after trimming, {groups_name} has {np.unique(g).size} distinct labels, fewer than "
                f"cv={self.cv}; lower trim or use finer groups.")
        self.estimator_ = cate_methods.fit_cate(self.method, self, X, t, y, g, propensity)
        self.versions_ = _versions()
        self.estimates_ = self._summarise(X_all, X, t, y, g, propensity, plan, groups_name)
        est = self.estimates_
        logger.info("%s, %d units: ATE %.4g [%.4g, %.4g]", self.method, t.size, est.ate, est.ate_lo, est.ate_hi)
        return self

    def _summarise(self, X_all: NDArray[Any], X: NDArray[Any], t: NDArray[Any], y: NDArray[Any],
                   groups: NDArray[Any] | None, propensity: float | None, plan: Any,
                   groups_name: str) -> EffectEstimates:
        est, spec = self.estimator_, cate_methods.check_method(self.method)
        nu, diagnostics = nuisance_diagnostics(X, t, y, groups=groups, propensity=propensity, overlap=plan.overlap,
                                               cv=self.cv, clip=self.clip, random_state=_seed(self.random_state))
        scores = dml_dr_scores(est, self.method, X, t) if spec.ate_source != "aipw" else None
        source = spec.ate_source
        if scores is None:
            scores, source = nu.dr_scores(t, y, clip=self.clip or 0.0), "aipw"
        ate, se = headline_ate(scores, groups)
        if not self.diagnostics:
            diagnostics = {"aipw": diagnostics["aipw"]}
        cate, lo, hi = cate_methods.predict_cate(est, self.method, self, X_all)
        held = heldout_cate(est, self.method, X)
        held = np.ravel(est.effect(X)) if held is None else held
        calibrated = calibrated_cate_intervals(cate, lo, hi, held, nu.mu1 - nu.mu0)
        self.cate_bias_bound_ = calibrated.bias_bound
        has_interval = cate_methods.has_intervals(self.method, self)
        scores_ = cate_methods.nuisance_scores(est, self.method, self.design)
        if scores_["outcome_r2"] is None:  # metalearners: no econml first stage
            scores_["outcome_r2"] = nu.scores["outcome_r2"]
        sensitivity = None
        if self.design == "observational":
            from eocausal.models.effects.sensitivity import sensitivity_bounds

            sensitivity = sensitivity_bounds(est, self.method)
        return EffectEstimates(
            ate=ate, ate_lo=ate - _Z95 * se, ate_hi=ate + _Z95 * se, ate_se=se,
            method=self.method, design=self.design, n_used=int(t.size),
            cate=cate, cate_lo=lo, cate_hi=hi,
            naive=difference_in_means(t, y), propensity_used=propensity,
            nuisance_scores=scores_, model=self, ate_source=source,
            cate_interval=spec.interval if has_interval else "none", diagnostics=diagnostics,
            estimand=plan.estimand, variance=variance_label(groups, groups_name),
            trimming=plan.trimming, overlap=plan.overlap, used=plan.keep.copy(),
            cate_lo_calibrated=calibrated.lo, cate_hi_calibrated=calibrated.hi,
            calibration=calibrated.summary(), sensitivity=sensitivity,
        )

    def transform(self, features: ArrayLike, covariates: ArrayLike | None = None) -> NDArray[np.float64]:
        """The learner's input for these units: scaled (and reduced) features, then covariates.

        Lets other estimators (the ATE table, evaluation) work on exactly what the learner saw.
        Raises EstimationError for columns that differ from those in ``fit``.
        """
        check_is_fitted(self, "estimator_")
        return self._design_matrix(features, covariates, None)

    def predict_cate(
        self, features: ArrayLike | None, covariates: ArrayLike | None = None, *,
        alpha: float = 0.05, calibrated: bool = False,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Effects and intervals at units or grid cells, in the trial or outside it.

        ``features`` (n_cells, n_features) come from the same encoder and settings as in
        ``fit``; ``covariates`` are required exactly when the fit had them; ``alpha`` is one
        minus the intervals' coverage; ``calibrated`` widens the learner's intervals with the
        bias bound learned in ``fit`` (:mod:`models.effects.intervals`). Returns ``cate, lo,
        hi``, each of shape (n_cells,).

        Raises
        ------
        EstimationError
            If the columns differ in number or names from those in ``fit``, or hold NaN.
        """
        check_is_fitted(self, "estimator_")
        X = self._design_matrix(features, covariates, None)
        cate, lo, hi = cate_methods.predict_cate(self.estimator_, self.method, self, X, alpha=alpha)
        if not calibrated:
            return cate, lo, hi
        from eocausal.models.effects.intervals import bias_aware_critical_value

        z = float(stats.norm.ppf(1 - alpha / 2))
        se = (hi - lo) / (2 * z)
        if np.isfinite(se).all():
            half = bias_aware_critical_value(self.cate_bias_bound_ / np.maximum(se, 1e-12), alpha) * se
        else:
            half = np.full(cate.shape, z * self.estimates_.calibration["heldout_rmse"])
        return cate, cate - half, cate + half

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


def _seed(rs: Any) -> int | None:
    return rs if rs is None or isinstance(rs, Integral) else int(np.random.RandomState(rs).randint(2**31))


def estimate_effects(
    features: ArrayLike | None, treatment: ArrayLike, outcome: ArrayLike, *,
    covariates: ArrayLike | None = None, design: str = _D.design,
    propensity: float | None = _D.propensity,
    method: str = _D.method, n_components: int | None = _D.n_components,
    n_estimators: int = _D.n_estimators, min_samples_leaf: int = _D.min_samples_leaf,
    max_samples: float | str = _D.max_samples,
    cv: int = _D.cv, groups: ArrayLike | None = None, n_jobs: int | None = -1,
    random_state: int | np.random.RandomState | None = 0, degree: int = _D.degree,
    n_bootstrap: int = _D.n_bootstrap, diagnostics: bool = False,
    trim: float | None = _D.trim, clip: float | None = _D.clip, groups_name: str = "groups",
) -> EffectEstimates:
    """Estimate the ATE and per-unit effects of a binary treatment from image features.

    The estimate stage as a plain function; the parameters are those of
    :class:`EffectModel` and :meth:`EffectModel.fit`. ``features=None`` with ``covariates``
    is the image-free baseline.

    Returns
    -------
    estimates : EffectEstimates
        Doubly robust ATE with a 95% interval, per-unit effects with intervals, the
        difference in means as the naive baseline, and ``model`` for new locations.

    Raises
    ------
    EstimationError
        For invalid settings or inputs; an unknown ``method`` lists the valid names.
    """
    model = EffectModel(
        design=design, propensity=propensity, method=method, n_components=n_components,
        n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, max_samples=max_samples,
        cv=cv, n_jobs=n_jobs, random_state=random_state, degree=degree, n_bootstrap=n_bootstrap, diagnostics=diagnostics,
        trim=trim, clip=clip,
    )
    return model.fit(features, treatment, outcome, covariates=covariates, groups=groups,
                     groups_name=groups_name).estimates_
