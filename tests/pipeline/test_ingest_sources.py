"""Ingestion across real sources: mosaics, reprojection, sequences, scale/offset, patches."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.patches import ingest_patches
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, read_units, validate_units
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tests.conftest import DATA, IMAGERY, LANDSAT8, RMNP_4326, SENTINEL2

UGANDA_UNITS = DATA / "rct_geo" / "causalimages_uganda_units.csv"
UGANDA_PATCHES = DATA / "rct_geo" / "causalimages_uganda_images.npz"


def _units(path, pixels, crs=None):
    with rasterio.open(path) as src:
        xy = [src.xy(r, c) for r, c in pixels]
        frame = gpd.GeoDataFrame(
            {"unit_id": [f"u{i:03d}" for i in range(len(pixels))],
             "treatment": np.arange(len(pixels)) % 2, "outcome": np.zeros(len(pixels))},
            geometry=gpd.points_from_xy(*zip(*xy, strict=True)), crs=src.crs)
    return validate_units(frame.to_crs(crs) if crs else frame, UnitColumns())


def _write_part(src, path, window, **changes):
    profile = {**src.profile, "width": int(window.width), "height": int(window.height),
               "transform": src.window_transform(window), **changes}
    data = src.read(window=window)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = src.descriptions
    return path


def test_chip_straddling_two_files_is_filled_from_both(tmp_path, data_dir):
    with rasterio.open(SENTINEL2) as src:
        left = _write_part(src, tmp_path / "left.tif", Window(0, 0, 256, 512))
        right = _write_part(src, tmp_path / "right.tif", Window(256, 0, 256, 512))
        pixels = [(100, 250), (300, 260), (200, 256), (50, 30), (400, 505)]
        units = _units(SENTINEL2, pixels)
        result = ingest(units, [left, right], tmp_path / "m.zarr", chip_size=24)
        batch = open_store(result.store_path).read_units(list(units["unit_id"]))
        for i, (row, col) in enumerate(pixels[:4]):
            np.testing.assert_array_equal(batch.chips[i, 0],
                                          src.read(window=Window(col - 12, row - 12, 24, 24)))
        np.testing.assert_array_equal(batch.chips[4, 0][:, :, :19],
                                      src.read(window=Window(493, 388, 19, 24)))
    assert batch.valid[:4].all()
    assert batch.valid[4, 0][:, :19].all() and not batch.valid[4, 0][:, 19:].any()


def test_reprojection_equals_a_warpedvrt_read(tmp_path, data_dir):
    units = _units(SENTINEL2, [(100, 100), (256, 300), (400, 50)])
    result = ingest(units, [SENTINEL2], tmp_path / "w.zarr", chip_size=16,
                    crs="EPSG:32617", resolution=25.0)
    store = open_store(result.store_path)
    assert store.crs == "EPSG:32617" and store.attrs["pixel_size"] == [25.0, 25.0]
    transform = rasterio.Affine(*store.attrs["transform"])
    ids = list(units["unit_id"])
    batch = store.read_units(ids)
    centres = dict(zip(store.unit_ids, store.centres, strict=True))
    with rasterio.open(SENTINEL2) as src, WarpedVRT(
        src, crs="EPSG:32617", transform=transform, width=2000, height=2000,
        resampling=rasterio.enums.Resampling.nearest, add_alpha=True, tolerance=1e-9,
    ) as vrt:
        for i, uid in enumerate(ids):
            col, row = ~transform @ tuple(centres[uid])
            window = Window(int(np.floor(col)) - 8, int(np.floor(row)) - 8, 16, 16)
            expected = vrt.read([1, 2, 3, 4, 5, 6], window=window)
            np.testing.assert_array_equal(batch.chips[i, 0], expected)
    assert batch.valid.all()


def test_units_in_wgs84_on_a_wgs84_raster_with_nodata(tmp_path, data_dir):
    pixels = [(100, 100), (200, 300), (50, 400)]
    units = _units(RMNP_4326, pixels)
    result = ingest(units, [RMNP_4326], tmp_path / "r.zarr", chip_size=20,
                    min_valid_fraction=0.0)
    batch = open_store(result.store_path).read_units(list(units["unit_id"]))
    with rasterio.open(RMNP_4326) as src:
        for i, (row, col) in enumerate(pixels):
            window = Window(col - 10, row - 10, 20, 20)
            np.testing.assert_array_equal(batch.chips[i, 0], src.read(window=window))
            np.testing.assert_array_equal(batch.valid[i, 0], src.dataset_mask(window=window) > 0)


def test_landsat_bands_by_description(tmp_path, data_dir):
    units = _units(LANDSAT8, [(256, 256), (30, 480)])
    result = ingest(units, [LANDSAT8], tmp_path / "l.zarr", chip_size=16,
                    bands=["B4", "B3", "B2", "BQA"])
    store = open_store(result.store_path)
    assert store.band_names == ["B4", "B3", "B2", "BQA"]
    batch = store.read_units(["u000", "u001"])
    with rasterio.open(LANDSAT8) as src:
        np.testing.assert_array_equal(
            batch.chips[0, 0], src.read([4, 3, 2, 8], window=Window(248, 248, 16, 16)))


def test_dated_sequence_gives_one_masked_stack_per_unit(tmp_path, data_dir):
    with rasterio.open(SENTINEL2) as src:
        first = _write_part(src, tmp_path / "s2_20160112.tif", Window(0, 0, 512, 512))
        profile = {**src.profile, "nodata": 0}
        data = src.read()
        data[:, :, :256] = 0  # the later date only covers the east half
        with rasterio.open(tmp_path / "s2_20160301.tif", "w", **profile) as dst:
            dst.write(data)
    units = _units(SENTINEL2, [(100, 100), (100, 400)])
    result = ingest(units, [tmp_path / "s2_20160301.tif", first], tmp_path / "t.zarr",
                    chip_size=16)
    store = open_store(result.store_path)
    assert store.dates == ["2016-01-12", "2016-03-01"] and store.chips.shape[1] == 2
    batch = store.read_units(["u000", "u001"])
    assert batch.valid[0, 0].all() and not batch.valid[0, 1].any()
    assert batch.valid[1].all()
    np.testing.assert_array_equal(batch.chips[1, 0], batch.chips[1, 1])
    np.testing.assert_allclose(store.group["valid_fraction"][:].max(axis=1), 1.0)


def test_declared_scale_and_offset_are_applied(tmp_path, data_dir):
    tile = IMAGERY / "eolearn_import-tiff-test1.tiff"
    scaled = tmp_path / "scaled.tif"
    with rasterio.open(tile) as src:
        _write_part(src, scaled, Window(0, 0, src.width, src.height))
    with rasterio.open(scaled, "r+") as dst:
        dst.scales = (0.0001,)
        dst.offsets = (-0.1,)
    units = _units(tile, [(30, 40)])
    store = open_store(ingest(units, [scaled], tmp_path / "s.zarr", chip_size=8).store_path)
    assert store.chips.dtype == np.float32 and store.attrs["scale_offset_applied"]
    with rasterio.open(tile) as src:
        raw = src.read(1, window=Window(36, 26, 8, 8)).astype(np.float64)
    np.testing.assert_allclose(store.chips[0, 0, 0], raw * 0.0001 - 0.1, rtol=1e-6)


def test_polygons_by_bounds_widen_the_chip(tmp_path, data_dir):
    units = _units(SENTINEL2, [(200, 200), (300, 320)])
    units["geometry"] = units.buffer(150.0)  # 300 m wide: 15 pixels of 20 m
    result = ingest(units, [SENTINEL2], tmp_path / "p.zarr", chip_size=8, polygons="bounds")
    store = open_store(result.store_path)
    assert store.chip_size >= 16 and store.attrs["polygons"] == "bounds"


def test_uganda_units_and_patches_ingest_with_image_keys(tmp_path, data_dir):
    columns = UnitColumns(id="row", treatment="W", outcome="Y", group="image_key",
                          lon="geo_long", lat="geo_lat")
    units = read_units(UGANDA_UNITS, columns)
    result = ingest_patches(units, UGANDA_PATCHES, tmp_path / "u.zarr", key_column="group")
    store = open_store(result.store_path)
    assert store.n_units == 2082 and result.skipped.empty
    assert store.chips.shape == (2082, 1, 3, 35, 35)
    with np.load(UGANDA_PATCHES) as data:
        images = dict(zip(data["keys"], data["images"], strict=True))
    keys = units.set_index("unit_id")["group"]
    batch = store.read_units(["0", "1000", "2081"])
    for uid, chip in zip(batch.unit_ids, batch.chips, strict=True):
        np.testing.assert_array_equal(chip[0], np.moveaxis(images[keys[uid]], -1, 0))
    stored_keys = dict(zip(store.unit_ids, store.group["image_key"][:], strict=True))
    assert all(stored_keys[u] == keys[u] for u in ("0", "1000", "2081"))


def test_unknown_patch_keys_are_skipped_with_reason(tmp_path, data_dir):
    columns = UnitColumns(id="row", treatment="W", outcome="Y", group="image_key",
                          lon="geo_long", lat="geo_lat")
    units = read_units(UGANDA_UNITS, columns).head(10).copy()
    units.loc[3, "group"] = 999999
    result = ingest_patches(units, UGANDA_PATCHES, tmp_path / "k.zarr")
    assert result.skipped["unit_id"].tolist() == ["3"]
    assert "no patch for image key 999999" in result.skipped["reason"][0]
