"""Image-free and combined baselines: what do the images add over the tabular covariates?

Every study of effects from satellite imagery reports the image model beside a tabular-only
and an image-plus-tabular model (the EO-RCT heterogeneity paper compares exactly these
three). :func:`compare_feature_sets` fits the same learner on each, and judges every set's
held-out priorities against one set of doubly robust scores, those of the richest model
(images and covariates), so RATE and BLP differences come from the priorities, not from
different nuisance models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.effects.estimate import EffectModel
from eocausal.models.effects.settings import DEFAULT_SETTINGS as _D
from eocausal.models.evaluation.compare import (
    crossfit_cate,
    evaluate_heterogeneity,
    judge_priorities,
)
from eocausal.models.evaluation.plots import plot_feature_sets
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from eocausal.errors import EstimationError

__all__ = ["FEATURE_SETS", "FeatureSetComparison", "compare_feature_sets"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

FEATURE_SETS = ("tabular", "image", "image+tabular")


@dataclass(frozen=True, eq=False)
class FeatureSetComparison:
    """The three models side by side: ``table`` (one row per feature set) and ``figure``."""

    table: pd.DataFrame
    reports: dict[str, Any]

    def figure(self) -> Figure:
        """ATE, AUTOC and Qini with 95% intervals per feature set, one panel each."""
        return plot_feature_sets(self.table)

    def summary(self) -> dict[str, Any]:
        """Plain values for ``summary.json``: the table as records."""
        return {"feature_sets": self.table.reset_index().to_dict(orient="records")}


def compare_feature_sets(
    features: ArrayLike, covariates: ArrayLike, treatment: ArrayLike, outcome: ArrayLike, *,
    method: str = _D.method, design: str = _D.design, propensity: float | None = _D.propensity,
    groups: ArrayLike | None = None, groups_name: str = "groups", cv: int = _D.cv,
    n_components: int | None = _D.n_components, n_estimators: int = _D.n_estimators,
    min_samples_leaf: int = _D.min_samples_leaf, max_samples: float | str = _D.max_samples,
    trim: float | None = _D.trim, clip: float | None = _D.clip, n_bootstrap: int = 200,
    n_jobs: int | None = -1,
    random_state: int | None = 0, sets: tuple[str, ...] = FEATURE_SETS,
) -> FeatureSetComparison:
    """Tabular-only, image-only and image+tabular models of one learner, in one table.

    Each row: the headline ATE (``ate``, ``ate_se``, ``ate_lo``, ``ate_hi``, ``estimand``,
    ``variance``: cluster-robust with groups), RATE ``autoc``/``qini`` with half-sample
    bootstrap errors (clustered), and the BLP calibration ``blp_slope`` with its error. The
    doubly robust scores that judge all three come from the image+tabular nuisances. Trimming
    uses each model's own propensity, so ``n_used`` can differ between rows.

    Raises
    ------
    EstimationError
        For an unknown feature set name, or invalid inputs (as
        :func:`~models.effects.estimate.estimate_effects`).
    """
    unknown = [s for s in sets if s not in FEATURE_SETS]
    if unknown or not sets:
        raise EstimationError(f"unknown feature set(s) {unknown}; choose from {', '.join(FEATURE_SETS)}.")
    inputs = {"tabular": (None, covariates), "image": (features, None),
              "image+tabular": (features, covariates)}
    common = dict(design=design, propensity=propensity, method=method, n_components=n_components,
                  n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                  max_samples=max_samples, cv=cv, n_jobs=n_jobs, random_state=random_state,
                  trim=trim, clip=clip)
    # one judge for all: scores (and trimmed units) of the richest model
    full = evaluate_heterogeneity(features, treatment, outcome, covariates=covariates,
                                  groups=groups, groups_name=groups_name, n_bootstrap=n_bootstrap,
                                  **{k: v for k, v in common.items()})
    rows, reports = [], {}
    for name in sets:
        F, C = inputs[name]
        fit = EffectModel(**common).fit(F, treatment, outcome, covariates=C, groups=groups,
                                        groups_name=groups_name).estimates_
        if name == "image+tabular":
            report = full
        else:
            X = fit.model.transform(F, C)  # this set's own scaling and PCA
            report = _judge_with(full, name, X, treatment, outcome, groups, common, n_bootstrap)
        reports[name] = {"fit": fit, "heterogeneity": report}
        rows.append({
            "feature_set": name, "n_used": fit.n_used, "ate": fit.ate, "ate_se": fit.ate_se,
            "ate_lo": fit.ate_lo, "ate_hi": fit.ate_hi, "estimand": fit.estimand,
            "variance": fit.variance, "autoc": report.autoc.estimate, "autoc_se": report.autoc.se,
            "qini": report.qini.estimate, "qini_se": report.qini.se,
            "blp_slope": None if report.blp is None else report.blp.slope,
            "blp_slope_se": None if report.blp is None else report.blp.slope_se,
        })
        logger.info("feature set %s: %s", name, rows[-1])
    return FeatureSetComparison(table=pd.DataFrame(rows).set_index("feature_set"), reports=reports)


def _judge_with(full: Any, name: str, X: Any, treatment: ArrayLike, outcome: ArrayLike,
                groups: ArrayLike | None, common: dict[str, Any], n_bootstrap: int) -> Any:
    """Held-out priorities of one feature set, judged by the full model's scores and folds."""
    settings = EffectModel(**common)
    t = np.asarray(treatment).astype(np.int64)
    y = np.asarray(outcome, dtype=float)
    keep = full.used
    g = None if groups is None else np.asarray(groups)[keep]
    known = None
    if common["design"] == "rct":
        known = float(t[keep].mean()) if common["propensity"] is None else float(common["propensity"])
    priorities = crossfit_cate(common["method"], settings, X[keep], t[keep], y[keep],
                               folds=full.folds, groups=g, propensity=known)
    return judge_priorities(name, priorities, full, groups=g, n_bootstrap=n_bootstrap,
                            random_state=common["random_state"])
