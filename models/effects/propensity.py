"""Treatment models for the first stage of double machine learning.

In a randomized trial the assignment probability is known, and estimating it again only adds
noise; :class:`KnownPropensity` hands that number to econml's DML as if it were a fitted
classifier. In an observational study the images stand in for the confounders, so
:func:`make_propensity_model` builds a classifier of treatment on the image features.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from eocausal.errors import EstimationError

__all__ = ["ClippedPropensity", "KnownPropensity", "make_propensity_model"]


class KnownPropensity(ClassifierMixin, BaseEstimator):
    """Classifier that predicts a known, constant probability of treatment.

    Lets the double machine learning estimators use the design's assignment probability
    (for example 0.5 in a balanced trial) instead of a fitted propensity model: the treatment
    residual ``T - p`` is then exact, which removes one source of error in a trial.

    Parameters
    ----------
    p : float, default=0.5
        Probability that a unit is treated, strictly between 0 and 1.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two treatment values seen in ``fit``.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> KnownPropensity:
        """Record the treatment classes; nothing is learned from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Ignored; accepted so the classifier fits where any classifier would.
        y : array-like of shape (n_samples,)
            Treatment, with exactly two values.
        sample_weight : array-like of shape (n_samples,), default=None
            Ignored.

        Returns
        -------
        self : KnownPropensity
        """
        if not isinstance(self.p, Real) or not 0.0 < float(self.p) < 1.0:
            raise EstimationError(
                f"KnownPropensity p must be a probability strictly between 0 and 1; got {self.p!r}."
            )
        classes = np.unique(np.asarray(y))
        if classes.size != 2:
            raise EstimationError(
                f"KnownPropensity needs a treatment with two values; got {classes.size} "
                f"({classes[:5].tolist()}). Check that both treated and control units are present."
            )
        self.classes_ = classes
        return self

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Return ``[1 - p, p]`` for every row of ``X``.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
        """
        check_is_fitted(self)
        n_samples = len(X)
        return np.tile([1.0 - self.p, self.p], (n_samples, 1))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Return the more likely class for every row (the same class for all)."""
        proba = self.predict_proba(X)
        return self.classes_[(proba[:, 1] >= 0.5).astype(int)]


class ClippedPropensity(ClassifierMixin, BaseEstimator):
    """A treatment classifier whose probabilities are bounded to ``[clip, 1 - clip]``.

    Hands econml's learners (the causal forest has no ``min_propensity``) a propensity that
    never reaches 0 or 1, so no unit gets a weight above ``1 / clip``: the ``clip`` rule of
    :class:`~models.effects.settings.EffectSettings` applied inside every learner.

    Parameters
    ----------
    estimator : classifier
        Cloned and fitted in ``fit``.
    clip : float, default=0.01
        In (0, 0.5).

    Attributes
    ----------
    estimator_ : the fitted classifier
    classes_ : ndarray of shape (2,)
    """

    def __init__(self, estimator: Any = None, clip: float = 0.01) -> None:
        self.estimator = estimator
        self.clip = clip

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> ClippedPropensity:
        """Fit a clone of ``estimator`` (gradient boosting when None); returns self."""
        if not isinstance(self.clip, Real) or not 0.0 < float(self.clip) < 0.5:
            raise EstimationError(f"clip must be a float in (0, 0.5), such as 0.01; got {self.clip!r}.")
        base = make_propensity_model() if self.estimator is None else self.estimator
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        self.estimator_ = clone(base).fit(X, y, **kwargs)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """The fitted probabilities, bounded to ``[clip, 1 - clip]``."""
        check_is_fitted(self)
        p1 = np.clip(self.estimator_.predict_proba(X)[:, 1], self.clip, 1 - self.clip)
        return np.column_stack([1 - p1, p1])

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The more likely class of each row."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def make_propensity_model(
    random_state: int | np.random.RandomState | None = 0, *, kind: str = "gbm"
) -> BaseEstimator:
    """Build the classifier that estimates treatment from image features.

    Gradient-boosted trees with shallow trees, a slow learning rate and early stopping on a
    held-out tenth: flexible enough for non-linear confounding through the images, but
    regularised so that fitted probabilities do not collapse to 0 or 1 on a few thousand
    units (extreme propensities make the doubly robust ATE unstable).

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seed for the early-stopping split and the tree binning.
    kind : {"gbm", "logistic"}, default="gbm"
        ``"logistic"``: logistic regression on standardised inputs with a unit L2 penalty
        (``C=1``); better calibrated than boosting on a few hundred units or when
        confounding is close to linear in the features. ``LogisticRegressionCV`` would pick
        the penalty but took 3 s per fit on 600 units (45 fits per IHDP replication).

    Returns
    -------
    model : HistGradientBoostingClassifier or Pipeline

    Raises
    ------
    EstimationError
        For an unknown ``kind``.
    """
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if kind != "gbm":
        raise EstimationError(f"unknown propensity model {kind!r}; choose 'gbm' or 'logistic'.")
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=8,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=20,
        random_state=random_state,
    )
