"""A real panel: 88 land-use parcels over 68 Sentinel-2 NDVI acquisitions (clouds as NaN).

Periods are the acquisition dates; the outcome is simulated from each parcel's real NDVI
trajectory plus a unit effect that raises uptake, so the estimators can be checked against
a known effect on real, cloud-gapped, unbalanced imagery.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from eocausal.models.effects.panel import estimate_panel
from eocausal.models.encoders.registry import build_encoder
from eocausal.models.features.panel import encode_panel, split_empty_geometries
from eocausal.pipeline.ingest import ingest
from scipy.special import expit
from shapely.geometry import Polygon

EFFECT = 1.0


@pytest.fixture(scope="module")
def parcels(data_dir: Path) -> gpd.GeoDataFrame:
    units = gpd.read_file(data_dir / "vectors" / "eolearn_lulc_polygons.gpkg")
    units["unit_id"] = "P" + units["index"].astype(str)
    return units


@pytest.fixture(scope="module")
def ndvi_panel(parcels: gpd.GeoDataFrame, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    files = sorted((data_dir / "imagery" / "eolearn_ndvi_series").glob("*.tif"))
    usable, no_geometry = split_empty_geometries(parcels[["unit_id", "geometry"]])
    result = ingest(usable, files, tmp_path_factory.mktemp("ndvi") / "tiles.zarr", chip_size=8,
                    min_valid_fraction=0.0)
    store = result.store
    features = encode_panel(store, build_encoder("rcf", 1, n_features=32, seed=0),
                            min_valid_fraction=0.5, device="cpu")
    # the real NDVI trajectory: each parcel's mean valid NDVI per acquisition date
    batch = store.read(0, store.n_units)
    valid = batch.valid.reshape(store.n_units, store.n_dates, -1)
    pixels = np.where(valid, batch.chips.reshape(valid.shape), 0.0).astype(float)
    ndvi = pixels.sum(axis=2) / np.maximum(valid.sum(axis=2), 1)
    table = features.table
    unit = table["unit_id"].map({u: i for i, u in enumerate(store.unit_ids)}).to_numpy()
    date = table["period"].map({d: t for t, d in enumerate(store.dates)}).to_numpy()
    level = ndvi[unit, date]
    z = (level - level.mean()) / level.std()
    unit_mean = pd.Series(level).groupby(unit).transform("mean").to_numpy()
    rng = np.random.default_rng(0)
    # unit effect: partly the parcel's typical greenness (seen), partly unseen; raises uptake
    alpha = (unit_mean - unit_mean.mean()) / unit_mean.std() + 0.8 * rng.standard_normal(
        store.n_units)[unit]
    treatment = (rng.uniform(size=len(table)) < expit(1.5 * alpha + 0.5 * z)).astype(int)
    outcome = EFFECT * treatment + alpha + z + 0.5 * rng.standard_normal(len(table))
    panel = table.assign(treatment=treatment, outcome=outcome)
    estimate = estimate_panel(panel, n_components=10, random_state=0)
    return {"store": store, "ingest": result, "features": features, "no_geometry": no_geometry,
            "estimate": estimate, "panel": panel}


def test_every_parcel_is_used_or_reported(ndvi_panel, parcels: gpd.GeoDataFrame) -> None:
    store, skipped = ndvi_panel["store"], ndvi_panel["ingest"].skipped
    reported = set(skipped["unit_id"]) | set(ndvi_panel["no_geometry"]["unit_id"])
    assert set(store.unit_ids) | reported == set(parcels["unit_id"])
    assert len(store.unit_ids) == 79 and len(skipped) == 9  # 9 parcels lie off the 1 km tile
    assert skipped["reason"].str.startswith("outside imagery").all()
    # the file's 4 "empty" parcels have a polygon but no land-use class: they stay units
    unlabelled = parcels.loc[parcels["LULC_NAME"].fillna("") == "", "unit_id"]
    assert len(unlabelled) == 4 and not parcels.geometry.is_empty.any()


def test_parcels_without_geometry_are_reported_not_fatal(parcels: gpd.GeoDataFrame) -> None:
    emptied = parcels.copy()
    emptied.loc[emptied["LULC_NAME"].fillna("") == "", "geometry"] = Polygon()
    kept, skipped = split_empty_geometries(emptied)
    assert len(kept) == 84 and len(skipped) == 4
    assert skipped["reason"].str.contains("empty geometry").all()


def test_periods_come_from_acquisition_dates_with_clouds_masked(ndvi_panel) -> None:
    store, table = ndvi_panel["store"], ndvi_panel["features"].table
    assert store.n_dates == 67  # 68 files; the two passes of 2015-12-08 form one date
    assert store.dates[0] == "2015-07-11" and store.dates[-1] == "2017-12-22"
    chips = store.read(0, store.n_units)
    assert not (np.isnan(chips.chips[:, :, 0]) & chips.valid).any()  # no NaN counted valid
    assert (table["valid_fraction"] >= 0.5).all()
    assert len(table) + len(ndvi_panel["features"].skipped) == 79 * 67


def test_panel_estimators_recover_the_effect_on_real_ndvi(ndvi_panel) -> None:
    result = ndvi_panel["estimate"]
    table = result.table()
    assert not result.balanced and result.n_unit_periods == len(ndvi_panel["panel"])
    for method in ("mundlak", "within", "first_difference"):
        assert table.loc[method, "lo"] <= EFFECT <= table.loc[method, "hi"], method
    assert table.loc["pooled", "estimate"] > EFFECT + 0.5 and bool(table.loc["pooled", "biased"])
