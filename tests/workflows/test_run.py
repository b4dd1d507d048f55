"""An end-to-end run on a small simulated world writes the run directory of DESIGN.md."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from eocausal.models.features.encode import read_features
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.maps import is_cog
from eocausal.workflows.runner import run_config

SMALL = {
    "name": "small",
    "seed": 0,
    "simulate": {"n_units": 600, "scene_size": 192, "chip_size": 16, "seed": 3},
    "units": {"covariates": ["x1", "x2", "x3"]},
    "chips": {"size": 16, "units_per_chunk": 128},
    "encoder": {"name": "rcf", "options": {"n_features": 64, "mode": "empirical"}},
    "estimator": {"design": "rct", "propensity": 0.5, "n_components": 10, "n_estimators": 200},
    "map": {"spacing": 160},
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_config(config_from_dict(SMALL), out, progress=False)
    return out, result


def test_summary_recovers_the_truth(small_run):
    out, result = small_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary, default=float))
    truth = summary["truth"]
    assert summary["ate_lo"] < summary["ate"] < summary["ate_hi"]
    assert truth["interval_covers_truth"] is True
    assert abs(truth["ate_error"]) < 0.3
    assert truth["spearman_cate"] > 0.6
    assert summary["n_used"] + summary["n_skipped"] == summary["n_units"] == 600
    assert set(summary["timings_seconds"]) == {"simulate", "ingest", "encode", "estimate", "evaluate",
                                               "map"}


def test_effects_gpkg_has_one_row_per_unit(small_run):
    out, _ = small_run
    effects = gpd.read_file(out / "effects.gpkg")
    units = gpd.read_file(out / "world" / "units.gpkg")
    assert {"unit_id", "treatment", "outcome", "cate", "cate_lo", "cate_hi"} <= set(effects)
    assert effects.crs == units.crs and len(effects) == 600
    merged = effects.merge(units, on="unit_id", suffixes=("", "_u"))
    np.testing.assert_allclose(merged["outcome"], merged["outcome_u"])
    assert merged.geometry.geom_equals(merged["geometry_u"]).all()
    assert (effects["cate_lo"] <= effects["cate"]).all() and (effects["cate"] <= effects["cate_hi"]).all()


def test_tile_store_and_features(small_run):
    out, _ = small_run
    ds = xr.open_zarr(out / "tiles.zarr")
    assert ds["chips"].shape == (600, 1, 6, 16, 16)
    assert ds.attrs["crs"] == "EPSG:32636" and len(ds.attrs["band_mean"]) == 6
    features, meta = read_features(out / "features.parquet")
    assert meta["encoder"]["name"] == "rcf" and features.shape == (600, 65)
    assert set(features["unit_id"]) == set(map(str, ds["unit_id"].values))
    assert pd.read_csv(out / "skipped_units.csv").columns.tolist() == ["unit_id", "reason"]


def test_map_is_a_cog_over_the_scene(small_run):
    out, result = small_run
    cog = out / "maps" / "effect.tif"
    assert is_cog(cog)
    with rasterio.open(cog) as src, rasterio.open(next((out / "world").glob("scene_*.tif"))) as scene:
        surface = src.read(1)
        assert src.crs == scene.crs
        left, bottom, right, top = src.bounds
        cell = src.res[0]  # the grid is laid in lon/lat-derived UTM: within a cell of the scene
        assert scene.bounds.left - cell <= left and right <= scene.bounds.right + cell
        assert scene.bounds.bottom - cell <= bottom and top <= scene.bounds.top + cell
        assert src.count == 4 and src.descriptions[:4] == ("cate", "cate_lo", "cate_hi", "support")
    assert np.isfinite(surface).sum() == result.summary["map"]["n_predicted"] > 0
    assert result.summary["map"]["spearman_with_true_surface"] > 0.5
    assert (out / "maps" / "effect.png").stat().st_size > 10_000


def test_manifest_records_stages_inputs_and_versions(small_run):
    out, _ = small_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(stage["status"] == "done" for stage in manifest["stages"].values())
    assert manifest["seeds"]["run"] == 0 and "torch" in manifest["versions"]
    assert all(len(s["sha256"]) == 64 for s in manifest["inputs"]["imagery"])
    assert manifest["config"]["encoder"]["name"] == "rcf"


def test_report_is_one_self_contained_page(small_run):
    out, _ = small_run
    page = (out / "report.html").read_text()
    assert "Average treatment effect" in page and "Against the simulated truth" in page
    assert page.count("data:image/png;base64,") >= 1
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['ate']:.4g}" in page
