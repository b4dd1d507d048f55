"""Overlap handled before any learner is fitted: trim or clip, then check, then say the estimand.

With propensities near 0 or 1 a learner's doubly robust average rests on a handful of
weights (an observational study with propensities down to 3e-5 gave the causal forest an
ATE of -57,850 for a true +1,800). So every learner of :class:`~models.effects.estimate.
EffectModel` gets the same treatment: out-of-fold propensities on the study's folds; units
outside ``[trim, 1 - trim]`` dropped (Crump, Hotz, Imbens and Mitnik 2009) or propensities
bounded to ``[clip, 1 - clip]``; the overlap check run on the sample that is estimated on;
and the estimand named for what it is ("ATE on the trimmed population").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from eocausal.models.effects.crossfit import crossfit_propensity, make_folds
from eocausal.models.effects.diagnostics import check_overlap
from numpy.typing import NDArray

from eocausal.errors import EstimationError

__all__ = ["OverlapPlan", "estimand_label", "plan_overlap"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True, eq=False)
class OverlapPlan:
    """Which units a learner is fitted on, and what the estimate then means.

    ``keep``: boolean mask over the input units; ``propensity``: their out-of-fold
    propensity (None in a trial); ``trimming``: JSON-ready ``rule``, ``threshold``,
    ``n_units``, ``n_affected``, ``n_used`` (None when no rule applies); ``overlap``: the
    :func:`~models.effects.diagnostics.check_overlap` summary of the kept units; ``estimand``.
    """

    keep: NDArray[np.bool_]
    propensity: NDArray[np.float64] | None
    trimming: dict[str, Any] | None
    overlap: dict[str, Any] | None
    estimand: str


def estimand_label(rule: str | None, threshold: float | None, n_affected: int, n_used: int,
                   n_units: int) -> str:
    """The estimand in words: ``ATE``, ``ATE on the trimmed population (...)`` or a clipped one."""
    if rule is None or not n_affected:
        return "ATE"
    if rule == "trim":
        return (f"ATE on the trimmed population: the {n_used} of {n_units} units with an estimated "
                f"propensity in [{threshold:g}, {1 - threshold:g}]")
    return (f"weighted effect, not the ATE: propensities of {n_affected} of {n_units} units clipped "
            f"to [{threshold:g}, {1 - threshold:g}], which down-weights them relative to the ATE")


def plan_overlap(
    X: NDArray[np.float64], t: NDArray[np.int64], *, design: str, trim: float | None,
    clip: float | None, cv: int, groups: NDArray[Any] | None, random_state: int | None,
    check: bool = True, min_arm: int = 2,
) -> OverlapPlan:
    """Out-of-fold propensities, the trim (or clip) rule applied, and overlap checked after it.

    In a trial (``design="rct"``) nothing is estimated or dropped. ``clip`` turns trimming
    off. ``min_arm`` is the fewest units of each arm the learner needs after trimming.

    Raises
    ------
    EstimationError
        When trimming removes every unit or leaves an arm with fewer than ``min_arm`` units
        (the message gives the counts and the propensity range), or when the kept units do not
        overlap (:func:`~models.effects.diagnostics.check_overlap`).
    """
    n = t.size
    if design == "rct":
        return OverlapPlan(np.ones(n, dtype=bool), None, None, None, "ATE")
    folds = make_folds(t, cv=cv, groups=groups, random_state=random_state)
    e = crossfit_propensity(X, t, folds=folds, random_state=random_state)
    keep = np.ones(n, dtype=bool)
    rule, threshold, affected = None, None, 0
    if clip is not None:
        rule, threshold = "clip", float(clip)
        affected = int(((e < clip) | (e > 1 - clip)).sum())
    elif trim is not None:
        rule, threshold = "trim", float(trim)
        keep = (e >= trim) & (e <= 1 - trim)
        affected = int((~keep).sum())
        n_t, n_c = int(t[keep].sum()), int((1 - t[keep]).sum())
        if min(n_t, n_c) < min_arm:
            raise EstimationError(
                f"trim={trim} removes {affected} of {n} units and leaves {n_t} treated and {n_c} "
                f"control (estimated propensities range {e.min():.2g}-{e.max():.2g}); at least "
                f"{min_arm} of each are needed. Lower trim, or restrict the units to a region "
                "where both arms occur."
            )
    overlap = None
    if check:
        e_used = np.clip(e[keep], clip, 1 - clip) if clip is not None else e[keep]
        overlap = check_overlap(t[keep], e_used)
    trimming = None
    if rule is not None:
        trimming = {"rule": rule, "threshold": threshold, "n_units": n, "n_affected": affected,
                    "n_used": int(keep.sum()), "propensity_min": float(e.min()),
                    "propensity_max": float(e.max())}
        logger.info("%s at %g affected %d of %d units", rule, threshold, affected, n)
    estimand = estimand_label(rule, threshold, affected, int(keep.sum()), n)
    return OverlapPlan(keep, e, trimming, overlap, estimand)
