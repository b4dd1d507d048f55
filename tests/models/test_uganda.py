"""The Uganda YOP trial units (causalimages tutorial data) with folds grouped by image key.

Image features are per-band mean and standard deviation of each unit's 35x35 patch, joined by
``image_key`` (327 images for 2,082 units). The 7 units with X3/X4 missing are dropped.
X2, X4 and X6 are W * X1, W * X3 and W * X5 (checked below): interactions with treatment, so
they are left out of the covariates: with them the treatment is perfectly predictable and an
outcome model would learn the effect from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.estimate import estimate_effects

from eocausal.errors import EstimationError
from tests.models.worlds import load_uganda

COVARIATES = ["X1", "X3", "X5"]


@pytest.fixture(scope="module")
def uganda(data_dir) -> tuple[pd.DataFrame, int]:
    return load_uganda(data_dir)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("band")]


def test_join_and_drop_counts(uganda) -> None:
    frame, n_dropped = uganda
    assert n_dropped == 7 and len(frame) == 2075
    assert frame["image_key"].nunique() == 325  # 2 of the 327 images held only dropped units
    assert len(feature_columns(frame)) == 6


def test_x2_x4_x6_are_treatment_interactions(data_dir) -> None:
    units = pd.read_csv(data_dir / "rct_geo" / "causalimages_uganda_units.csv")
    for product, base in (("X2", "X1"), ("X4", "X3"), ("X6", "X5")):
        np.testing.assert_allclose(units[product], units["W"] * units[base])


def test_treatment_interactions_leave_no_overlap(uganda) -> None:
    frame, _ = uganda
    with pytest.raises(EstimationError, match="no overlap in the propensity"):
        estimate_ate(frame[["X1", "X2", "X3", "X4", "X5", "X6"]], frame["W"], frame["Y"], methods=["ipw"],
                     groups=frame["image_key"], cv=3)


def test_ate_with_folds_grouped_by_image(uganda) -> None:
    frame, _ = uganda
    fit = estimate_effects(frame[feature_columns(frame)], frame["W"], frame["Y"],
                           covariates=frame[COVARIATES], groups=frame["image_key"].to_numpy(),
                           method="dr_learner", n_components=None, cv=3)
    # difference in means 0.75 SD (cluster-robust se 0.075); dr_learner 0.76 [0.64, 0.88] (HC0:
    # econml's own interval is not clustered; estimate_ate's cluster-robust one is [0.60, 0.91])
    assert 0.55 < fit.ate < 0.95
    assert fit.ate_lo < fit.naive["estimate"] < fit.ate_hi
    assert fit.ate_hi - fit.ate_lo < 0.5


def test_ate_table_with_clustered_errors(uganda) -> None:
    frame, _ = uganda
    X = frame[feature_columns(frame) + COVARIATES]
    groups = frame["image_key"]
    clustered = estimate_ate(X, frame["W"], frame["Y"], design="rct", groups=groups, cv=3,
                             methods=["difference_in_means", "aipw"])
    plain = estimate_ate(X, frame["W"], frame["Y"], design="rct", cv=3, methods=["difference_in_means"])
    dim_c, dim_p = clustered.estimates["difference_in_means"], plain.estimates["difference_in_means"]
    assert dim_c.estimate == pytest.approx(0.7507, abs=1e-4)
    assert dim_c.se > 1.15 * dim_p.se  # units sharing an image are correlated: 0.075 against 0.062
    assert clustered.estimates["aipw"].lo < 0.75 < clustered.estimates["aipw"].hi
