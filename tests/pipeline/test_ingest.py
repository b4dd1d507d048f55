"""Ingestion of real rasters: chips land where the units are, every skip has a reason."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import STATS_STRIDE, open_store
from eocausal.pipeline.units import UnitColumns, validate_units
from pyproj import Transformer
from rasterio.windows import Window

from eocausal.errors import CRSMissingError, NoUsableUnitsError, RasterReadError
from tests.conftest import LANDSAT8, RGB_BYTE, SENTINEL2


def _units_at_pixels(path, pixels, crs="EPSG:4326"):
    """Units at the centres of given (row, col) pixels, expressed in ``crs``."""
    with rasterio.open(path) as src:
        xy = [src.xy(r, c) for r, c in pixels]
        raster_crs = src.crs
    frame = gpd.GeoDataFrame(
        {"unit_id": [f"u{i:03d}" for i in range(len(pixels))],
         "treatment": np.arange(len(pixels)) % 2, "outcome": np.linspace(0, 1, len(pixels))},
        geometry=gpd.points_from_xy(*zip(*xy, strict=True)), crs=raster_crs,
    ).to_crs(crs)
    return validate_units(frame, UnitColumns())


def test_units_in_wgs84_over_utm_raster_get_the_right_pixels(tmp_path, data_dir):
    rng = np.random.default_rng(1)
    pixels = [tuple(p) for p in rng.integers(20, 490, size=(40, 2))]
    units = _units_at_pixels(SENTINEL2, pixels, crs="EPSG:4326")
    result = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=16, units_per_chunk=7)
    store = open_store(result.store_path)
    assert result.n_usable == 40 and result.skipped.empty
    batch = store.read_units(list(units["unit_id"]))
    with rasterio.open(SENTINEL2) as src:
        for i, (row, col) in enumerate(pixels):
            direct = src.read(window=Window(col - 8, row - 8, 16, 16))
            np.testing.assert_array_equal(batch.chips[i, 0], direct)
    assert batch.valid.all()


def test_centres_recorded_in_raster_crs(tmp_path, data_dir):
    units = _units_at_pixels(LANDSAT8, [(100, 100), (200, 300)])
    result = ingest(units, [LANDSAT8], tmp_path / "l.zarr", chip_size=8)
    store = open_store(result.store_path)
    to_utm = Transformer.from_crs("EPSG:4326", store.crs, always_xy=True)
    for uid, centre in zip(store.unit_ids, store.centres, strict=True):
        geom = units.set_index("unit_id").geometry[uid]
        np.testing.assert_allclose(centre, to_utm.transform(geom.x, geom.y), atol=1e-6)
    assert store.attrs["band_names"][:2] == ["band_1", "band_2"] or len(store.band_names) == 8


def test_outside_and_nodata_units_are_listed_with_reasons(tmp_path, data_dir):
    # (5, 5) lies in RGB.byte's black nodata collar; (-200, -200) is off the raster.
    units = _units_at_pixels(RGB_BYTE, [(300, 400), (5, 5), (-200, -200), (350, 350)])
    result = ingest(units, [RGB_BYTE], tmp_path / "r.zarr", chip_size=16)
    reasons = dict(zip(result.skipped["unit_id"], result.skipped["reason"], strict=True))
    assert set(reasons) == {"u001", "u002"}
    assert reasons["u002"].startswith("outside imagery")
    assert reasons["u001"].startswith("too few valid pixels")
    store = open_store(result.store_path)
    usable = dict(zip(store.unit_ids, store.group["usable"][:], strict=True))
    assert usable == {"u000": True, "u001": False, "u003": True}


def test_store_opens_with_xarray_and_equals_reads(tmp_path, data_dir):
    units = _units_at_pixels(SENTINEL2, [(50, 60), (400, 410), (256, 256)])
    result = ingest(units, [SENTINEL2], tmp_path / "x.zarr", chip_size=12, bands=["B8A", 2])
    ds = xr.open_zarr(result.store_path)
    assert ds["chips"].dims == ("unit", "time", "band", "y", "x")
    assert ds["chips"].shape == (3, 1, 2, 12, 12)
    store = open_store(result.store_path)
    np.testing.assert_array_equal(ds["chips"].values, store.chips[:])
    assert store.band_names == ["B8A", "B06"]
    with rasterio.open(SENTINEL2) as src:
        pixels = src.read([4, 2], window=Window(0, 0, 512, 512)).astype(float)
    # Band statistics sample every STATS_STRIDE-th pixel along y and x.
    sampled = store.chips[:, 0, 0, ::STATS_STRIDE, ::STATS_STRIDE].astype(float)
    assert store.band_mean[0] == pytest.approx(sampled.mean(), rel=1e-9)
    assert store.band_std[0] == pytest.approx(sampled.std(), rel=1e-9)
    assert store.band_mean[0] == pytest.approx(store.chips[:, 0, 0].mean(), rel=0.05)
    assert 0 < store.band_mean[0] < pixels[0].max()


def test_all_units_outside_raise_one_clear_error(tmp_path, data_dir):
    units = _units_at_pixels(SENTINEL2, [(-5000, -5000), (-6000, -6000)])
    with pytest.raises(NoUsableUnitsError, match="All 2 units lie outside the imagery"):
        ingest(units, [SENTINEL2], tmp_path / "none.zarr")


def test_truncated_geotiff_is_reported(tmp_path, data_dir):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(SENTINEL2.read_bytes()[: SENTINEL2.stat().st_size // 3])
    units = _units_at_pixels(SENTINEL2, [(10, 10)])
    with pytest.raises(RasterReadError, match="broken.tif.*truncated"):
        ingest(units, [broken], tmp_path / "t.zarr")


def test_raster_without_crs_is_reported(tmp_path, data_dir):
    bare = tmp_path / "bare.tif"
    with rasterio.open(SENTINEL2) as src:
        profile = {**src.profile, "crs": None}
        data = src.read()
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(data)
    units = _units_at_pixels(SENTINEL2, [(10, 10)])
    with pytest.raises(CRSMissingError, match="bare.tif' has no CRS"):
        ingest(units, [bare], tmp_path / "c.zarr")


def test_ingest_never_deletes_a_folder_it_did_not_write(tmp_path):
    import geopandas as gpd
    import rasterio
    from eocausal.pipeline.ingest import ingest
    from eocausal.pipeline.units import UnitColumns, validate_units

    from eocausal.errors import OutputPathError
    from tests.conftest import SENTINEL2

    with rasterio.open(SENTINEL2) as src:
        x, y = src.transform * (256, 256)
        crs = src.crs
    units = validate_units(gpd.GeoDataFrame({"unit_id": ["a"]}, geometry=gpd.points_from_xy([x], [y]),
                                            crs=crs), UnitColumns(), require_outcome=False)
    theirs = tmp_path / "tiles.zarr"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("someone else's")
    with pytest.raises(OutputPathError, match="not an eocausal tile store"):
        ingest(units, [SENTINEL2], theirs, chip_size=16)
    assert (theirs / "notes.txt").read_text() == "someone else's"
    afile = tmp_path / "file.zarr"
    afile.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        ingest(units, [SENTINEL2], afile, chip_size=16)
    ours = ingest(units, [SENTINEL2], tmp_path / "ours.zarr", chip_size=16)
    again = ingest(units, [SENTINEL2], tmp_path / "ours.zarr", chip_size=8)  # replaces our own
    assert ours.n_usable == again.n_usable == 1 and again.store.chip_size == 8


def test_nan_pixels_are_invalid_and_statistics_stay_finite(tmp_path):
    import geopandas as gpd
    import numpy as np
    import rasterio
    from eocausal.pipeline.ingest import ingest
    from eocausal.pipeline.units import UnitColumns, validate_units
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).random((2, 64, 64)).astype("float32")
    data[:, :, :32] = np.nan  # left half NaN, and the file declares no nodata
    data[1, 30, 44] = np.inf  # inside the data side's chip (rows 24-39, cols 40-55)
    path = tmp_path / "nan.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2, dtype="float32",
                       crs="EPSG:32636", transform=from_origin(500000, 10000, 10, 10)) as dst:
        dst.write(data)
    xs, ys = [500000 + 10 * 16, 500000 + 10 * 48], [10000 - 10 * 32] * 2
    units = validate_units(gpd.GeoDataFrame({"unit_id": ["nan_side", "data_side"]},
                                            geometry=gpd.points_from_xy(xs, ys), crs="EPSG:32636"),
                           UnitColumns(), require_outcome=False)
    result = ingest(units, [path], tmp_path / "t.zarr", chip_size=16)
    assert list(result.skipped["unit_id"]) == ["nan_side"]
    assert "valid" in result.skipped["reason"].iloc[0]
    store = result.store
    assert np.isfinite(store.band_mean).all() and np.isfinite(store.band_std).all()
    chips, valid = np.asarray(store.chips[:]), np.asarray(store.valid[:])
    assert np.isfinite(chips).all()
    i = list(store.unit_ids).index("data_side")
    assert not valid[i, 0, 6, 4] and valid[i, 0].sum() == 16 * 16 - 1  # the inf pixel


def test_tasks_send_back_exactly_the_summaries_they_wrote(tmp_path, data_dir):
    """The driver finishes from the tasks' results instead of rereading every chunk's
    summary: they must be the store's, bit for bit (a unit at the edge is partly valid)."""
    from eocausal.pipeline.ingest import _summaries

    pixels = [(r, c) for r in (3, 100, 250, 508) for c in (2, 200, 509)]
    units = _units_at_pixels(SENTINEL2, pixels)
    finished = []

    def recording(func, tasks):
        finished.extend(map(func, tasks))
        return finished

    result = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=16, units_per_chunk=5,
                    min_valid_fraction=0.3, map_partitions=recording)
    store = open_store(result.store_path)
    stats, fractions = _summaries(store, finished)
    assert len(finished) == store.n_chunks == 3
    np.testing.assert_array_equal(stats, store.partition_stats())
    np.testing.assert_array_equal(fractions, store.group["valid_fraction"][:])
    assert 0 < fractions.min() < 1  # edge units: partly valid, so the values are telling
    np.testing.assert_array_equal(store.group["usable"][:], fractions.max(axis=1) >= 0.3)
