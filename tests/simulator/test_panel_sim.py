"""The panel simulator: deterministic by seed, a known effect, unit effects that the images
partly show and that drive uptake, and scenes that change from period to period."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from eocausal.simulator.panel import PanelSpec, make_panel, simulate_panel

from eocausal.errors import ConfigError

SMALL = {"n_units": 120, "n_periods": 4, "scene_size": 128, "chip_size": 16}


@pytest.fixture(scope="module")
def panel():
    return make_panel(seed=3, **SMALL)


def test_same_seed_same_panel_other_seed_differs(panel) -> None:
    again = make_panel(seed=3, **SMALL)
    pd.testing.assert_frame_equal(panel.table, again.table)
    np.testing.assert_array_equal(panel.scenes, again.scenes)
    other = make_panel(seed=4, **SMALL)
    assert not np.array_equal(panel.table["outcome"], other.table["outcome"])


def test_long_table_has_every_unit_period_and_the_known_effect(panel) -> None:
    table, truth = panel.table, panel.truth
    assert len(table) == 120 * 4 and table.groupby("unit_id").size().eq(4).all()
    assert list(table.columns[:2]) == ["unit_id", "period"]
    assert sorted(table["period"].unique()) == panel.dates
    np.testing.assert_allclose(truth["y1"] - truth["y0"], panel.effect)
    observed = np.where(table["treatment"] == 1, truth["y1"], truth["y0"])
    np.testing.assert_allclose(table["outcome"], observed)


def test_unit_effects_correlate_with_images_and_with_uptake() -> None:
    big = make_panel(seed=0, n_units=400, n_periods=4, visible=0.5, scene_size=128)
    truth, table = big.truth, big.table
    # alpha = 2 (sqrt(.5) b + sqrt(.5) h): its visible part explains about half its variance
    r = np.corrcoef(truth["alpha"], truth["visible_part"])[0, 1]
    assert 0.55 < r < 0.85
    treated = table["treatment"] == 1
    assert truth.loc[treated, "alpha"].mean() - truth.loc[~treated, "alpha"].mean() > 1.0
    fully = make_panel(seed=0, n_units=400, n_periods=4, visible=1.0, scene_size=128)
    assert np.corrcoef(fully.truth["alpha"], fully.truth["visible_part"])[0, 1] > 0.999


def test_scenes_change_between_periods_with_the_time_varying_confounder(panel) -> None:
    assert panel.scenes.shape[:2] == (4, 4)
    assert not np.array_equal(panel.scenes[0], panel.scenes[1])
    z = panel.truth["z_time"].to_numpy().reshape(120, 4)
    assert (z.std(axis=1) > 0).all()  # every unit's imagery varies over time


def test_written_panel_is_read_back(tmp_path) -> None:
    written = simulate_panel(tmp_path, seed=1, **SMALL)
    assert [p.name for p in written.scene_paths][0] == "scene_20190630.tif"
    with rasterio.open(written.scene_paths[1]) as src:
        assert src.tags()["ACQUISITION_DATE"] == "2020-06-29" and src.count == 4
    table = pd.read_parquet(written.panel_path)
    assert len(table) == 480 and table["unit_id"].nunique() == 120
    truth = json.loads(written.truth_json_path.read_text())
    assert truth["effect"] == 1.0 and truth["design"] == "panel"


@pytest.mark.parametrize("field, value", [("n_periods", 1), ("visible", 1.5), ("n_units", 3)])
def test_bad_spec_is_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"PanelSpec.{field}="):
        PanelSpec(**{field: value})
    with pytest.raises(ConfigError, match="Unknown PanelSpec field"):
        make_panel(n_unitz=10)
