"""Joining units to features and dropping incomplete rows, with counts in the messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.inputs import UnmatchedUnitsWarning, drop_incomplete, join_features

from eocausal.errors import EstimationError, MissingColumnError


def units() -> pd.DataFrame:
    return pd.DataFrame({"unit_id": ["a", "b", "c", "d"], "treatment": [1, 0, 1, 0]})


def test_join_keeps_unit_order_and_appends_features() -> None:
    features = pd.DataFrame({"unit_id": ["d", "c", "b", "a"], "f0": [4.0, 3.0, 2.0, 1.0]})
    joined = join_features(units(), features)
    assert joined["unit_id"].tolist() == ["a", "b", "c", "d"]
    assert joined["f0"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_join_on_a_shared_image_key() -> None:
    table = units().assign(image_key=[7, 7, 9, 9])
    features = pd.DataFrame({"image_key": [9, 7], "f0": [0.9, 0.7]})
    joined = join_features(table, features, on="image_key")
    assert joined["f0"].tolist() == [0.7, 0.7, 0.9, 0.9]


def test_disjoint_ids_raise_with_counts() -> None:
    features = pd.DataFrame({"unit_id": [1, 2, 3], "f0": [0.0, 0.0, 0.0]})
    with pytest.raises(EstimationError, match=r"share no ids: 4 units in 'unit_id' \(e.g. 'a', 'b', "
                                              r"'c', \.\.\., \w+\) and 3 feature rows .*e.g. 1, 2, 3, int64"):
        join_features(units(), features)


def test_partial_match_warns_with_counts() -> None:
    features = pd.DataFrame({"unit_id": ["a", "b"], "f0": [0.0, 1.0]})
    with pytest.warns(UnmatchedUnitsWarning, match=r"2 of 4 units have no features \(ids e.g. 'c', 'd'\)"):
        joined = join_features(units(), features)
    assert len(joined) == 2


def test_duplicate_feature_ids_raise() -> None:
    features = pd.DataFrame({"unit_id": ["a", "a", "b"], "f0": [0.0, 1.0, 2.0]})
    with pytest.raises(EstimationError, match=r"features repeat 1 ids in 'unit_id' \(e.g. 'a'\)"):
        join_features(units(), features)


def test_missing_id_column_raises() -> None:
    with pytest.raises(MissingColumnError, match="features have no column 'unit_id'"):
        join_features(units(), pd.DataFrame({"id": ["a"]}))


def test_drop_incomplete_reports_count() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0], "y": [1.0, 2.0, np.nan], "z": [np.nan] * 3})
    kept, n_dropped = drop_incomplete(frame, ["x", "y"])
    assert n_dropped == 2 and kept["x"].tolist() == [1.0]
