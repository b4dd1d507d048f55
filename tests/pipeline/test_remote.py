"""Imagery over HTTP: COG URLs and a static STAC catalog give the chips of the local files.

A server on 127.0.0.1 (range requests answered, see benchmarks/range_server.py) serves the
shared Sentinel-2 scene converted to COGs; no other host is contacted.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from eocausal.pipeline.imagery import describe_raster, expand_imagery
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, validate_units

from benchmarks.range_server import (
    serve_directory,
    write_band_cogs,
    write_cog,
    write_stac_catalog,
)
from eocausal.errors import ConfigError
from tests.conftest import SENTINEL2

BANDS = ["B8A", "B05", "B12"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("www")
    write_cog(SENTINEL2, root / "s2_20160112.tif")
    assets = write_band_cogs(SENTINEL2, root / "bands")
    write_stac_catalog(root, {"s2-a": ("2016-01-12", assets)})
    with pytest.MonkeyPatch.context() as patch, serve_directory(root) as (url, stats):
        patch.setenv("EOCAUSAL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield url, stats


@pytest.fixture(scope="module")
def units(data_dir):
    rng = np.random.default_rng(11)
    n = 300
    with rasterio.open(SENTINEL2) as src:
        # Most units inside, some straddling the edges, so every read path is used.
        cols = np.concatenate([rng.uniform(20, 490, n - 4), [2, 509, 3, 508]])
        rows = np.concatenate([rng.uniform(20, 490, n - 4), [5, 4, 510, 509]])
        xs, ys = src.transform @ (cols, rows)
        crs = src.crs
    frame = gpd.GeoDataFrame(
        {"unit_id": [f"u{i:04d}" for i in range(n)], "treatment": 0, "outcome": 0.0},
        geometry=gpd.points_from_xy(xs, ys), crs=crs).to_crs("EPSG:4326")
    return validate_units(frame, UnitColumns())


def _chips(units, imagery, out, **kwargs):
    result = ingest(units, imagery, out, chip_size=16, units_per_chunk=64, **kwargs)
    store = open_store(result.store_path)
    batch = store.read_units(list(units["unit_id"]))
    return store, batch


def test_cog_url_gives_the_chips_of_the_local_file(tmp_path, served, units):
    url, stats = served
    _, local = _chips(units, [SENTINEL2], tmp_path / "local.zarr")
    before_full = stats.full
    store, remote = _chips(units, [f"{url}/s2_20160112.tif"], tmp_path / "remote.zarr")
    np.testing.assert_array_equal(remote.chips, local.chips)
    np.testing.assert_array_equal(remote.valid, local.valid)
    assert store.dates == ["2016-01-12"]  # from the file name in the URL
    assert stats.full == before_full and stats.partial > 0  # only byte ranges travelled


def test_stac_catalog_assets_by_band_name_stack_into_the_local_bands(tmp_path, served, units):
    url, _ = served
    _, local = _chips(units, [SENTINEL2], tmp_path / "local.zarr", bands=BANDS)
    store, stac = _chips(units, [f"{url}/catalog.json"], tmp_path / "stac.zarr", bands=BANDS)
    assert store.band_names == BANDS
    assert store.dates == ["2016-01-12"]  # from the item's datetime
    np.testing.assert_array_equal(stac.chips, local.chips)
    np.testing.assert_array_equal(stac.valid, local.valid)


def test_stac_rasters_are_remote_and_identified_by_their_assets(served, tmp_path, monkeypatch):
    url, _ = served
    monkeypatch.setenv("EOCAUSAL_CACHE", str(tmp_path / "cache"))
    paths = expand_imagery([f"{url}/catalog.json"], ["B11", "B06"])
    again = expand_imagery([f"{url}/catalog.json"], ["B11", "B06"])
    assert paths == again and len(paths) == 1  # same catalog, same VRT: resumable
    source = describe_raster(paths[0])
    assert source.remote and source.band_names == ("B11", "B06") and source.count == 2
    assert source.date == "2016-01-12" and len(source.sha256) == 64
    cog = describe_raster(f"{url}/s2_20160112.tif")
    assert cog.remote and cog.width == 512 and cog.count == 6


def test_unknown_asset_names_the_item_and_its_assets(served):
    url, _ = served
    with pytest.raises(ConfigError, match=r"s2-a.*no asset\(s\) \['B99'\].*B05"):
        expand_imagery([f"{url}/catalog.json"], ["B99"])
