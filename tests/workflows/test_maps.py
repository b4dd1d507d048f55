"""The map stage on a small simulated run: COG, GeoParquet, places, nodata, targets, errors."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from eocausal.models.effects.estimate import EffectModel
from eocausal.models.features.io import read_features
from eocausal.workflows.maps import MapSettings, build_map, validate_cog
from eocausal.workflows.paths import RunPaths

from eocausal.errors import ConfigError, EncoderError, MissingColumnError
from tests.workflows.maprun import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return RunPaths(make_run(tmp_path_factory.mktemp("maprun")))


@pytest.fixture(scope="module")
def mapped(run):
    settings = MapSettings(spacing=80, budget=20)
    return build_map(run, settings, echo=lambda m: None, outcome_label="consumption",
                     outcome_units="SD")


@pytest.fixture()
def fresh(run, tmp_path):
    """A copy of the run without maps, for tests that write their own map."""
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, copy.root, ignore=shutil.ignore_patterns("maps"))
    return copy


def _scene(run: RunPaths) -> str:
    return str(next((run.world).glob("scene_*.tif")))


def test_effect_tif_is_a_valid_cog_with_named_bands(run, mapped):
    ok, errors, _ = validate_cog(run.effect_tif)
    assert ok, errors
    with rasterio.open(run.effect_tif) as src:
        assert src.descriptions == ("cate", "cate_lo", "cate_hi", "support")
        assert np.isnan(src.nodata) and src.overviews(1)
        assert src.tags()["outcome_units"] == "SD" and src.tags(1)["units"] == "SD"
        assert src.crs.to_string() == mapped.summary["crs"] == "EPSG:32636"
        data = src.read()
        transform = src.transform
    cells = mapped.cells.dropna(subset=["cate"])
    rows, cols = rasterio.transform.rowcol(transform, cells.geometry.x, cells.geometry.y)
    # Each cell's pixel holds exactly that cell's prediction, interval and support flag.
    np.testing.assert_allclose(data[0, rows, cols], cells["cate"], rtol=1e-6)
    np.testing.assert_allclose(data[1, rows, cols], cells["cate_lo"], rtol=1e-6)
    np.testing.assert_array_equal(data[3, rows, cols], np.where(cells["extrapolated"], 0, 1))
    assert (data[1] <= data[0])[np.isfinite(data[0])].all()
    assert (data[0] <= data[2])[np.isfinite(data[0])].all()


def test_cells_parquet_is_geoparquet(run, mapped):
    geo = json.loads(pq.read_schema(run.cells_parquet).metadata[b"geo"])
    assert geo["version"].startswith("1.") and geo["primary_column"] == "geometry"
    cells = gpd.read_parquet(run.cells_parquet)
    assert cells.crs.to_string() == "EPSG:32636"
    assert {"unit_id", "cate", "cate_lo", "cate_hi", "support_distance", "extrapolated",
            "row", "col"} <= set(cells.columns)
    gpkg = gpd.read_file(run.cells_gpkg)
    assert len(gpkg) == len(cells) == mapped.summary["n_cells"]


def test_places_at_trial_units_get_the_units_own_prediction(fresh, tmp_path):
    run = fresh
    """Cells put exactly on trial units see the units' chips: same features, same effect."""
    effects = gpd.read_file(run.effects).head(12)
    places = tmp_path / "places.gpkg"
    effects[["unit_id", "geometry"]].to_file(places)
    result = build_map(run, MapSettings(region=str(places)), echo=lambda m: None)
    features, _ = read_features(run.features)
    feats = features.set_index("unit_id").loc[effects["unit_id"]]
    units = gpd.read_file(run.world / "units.gpkg")
    means = units[["x1", "x2", "x3"]].mean()
    cov = pd.DataFrame({c: np.full(len(feats), means[c]) for c in ["x1", "x2", "x3"]})
    expected, lo, hi = EffectModel.load(run.estimator).predict_cate(feats.reset_index(drop=True), cov)
    np.testing.assert_allclose(result.cells["cate"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.cells["cate_hi"], hi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.cells["support_distance"], 0.0, atol=1e-4)
    assert not result.cells["extrapolated"].any()


def test_cells_outside_the_region_polygon_are_nodata(fresh, tmp_path):
    run = fresh
    with rasterio.open(_scene(run)) as src:
        b = src.bounds
        crs = src.crs
    left_half = gpd.GeoDataFrame({"name": ["west"]}, geometry=[shapely.box(
        b.left, b.bottom, (b.left + b.right) / 2, b.top)], crs=crs).to_crs(4326)
    region = tmp_path / "west.geojson"
    left_half.to_file(region)
    result = build_map(run, MapSettings(region=str(region), spacing=80), echo=lambda m: None)
    with rasterio.open(run.effect_tif) as src:
        cate = src.read(1)
        xs, ys = rasterio.transform.xy(src.transform, *np.indices(cate.shape).reshape(2, -1))
    inside = shapely.contains_xy(left_half.to_crs(src.crs).geometry[0], xs, ys).reshape(cate.shape)
    assert np.isnan(cate[~inside]).all()
    assert np.isfinite(cate[inside]).mean() > 0.95  # edge cells whose chip leaves the scene
    assert result.summary["n_cells"] == int(inside.sum())


def test_targets_are_the_best_supported_cells(run, mapped):
    targets = pd.read_csv(run.targets_csv)
    cells = mapped.cells.dropna(subset=["cate"])
    eligible = cells[~cells["extrapolated"].astype(bool)]
    assert len(targets) == 20 and targets["rank"].tolist() == list(range(1, 21))
    assert not targets["extrapolated"].any()
    np.testing.assert_allclose(targets["cate"], np.sort(eligible["cate"])[::-1][:20])
    assert {"lon", "lat", "cate_lo", "cate_hi"} <= set(targets.columns)


def test_map_json_counts_add_up(run, mapped):
    summary = json.loads(run.map_summary.read_text())
    assert summary["n_predicted"] + summary["n_nodata"] == summary["n_cells"]
    assert summary["n_targets"] == 20
    assert set(summary["outputs"]) >= {"effect.tif", "cells.parquet", "cells.gpkg",
                                       "effect.png", "effect.html", "targets.csv"}


def test_region_missing_the_imagery_names_both_extents(run):
    with pytest.raises(ConfigError, match=r"lon/lat -106\.000 .*does not overlap.*lon/lat 32\.5"):
        build_map(run, MapSettings(region="-106,40,-105,41"), echo=lambda m: None)


def test_too_many_cells_is_refused_with_a_spacing_that_fits(run):
    with pytest.raises(ConfigError, match=r"more than max_cells=1,000\. Use a spacing of at least"):
        build_map(run, MapSettings(spacing=10, max_cells=1000), echo=lambda m: None)


def test_aggregate_column_that_does_not_exist(run, tmp_path):
    poly = tmp_path / "poly.geojson"
    gpd.GeoDataFrame({"district": ["a"]}, geometry=[shapely.box(32.5, 0.4, 32.6, 0.5)],
                     crs=4326).to_file(poly)
    with pytest.raises(MissingColumnError, match=r"no column 'name'.*\['district'\]"):
        build_map(run, MapSettings(aggregate=poly, by="name"), echo=lambda m: None)


def test_imagery_with_another_band_set(run, data_dir):
    rgb = data_dir / "imagery" / "rasterio_RGB.byte.tif"
    with pytest.raises(EncoderError, match=r"has bands \['band_1', 'band_2', 'band_3'\].*"
                                           r"trained on bands \['B02'"):
        build_map(run, MapSettings(imagery=[str(rgb)]), echo=lambda m: None)


def test_run_directory_made_with_another_encoder(fresh):
    other = fresh
    features, meta = read_features(other.features)
    meta["encoder"]["options"]["seed"] = 7  # other filters than the ones that made the features
    from eocausal.models.features.io import write_features

    write_features(features, other.features, meta)
    with pytest.raises(EncoderError, match="does not reproduce the stored features"):
        build_map(other, MapSettings(spacing=80), echo=lambda m: None)


def test_map_command_writes_the_maps(fresh, capsys):
    from eocausal.workflows.cli import main

    code = main(["map", str(fresh.root), "--spacing", "80", "--budget", "0.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "effect.tif" in out and "targets.csv" in out
    assert validate_cog(fresh.effect_tif)[0]
    assert len(pd.read_csv(fresh.targets_csv)) == round(0.1 * (~gpd.read_parquet(
        fresh.cells_parquet)["extrapolated"].astype(bool) & gpd.read_parquet(
        fresh.cells_parquet)["cate"].notna()).sum())


def test_map_command_prints_a_mistake_as_one_line(run, capsys):
    from eocausal.workflows.cli import main

    code = main(["map", str(run.root), "--spacing", "1", "--max-cells", "500"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: Spacing 1 m gives") and "max_cells=500" in err[0]


def test_map_settings_refuse_unknown_keys():
    with pytest.raises(ValueError, match="spaceing"):
        MapSettings(spaceing=100)


def test_a_run_from_pre_cut_patches_needs_imagery(fresh):
    import zarr

    group = zarr.open_group(str(fresh.tiles), mode="r+")
    group.attrs["source_kind"] = "patches"
    with pytest.raises(ConfigError, match="pre-cut patches.*'--imagery'"):
        build_map(fresh, MapSettings(spacing=80), echo=lambda m: None)
