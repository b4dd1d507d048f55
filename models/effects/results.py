"""The result of one effect fit, and the nuisance diagnostics every fit reports.

Kept apart from :mod:`models.effects.estimate` so the value object that the stage layer
writes to ``summary.json`` and ``effects.gpkg`` reads on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from eocausal.models.effects.ate import aipw
from eocausal.models.effects.crossfit import Nuisances, crossfit_nuisances, make_folds
from eocausal.models.effects.diagnostics import covariate_balance
from numpy.typing import NDArray

__all__ = ["EffectEstimates", "ModelVersionWarning", "nuisance_diagnostics"]


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
    ``model``: the fitted :class:`~models.effects.estimate.EffectModel`, to predict at new locations and to save.
    ``ate_source``: where the ATE comes from (``causal_forest``, ``linear`` or ``aipw``, see
    :mod:`models.cate`); ``cate_interval``: what the per-unit intervals rest on (``blb``,
    ``statsmodels``, ``bootstrap`` or ``none``: then ``cate_lo``/``cate_hi`` are NaN).
    ``diagnostics``: with ``diagnostics=True`` or an AIPW ATE, the cross-fitted nuisance
    scores (``propensity_auc``, ``propensity_log_loss``), ``overlap`` (observational) and
    ``max_abs_smd_before``/``after``; JSON-ready.
    ``estimand``: what ``ate`` estimates (``ATE``, or the ATE on the trimmed population, or a
    clipped weighted effect); ``variance``: what its interval rests on (cluster-robust with
    the number of clusters when groups were given); ``trimming``: the rule applied and the
    counts; ``overlap``: the overlap summary of the units used; ``used``: mask over the input
    units of those in the estimate (``cate`` and its intervals cover every input unit, trimmed
    ones included, so they line up with the units table; ``n_used`` counts the kept ones).
    ``cate_lo_calibrated``, ``cate_hi_calibrated``: bias-aware per-unit intervals
    (:mod:`models.effects.intervals`), described in ``calibration``; ``sensitivity``: omitted-
    variable-bias bounds for observational designs (:mod:`models.effects.sensitivity`).
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
    model: Any = field(default=None, repr=False)  # the fitted EffectModel
    ate_source: str = "causal_forest"
    cate_interval: str = "blb"
    diagnostics: dict[str, Any] = field(default_factory=dict)
    estimand: str = "ATE"
    variance: str = "influence function, units independent (no groups given)"
    trimming: dict[str, Any] | None = None
    overlap: dict[str, Any] | None = None
    used: NDArray[np.bool_] | None = field(default=None, repr=False)
    cate_lo_calibrated: NDArray[np.float64] | None = field(default=None, repr=False)
    cate_hi_calibrated: NDArray[np.float64] | None = field(default=None, repr=False)
    calibration: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = self.n_used if self.used is None else self.used.size
        for name in ("cate", "cate_lo", "cate_hi", "used", "cate_lo_calibrated", "cate_hi_calibrated"):
            values = getattr(self, name)
            if values is None:
                continue
            if values.shape != (n,):
                raise ValueError(f"{name} has shape {values.shape}; expected ({n},).")
            values.setflags(write=False)
        if np.isfinite([self.ate_lo, self.ate_hi]).all() and not self.ate_lo <= self.ate <= self.ate_hi:
            raise ValueError(f"ATE {self.ate} lies outside its interval [{self.ate_lo}, {self.ate_hi}].")

    def summary(self) -> dict[str, Any]:
        """The scalar results as plain Python values, for ``summary.json``."""
        skip = ("cate", "cate_lo", "cate_hi", "model", "used", "cate_lo_calibrated",
                "cate_hi_calibrated")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}



def nuisance_diagnostics(
    X: NDArray[np.float64], t: NDArray[np.int64], y: NDArray[np.float64], *,
    groups: NDArray[Any] | None, propensity: float | None, overlap: dict[str, Any] | None,
    cv: int, clip: float | None, random_state: int | None,
) -> tuple[Nuisances, dict[str, Any]]:
    """Cross-fitted nuisances on grouped folds of the units used, and JSON-ready diagnostics.

    The nuisances give the AIPW scores (the headline of learners without their own) and the
    reference contrast of the calibrated per-unit intervals.
    """
    seed = random_state
    folds = make_folds(t, cv=cv, groups=groups, random_state=seed)
    nu = crossfit_nuisances(X, t, y, folds=folds, propensity=propensity, random_state=seed)
    clip = clip or 0.0
    e = np.clip(nu.e, clip, 1 - clip) if clip else nu.e
    balance = covariate_balance(X, t, None if propensity is not None else e)
    result = aipw(nu.dr_scores(t, y, clip=clip), clusters=groups)
    smd = np.abs(balance.to_numpy(dtype=float))
    diagnostics = {
        "nuisance_scores": dict(nu.scores), "overlap": overlap,
        "max_abs_smd_before": float(np.nanmax(smd[:, 0])) if np.isfinite(smd[:, 0]).any() else None,
        "max_abs_smd_after": float(np.nanmax(smd[:, 1])) if np.isfinite(smd[:, 1]).any() else None,
        "aipw": {"ate": result.estimate, "se": result.se},
    }
    return nu, diagnostics
