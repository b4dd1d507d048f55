"""The implied ATE of a cluster model, augmented with its held-out residuals (AIPW).

The plug-in ``mean_i sum_k p_k(x_i) mu_k`` inherits every error of the cluster boundary and
the outcome head, and its model-based interval covered the true ATE in 13 of 20 benchmark
seeds. Augmenting it with the residuals of held-out units (each from the fold model that did
not train on it) gives the doubly robust score of Robins, Rotnitzky and Zhao, which is
unbiased in a trial whatever the model's errors (the propensity is known) and whose sample
variance carries the shares, the mu's, the outcome head and the spread of the effect
together (Chernozhukov et al. 2018, cross-fitted).
"""

from __future__ import annotations

import numpy as np

__all__ = ["augmented_ate"]


def augmented_ate(outcome: np.ndarray, treatment: np.ndarray, propensity: np.ndarray,
                  untreated: np.ndarray, effect: np.ndarray) -> tuple[float, float]:
    """Cross-fitted AIPW estimate of the ATE and its standard error.

    Parameters
    ----------
    outcome, treatment, propensity : ndarray of shape (n_units,)
    untreated : ndarray of shape (n_units,)
        Held-out E[Y(0) | x] of each unit.
    effect : ndarray of shape (n_units,)
        Held-out effect the cluster model implies for the unit's image, sum_k p_k mu_k.

    Returns
    -------
    ate, se : float
    """
    t, e = np.asarray(treatment, float), np.asarray(propensity, float)
    resid = np.asarray(outcome, float) - np.asarray(untreated, float)
    psi = effect + t * (resid - effect) / e - (1 - t) * resid / (1 - e)
    return float(psi.mean()), float(psi.std(ddof=1) / np.sqrt(len(psi)))
