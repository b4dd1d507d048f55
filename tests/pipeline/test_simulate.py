"""Tests for pipeline.world and pipeline.simulate: files, determinism and the causal truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from eocausal.simulator.simulate import simulate, write_world
from eocausal.simulator.world import (
    BASE_ATE,
    FACTOR_NAMES,
    WorldSpec,
    band_names,
    make_world,
    true_cate_surface,
)
from rasterio.transform import rowcol

from eocausal.errors import ConfigError

SMALL = {"scene_size": 128, "n_units": 300}
WATER, VEG = FACTOR_NAMES.index("water"), FACTOR_NAMES.index("vegetation")


def _hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


def _r2(y: np.ndarray, x: np.ndarray) -> float:
    """R2 of an ordinary least-squares fit of y on x with an intercept."""
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(1 - (y - design @ coef).var() / y.var())


@pytest.fixture(scope="module")
def world():
    return make_world(WorldSpec(**SMALL, n_dates=2))


@pytest.fixture(scope="module")
def written(world, tmp_path_factory):
    return write_world(world, tmp_path_factory.mktemp("world"))


# --- files -----------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_files(tmp_path):
    first = simulate(tmp_path / "a", **SMALL, n_dates=2, design="observational")
    second = simulate(tmp_path / "b", **SMALL, n_dates=2, design="observational")
    hashes = _hashes(first.out_dir)
    assert sorted(hashes) == sorted([
        "scene_20210115.tif", "scene_20210214.tif", "truth.json", "truth.parquet",
        "truth_cate.tif", "units.gpkg"])
    assert hashes == _hashes(second.out_dir)


def test_rewriting_into_the_same_directory_repeats_the_bytes(tmp_path):
    simulate(tmp_path, **SMALL)
    before = _hashes(tmp_path)
    simulate(tmp_path, **SMALL)
    assert _hashes(tmp_path) == before


def test_different_seeds_give_different_files(tmp_path):
    a = _hashes(simulate(tmp_path / "a", **SMALL, seed=1).out_dir)
    b = _hashes(simulate(tmp_path / "b", **SMALL, seed=2).out_dir)
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_scenes_reread_equal_the_world(world, written):
    assert len(written.scene_paths) == 2
    for t, path in enumerate(written.scene_paths):
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(), world.scenes[t])
            assert src.crs.to_epsg() == 32636
            assert src.transform == world.transform
            assert src.transform.c == 450000.0 and src.transform.f == 50000.0
            assert src.res == (10.0, 10.0)
            assert src.nodata == 0
            assert src.descriptions == ("B02", "B03", "B04", "B08", "B11", "B12")
            assert src.tags()["ACQUISITION_DATE"] == world.dates[t]
            assert src.compression.name == "deflate"
            assert src.block_shapes[0] == (256, 256)
    assert world.scenes.dtype == np.uint16
    assert world.scenes.min() >= 1 and world.scenes.max() <= 10000


def test_units_file_holds_points_at_the_units(world, written):
    units = gpd.read_file(written.units_path, layer="units")
    assert list(units.columns) == ["unit_id", "treatment", "outcome", "x1", "x2", "x3",
                                   "geometry"]
    assert units.crs.to_epsg() == 32636
    np.testing.assert_array_equal(units.geometry.x, world.units["x"])
    np.testing.assert_array_equal(units.geometry.y, world.units["y"])
    np.testing.assert_array_equal(units["outcome"], world.units["outcome"])
    assert units["unit_id"].tolist()[:2] == ["U00001", "U00002"]
    rows, cols = rowcol(world.transform, units.geometry.x, units.geometry.y)
    np.testing.assert_array_equal(rows, world.units["row"])
    np.testing.assert_array_equal(cols, world.units["col"])


def test_units_keep_a_whole_chip_inside_the_scene(world):
    half = world.spec.chip_size / 2 * world.spec.pixel_size
    x0, y0 = world.spec.origin
    extent = world.spec.scene_size * world.spec.pixel_size
    x, y = world.units["x"], world.units["y"]
    assert (x - x0 >= half).all() and (x0 + extent - x >= half).all()
    assert (y0 - y >= half).all() and (y - (y0 - extent) >= half).all()


def test_truth_files_match_the_world(world, written):
    pd.testing.assert_frame_equal(pd.read_parquet(written.truth_path), world.truth)
    summary = json.loads(written.truth_json_path.read_text())
    assert summary["ate"] == pytest.approx(world.truth["cate"].mean())
    assert summary["base_ate"] == BASE_ATE
    assert summary["spec"]["scene_size"] == 128
    assert summary["dates"] == ["2021-01-15", "2021-02-14"]
    assert summary["files"]["units"] == "units.gpkg"
    assert len(summary["cluster_effects"]) == world.spec.n_clusters
    with rasterio.open(written.truth_surface_path) as src:
        assert src.dtypes[0] == "float32" and src.transform == world.transform
        np.testing.assert_array_equal(src.read(1), true_cate_surface(world).astype(np.float32))


# --- pixels carry the landscape --------------------------------------------------------------

def test_water_darkens_near_infrared(world):
    nir = world.scenes[0, world.band_names.index("B08")].astype(float)
    water = world.factors[WATER]
    assert nir[water > 0.8].mean() < nir[water < 0.1].mean() - 1000


@pytest.mark.parametrize(("noise", "min_r2"), [(0.0, 0.999), (1.0, 0.85)])
def test_bands_are_linear_in_the_factors(noise, min_r2):
    w = make_world(WorldSpec(**SMALL, noise=noise))
    factors = w.factors.reshape(len(FACTOR_NAMES), -1).T
    for band in w.scenes[0]:
        assert _r2(band.ravel().astype(float), factors) > min_r2


def test_later_dates_change_vegetation_reflectance_only(world):
    spec = WorldSpec(**SMALL, n_dates=3)
    w = make_world(spec)
    assert w.dates == ["2021-01-15", "2021-02-14", "2021-03-16"]
    nir = w.scenes[:, w.band_names.index("B08")].astype(float)
    green, bare = w.factors[VEG] > 0.5, w.factors[VEG] < 0.01
    green_means = [nir[t][green].mean() for t in range(3)]
    assert min(np.diff(green_means)) > 100  # the phenology term brightens vegetation
    assert np.ptp([nir[t][bare].mean() for t in range(3)]) < 20  # sensor noise only
    assert not np.array_equal(w.scenes[1], w.scenes[2])


def test_three_dates_write_three_dated_files(tmp_path):
    written = simulate(tmp_path, **SMALL, n_dates=3, date_step_days=10)
    names = [p.name for p in written.scene_paths]
    assert names == ["scene_20210115.tif", "scene_20210125.tif", "scene_20210204.tif"]
    dates = []
    for path in written.scene_paths:
        with rasterio.open(path) as src:
            dates.append(src.tags()["ACQUISITION_DATE"])
    assert dates == ["2021-01-15", "2021-01-25", "2021-02-04"]


@pytest.mark.parametrize(("n_bands", "names"), [
    (6, ("B02", "B03", "B04", "B08", "B11", "B12")),
    (3, ("B02", "B03", "B04")),
    (4, ("B02", "B03", "B04", "B08")),
    (1, ("B02",)),
])
def test_band_names(n_bands, names):
    assert band_names(n_bands) == names


def test_twelve_bands_are_the_sentinel2_set():
    names = band_names(12)
    assert len(set(names)) == 12 and names[0] == "B01" and names[-1] == "B12"
    assert make_world(WorldSpec(**SMALL, n_bands=12)).scenes.shape == (1, 12, 128, 128)


# --- effects ---------------------------------------------------------------------------------

def test_true_cate_surface_equals_unit_cate(world):
    surface = true_cate_surface(world)
    assert surface.shape == (128, 128)
    np.testing.assert_array_equal(surface[world.units["row"], world.units["col"]],
                                  world.truth["cate"])
    np.testing.assert_array_equal(true_cate_surface(world.factors, world.spec), surface)


@pytest.mark.parametrize("n_clusters", [1, 3, 5])
def test_cate_differs_across_clusters(n_clusters):
    w = make_world(WorldSpec(scene_size=256, n_units=1000, n_clusters=n_clusters))
    by_cluster = w.truth.groupby("cluster")["cate"].mean()
    assert len(by_cluster) == n_clusters
    np.testing.assert_allclose(np.diff(sorted(w.cluster_effects)),
                               np.diff(np.linspace(-1, 2, n_clusters)))
    if n_clusters > 1:
        assert by_cluster.max() - by_cluster.min() > 1.5


def test_cate_is_cluster_effect_plus_a_linear_landscape_term(world):
    truth = world.truth
    dummies = pd.get_dummies(truth["cluster"], drop_first=True).to_numpy(float)
    x = np.column_stack([dummies, truth["z_vegetation"], truth["z_water"]])
    assert _r2(truth["cate"].to_numpy(), x) > 1 - 1e-9
    assert _r2(truth["cate"].to_numpy(), dummies) < 0.95  # the smooth part matters


def test_true_cate_averages_to_the_base_effect_over_the_landscape(world):
    lo = -(-world.spec.chip_size // 2)  # where a unit's whole chip fits
    hi = world.spec.scene_size - lo
    interior = true_cate_surface(world)[lo:hi, lo:hi]
    assert interior.mean() == pytest.approx(BASE_ATE, abs=1e-9)
    assert interior.std() > 0.5


def test_zero_heterogeneity_gives_a_constant_effect():
    w = make_world(WorldSpec(**SMALL, heterogeneity=0.0))
    assert (w.truth["cate"] == BASE_ATE).all()
    assert (true_cate_surface(w) == BASE_ATE).all()
    np.testing.assert_allclose(w.truth["y1"] - w.truth["y0"], BASE_ATE, rtol=1e-12)


def test_outcomes_follow_the_potential_outcomes(world):
    truth, units = world.truth, world.units
    expected = np.where(units["treatment"] == 1, truth["y1"], truth["y0"])
    np.testing.assert_array_equal(units["outcome"], expected)
    assert _r2(truth["y0"].to_numpy(), truth[["z_built_up", "z_roads", "z_water"]].to_numpy()) > 0.5


def test_x3_carries_some_but_not_all_of_built_up(world):
    r = np.corrcoef(world.units["x3"], world.truth["z_built_up"])[0, 1]
    assert 0.5 < r < 0.95


def test_observational_naive_estimate_is_biased_upward():
    w = make_world(WorldSpec(design="observational", confounding=1.0))
    units = w.units
    naive = (units.loc[units["treatment"] == 1, "outcome"].mean()
             - units.loc[units["treatment"] == 0, "outcome"].mean())
    assert w.naive_difference_in_means == pytest.approx(naive)
    assert naive - w.ate > 0.75  # observed 1.16 with seed 0 (true ATE 0.96)
    treated = units["treatment"] == 1
    assert w.truth.loc[treated, "z_built_up"].mean() > w.truth.loc[~treated, "z_built_up"].mean()
    assert w.truth["propensity"].between(0.05, 0.95).all()


def test_rct_naive_estimate_is_within_three_standard_errors():
    w = make_world(WorldSpec(design="rct"))
    y, t = w.units["outcome"], w.units["treatment"] == 1
    se = np.sqrt(y[t].var() / t.sum() + y[~t].var() / (~t).sum())
    assert abs(w.naive_difference_in_means - w.ate) < 3 * se
    assert (w.truth["propensity"] == 0.5).all()


def test_same_seed_same_world_different_seed_different_world():
    a, b, c = (make_world(WorldSpec(**SMALL, seed=s)) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.scenes, b.scenes)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.factors, c.factors)
    assert not np.allclose(a.units["x1"], c.units["x1"])


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "match"), [
    ({"n_bands": 13}, r"WorldSpec\.n_bands must be an int in the range \[1, 12\]\. Got 13"),
    ({"n_bands": 0}, r"n_bands .*Got 0"),
    ({"n_units": 2.5}, r"n_units .*Got 2\.5"),
    ({"design": "quasi"}, r"design must be one of 'rct', 'observational'\. Got 'quasi'"),
    ({"treated_fraction": 1.0}, r"treated_fraction .*\(0\.0, 1\.0\)\. Got 1\.0"),
    ({"noise": -1.0}, r"noise .*Got -1\.0"),
    ({"confounding": float("nan")}, r"confounding .*Got nan"),
    ({"n_clusters": 0}, r"n_clusters .*Got 0"),
    ({"scene_size": 128, "chip_size": 100}, r"scene_size .*\[200, 8192\]\. Got 128"),
    ({"crs": "EPSG:4326"}, r"crs must be a projected CRS"),
    ({"crs": "not a crs"}, r"crs .*Got 'not a crs'"),
    ({"start_date": "2021-13-01"}, r"start_date .*Got '2021-13-01'"),
    ({"origin": (1.0,)}, r"origin .*Got \(1\.0,\)"),
    ({"pixel_size": 0}, r"pixel_size .*Got 0"),
    ({"seed": -1}, r"seed .*Got -1"),
    ({"n_dates": True}, r"n_dates .*Got True"),
])
def test_bad_spec_raises_config_error_naming_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        WorldSpec(**overrides)


def test_unknown_override_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown WorldSpec field\(s\) \['n_unit'\]"):
        simulate(tmp_path, n_unit=10)


def test_true_cate_surface_needs_a_matching_spec(world):
    with pytest.raises(ConfigError, match="needs a WorldSpec"):
        true_cate_surface(world.factors)
    with pytest.raises(ConfigError, match=r"shape \(4, 256, 256\)"):
        true_cate_surface(world.factors, WorldSpec(scene_size=256))
