"""Join units to their image features and drop incomplete rows, saying how many and why.

Units and features come from different files (the units table, ``features.parquet``) and
often from different hands; ids that do not match are the commonest silent failure of a
study (an integer id in one file, a zero-padded string in the other). These helpers fail
loudly when nothing matches and warn with counts when only part does.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import pandas as pd

from eocausal.errors import EstimationError, MissingColumnError

__all__ = ["UnmatchedUnitsWarning", "drop_incomplete", "join_features"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


class UnmatchedUnitsWarning(UserWarning):
    """Some units have no features (or features no units); those units are left out."""


def _examples(values: pd.Index, limit: int = 3) -> str:
    shown = ", ".join(repr(v) for v in list(values[:limit]))
    return shown + (", ..." if len(values) > limit else "")


def join_features(
    units: pd.DataFrame, features: pd.DataFrame, *, on: str = "unit_id", features_on: str | None = None,
) -> pd.DataFrame:
    """Inner join of units and features on an id, with counts for whatever does not match.

    Parameters
    ----------
    units : DataFrame
        One row per unit with the id column ``on``.
    features : DataFrame
        One row per id (a unit, or an image shared by several units) with ``features_on``.
    on : str, default="unit_id"
        Id column of ``units``.
    features_on : str, default=None
        Id column of ``features``; the same as ``on`` when None.

    Returns
    -------
    joined : DataFrame
        Units (in their order) that have features, with the feature columns appended.

    Raises
    ------
    MissingColumnError
        If an id column is missing.
    EstimationError
        If the ids are disjoint, or ``features`` repeats an id.

    Warns
    -----
    UnmatchedUnitsWarning
        When some units have no features, with the count and examples.
    """
    features_on = features_on or on
    for frame, column, name in ((units, on, "units"), (features, features_on, "features")):
        if column not in frame.columns:
            raise MissingColumnError(
                f"{name} have no column {column!r}; columns are {', '.join(map(str, frame.columns[:10]))}. "
                "Name the id column with on= / features_on=."
            )
    dup = features[features_on].duplicated()
    if dup.any():
        raise EstimationError(
            f"features repeat {int(dup.sum())} ids in {features_on!r} (e.g. "
            f"{_examples(pd.Index(features.loc[dup, features_on].unique()))}); keep one row per id."
        )
    unit_ids, feature_ids = pd.Index(units[on]), pd.Index(features[features_on])
    missing = unit_ids.difference(feature_ids)
    if len(missing) == len(unit_ids.unique()):
        raise EstimationError(
            f"units and features share no ids: {len(unit_ids)} units in {on!r} (e.g. "
            f"{_examples(unit_ids)}, {unit_ids.dtype}) and {len(feature_ids)} feature rows in "
            f"{features_on!r} (e.g. {_examples(feature_ids)}, {feature_ids.dtype}). Check that "
            "both come from the same study and that the ids have the same type and format."
        )
    joined = units.merge(features, left_on=on, right_on=features_on, how="inner", sort=False,
                         suffixes=("", "_feature"))
    n_dropped = len(units) - len(joined)
    if n_dropped:
        warnings.warn(UnmatchedUnitsWarning(
            f"{n_dropped} of {len(units)} units have no features (ids e.g. {_examples(missing)}) "
            "and are left out of the estimate."
        ), stacklevel=2)
    unused = feature_ids.difference(unit_ids)
    if len(unused):
        logger.info("%d feature rows match no unit", len(unused))
    return joined.reset_index(drop=True)


def drop_incomplete(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Drop rows with NaN in any of ``columns``; return the rest and the number dropped.

    Dropping, not imputing: a handful of incomplete rows (7 of 2,082 in the Uganda trial)
    changes nothing but an imputation model would add an assumption. The caller reports
    the count (the CLI prints it, ``summary.json`` keeps it).
    """
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise MissingColumnError(f"columns {absent} are missing; the table has "
                                 f"{', '.join(map(str, frame.columns[:12]))}.")
    incomplete = frame[list(columns)].isna().any(axis=1)
    if incomplete.any():
        logger.info("dropping %d rows with NaN in %s", int(incomplete.sum()), list(columns))
    return frame.loc[~incomplete].reset_index(drop=True), int(incomplete.sum())
