"""Panel DML: estimates against a known effect (tabular and real NDVI panels), the pooled
estimator flagged as biased, unbalanced panels counted, and one clear error per bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.panel import estimate_panel, period_ranks
from eocausal.models.effects.panel_settings import PanelSettings
from scipy.special import expit

from eocausal.errors import EstimationError, MissingColumnError

EFFECT = 1.0


def _tabular_panel(seed: int = 0, n_units: int = 200, n_periods: int = 5) -> pd.DataFrame:
    """Unit effect a_i raises uptake and outcome; features show a_i only through noise."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n_units)
    u, t = np.repeat(np.arange(n_units), n_periods), np.tile(np.arange(n_periods), n_units)
    x = rng.standard_normal((u.size, 3)) + 0.5 * a[u, None]
    d = (rng.uniform(size=u.size) < expit(1.5 * a[u] + 0.5 * x[:, 0])).astype(float)
    y = EFFECT * d + 2.0 * a[u] + x[:, 0] + rng.standard_normal(u.size)
    return pd.DataFrame({"unit_id": [f"V{i:03d}" for i in u], "period": 2015 + t,
                         "treatment": d, "outcome": y,
                         "f0000": x[:, 0], "f0001": x[:, 1], "f0002": x[:, 2]})


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _tabular_panel()


@pytest.fixture(scope="module")
def result(panel: pd.DataFrame):
    return estimate_panel(panel, cv=3)


@pytest.mark.parametrize("method", ["mundlak", "first_difference", "within"])
def test_panel_estimators_cover_the_known_effect(result, method: str) -> None:
    row = result.table().loc[method]
    assert row["lo"] <= EFFECT <= row["hi"]
    assert abs(row["estimate"] - EFFECT) < 0.2
    assert row["se"] > 0


def test_pooled_is_biased_and_flagged(result) -> None:
    table = result.table()
    pooled = table.loc["pooled"]
    assert pooled["estimate"] - EFFECT > 0.8  # the unit effect raises uptake and outcome
    assert bool(pooled["biased"]) and pooled["diff_from_mundlak_se"] >= 3
    assert table.loc["mundlak", "biased"] is None


def test_table_and_summary_count_units_and_unit_periods(result, panel: pd.DataFrame) -> None:
    table = result.table()
    assert list(table.columns[:6]) == ["estimate", "se", "lo", "hi", "n_units", "n_unit_periods"]
    assert table.loc["mundlak", "n_unit_periods"] == len(panel) == 1000
    assert table.loc["first_difference", "n_unit_periods"] == 200 * 4  # one difference fewer
    summary = result.summary()
    assert summary["design"] == "panel" and summary["balanced"] is True
    assert summary["n_units"] == 200 and summary["n_periods"] == 5
    assert set(summary["estimates"]) == {"mundlak", "first_difference", "within", "pooled"}


def test_unbalanced_panel_works_and_says_how_many_rows_it_used(panel: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    keep = rng.uniform(size=len(panel)) > 0.25
    keep[:5] = [True, False, False, False, False]  # unit V000 seen once: left out, counted
    sub = panel[keep]
    res = estimate_panel(sub, methods=["mundlak", "first_difference"], cv=3)
    table = res.table()
    assert res.balanced is False and res.n_single_period_units >= 1
    assert table.loc["mundlak", "n_unit_periods"] == len(sub) - res.n_single_period_units
    assert table.loc["first_difference", "n_unit_periods"] < table.loc["mundlak", "n_unit_periods"]
    assert "missing from the complete grid" in table.loc["first_difference", "note"]
    assert abs(table.loc["mundlak", "estimate"] - EFFECT) < 0.25


def test_same_seed_repeats_and_other_folds_differ(panel: pd.DataFrame) -> None:
    a = estimate_panel(panel, methods=["mundlak"], cv=3, random_state=3).table()
    b = estimate_panel(panel, methods=["mundlak"], cv=3, random_state=3).table()
    c = estimate_panel(panel, methods=["mundlak"], cv=3, random_state=4).table()
    pd.testing.assert_frame_equal(a, b)
    assert a.loc["mundlak", "estimate"] != c.loc["mundlak", "estimate"]


def test_one_period_is_refused(panel: pd.DataFrame) -> None:
    with pytest.raises(EstimationError, match="column 'period' holds one period.*at least two"):
        estimate_panel(panel[panel["period"] == 2015])


def test_periods_that_cannot_be_ordered_are_refused(panel: pd.DataFrame) -> None:
    labels = panel.assign(period=panel["period"].map(
        {2015: "spring", 2016: "summer", 2017: "autumn", 2018: "winter", 2019: "wet"}))
    with pytest.raises(EstimationError, match="periods in column 'period' cannot be ordered"):
        estimate_panel(labels)


def test_treatment_constant_within_units_is_refused_for_the_within_estimator(
        panel: pd.DataFrame) -> None:
    fixed = panel.assign(treatment=panel.groupby("unit_id")["treatment"].transform("first"))
    with pytest.raises(EstimationError, match="treatment column 'treatment' never changes "
                                              r"within a unit.*\['within'\]"):
        estimate_panel(fixed, methods=["within"])
    pooled = estimate_panel(fixed, methods=["pooled"], cv=3)  # the between contrast still runs
    assert np.isfinite(pooled.table().loc["pooled", "estimate"])


def test_duplicate_unit_periods_and_missing_columns_are_named(panel: pd.DataFrame) -> None:
    doubled = pd.concat([panel, panel.iloc[[7]]], ignore_index=True)
    with pytest.raises(EstimationError, match="unit 'V001' appears more than once in period 2017"):
        estimate_panel(doubled)
    with pytest.raises(MissingColumnError, match=r"no column\(s\) \['village'\]"):
        estimate_panel(panel, unit="village")


def test_bad_settings_name_the_setting(panel: pd.DataFrame) -> None:
    with pytest.raises(EstimationError, match="panel.methods.0='random_effects'"):
        estimate_panel(panel, methods=["random_effects"])
    assert PanelSettings().methods == ["mundlak", "first_difference", "within", "pooled"]


def test_period_ranks_order_dates_and_numbers() -> None:
    dates = pd.Series(["2016-01-02", "2015-12-08", "2015-12-08T10:00:00", "2017-03-01"])
    assert period_ranks(dates).tolist() == [2, 0, 1, 3]
    assert period_ranks(pd.Series([3.0, 1.0, 2.0, 1.0])).tolist() == [2, 0, 1, 0]


def test_settings_fields_are_the_keyword_arguments(panel: pd.DataFrame) -> None:
    settings = PanelSettings(methods=["mundlak"], cv=3)
    direct = estimate_panel(panel, methods=["mundlak"], cv=3).table()
    via = estimate_panel(panel, treatment="treatment", outcome="outcome",
                         **settings.model_dump()).table()
    pd.testing.assert_frame_equal(direct, via)


def test_join_panel_matches_periods_as_text_and_lists_the_rest(panel: pd.DataFrame) -> None:
    from eocausal.models.effects.panel import join_panel

    survey = panel[["unit_id", "period", "treatment", "outcome"]]
    feats = panel[["unit_id", "period", "f0000"]].assign(period=panel["period"].astype(str))
    feats = feats.iloc[1:]  # V000's first period has no usable image
    joined, missing = join_panel(survey, feats)
    assert len(joined) == len(panel) - 1 and joined["f0000"].notna().all()
    assert missing.to_dict("records") == [{"unit_id": "V000", "period": "2015",
                                           "reason": "no usable image for this unit and period"}]
    with pytest.raises(EstimationError, match="label the feature dates"):
        join_panel(survey, feats.assign(period="2031-01-01"))


def test_boosted_nuisances_also_recover_the_effect(panel: pd.DataFrame) -> None:
    row = estimate_panel(panel, methods=["mundlak"], learner="gbm", cv=3).table().loc["mundlak"]
    assert row["lo"] <= EFFECT <= row["hi"] and abs(row["estimate"] - EFFECT) < 0.2
