"""Planning at scale: chunk sizes, the Hilbert order, and block reads equal to window reads."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.partition import TARGET_CHUNK_BYTES, units_per_chunk_for
from eocausal.pipeline.plan import hilbert_distance
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, validate_units
from rasterio.windows import Window

from tests.conftest import SENTINEL2


def test_chunk_bytes_follow_chip_size_bands_and_dates():
    # 6 bands of uint16 at 32 px: 13,312 bytes a unit, so 8 MiB hold 630 units.
    assert units_per_chunk_for(100_000, chip_size=32, n_bands=6) == TARGET_CHUNK_BYTES // 13_312
    assert units_per_chunk_for(100_000, chip_size=32, n_bands=6) == 630
    # Four times the pixels per unit: a quarter of the units per chunk.
    assert units_per_chunk_for(100_000, chip_size=64, n_bands=6) == TARGET_CHUNK_BYTES // 53_248
    assert units_per_chunk_for(100_000, chip_size=32, n_bands=6, n_dates=4) == 157
    assert units_per_chunk_for(100_000, chip_size=32, n_bands=3, itemsize=1) == 2048


def test_chunks_shrink_so_every_worker_gets_four():
    assert units_per_chunk_for(2_000, chip_size=32, n_bands=6, n_workers=1) == 500
    assert units_per_chunk_for(2_000, chip_size=32, n_bands=6, n_workers=2) == 250
    assert units_per_chunk_for(10, chip_size=32, n_bands=6, n_workers=8) == 1
    assert units_per_chunk_for(0, chip_size=32, n_bands=6) == 1


def _units(rows, cols):
    with rasterio.open(SENTINEL2) as src:
        xs, ys = src.transform @ (cols + 0.5, rows + 0.5)
        crs = src.crs
    frame = gpd.GeoDataFrame(
        {"unit_id": [f"u{i:05d}" for i in range(len(rows))], "treatment": 0, "outcome": 0.0},
        geometry=gpd.points_from_xy(xs, ys), crs=crs)
    return validate_units(frame, UnitColumns())


def test_dense_and_sparse_units_equal_direct_window_reads(tmp_path, data_dir):
    # A dense cluster (read as blocks), scattered units (read one by one) and units on the
    # edges (the mosaic path), in one task.
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.integers(100, 140, 300), rng.integers(0, 512, 40), [0, 511, 3]])
    cols = np.concatenate([rng.integers(300, 340, 300), rng.integers(0, 512, 40), [0, 511, 509]])
    units = _units(rows, cols)
    result = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=16)
    store = open_store(result.store_path)
    assert store.units_per_chunk == units_per_chunk_for(len(rows), chip_size=16, n_bands=6)
    batch = store.read_units(list(units["unit_id"]))
    with rasterio.open(SENTINEL2) as src:
        for i, (row, col) in enumerate(zip(rows, cols, strict=True)):
            window = Window(col - 8, row - 8, 16, 16)
            direct = src.read(window=window, boundless=True, fill_value=0)
            np.testing.assert_array_equal(batch.chips[i, 0], direct)
            inside = src.read_masks(1, window=window, boundless=True) > 0
            np.testing.assert_array_equal(batch.valid[i, 0], inside)


def test_resume_keeps_the_chunk_size_of_the_store(tmp_path, data_dir):
    rng = np.random.default_rng(4)
    units = _units(rng.integers(20, 490, 200), rng.integers(20, 490, 200))
    out = tmp_path / "r.zarr"
    first = ingest(units, [SENTINEL2], out, chip_size=8, n_workers=1)
    per_chunk = open_store(out).units_per_chunk
    # Sized for 4 workers the chunks would be smaller, but the finished store is reused.
    again = ingest(units, [SENTINEL2], out, chip_size=8, n_workers=4)
    assert again.n_tasks_run == 0 and open_store(out).units_per_chunk == per_chunk
    assert first.n_tasks_total == again.n_tasks_total
    # An explicit, different chunk size rebuilds the store.
    rebuilt = ingest(units, [SENTINEL2], out, chip_size=8, units_per_chunk=7)
    assert rebuilt.n_tasks_run == rebuilt.n_tasks_total == 29


def test_raw_and_lz4_chips_are_the_same_pixels(tmp_path, data_dir):
    rng = np.random.default_rng(5)
    units = _units(rng.integers(0, 512, 120), rng.integers(0, 512, 120))
    raw = open_store(ingest(units, [SENTINEL2], tmp_path / "raw.zarr", chip_size=8).store_path)
    lz4 = open_store(ingest(units, [SENTINEL2], tmp_path / "lz4.zarr", chip_size=8,
                            compression="lz4").store_path)
    assert raw.attrs["layout"]["compression"] == "none"
    assert lz4.attrs["layout"]["compression"] == "lz4"
    np.testing.assert_array_equal(raw.chips[:], lz4.chips[:])
    np.testing.assert_array_equal(raw.valid[:], lz4.valid[:])
    np.testing.assert_allclose(raw.band_mean, lz4.band_mean)


@pytest.mark.parametrize("levels", [3, 5])
def test_hilbert_distance_walks_every_cell_by_unit_steps(levels):
    n = 1 << levels
    rows, cols = np.mgrid[0:n, 0:n]
    d = hilbert_distance(cols.ravel() - 7, rows.ravel() + 3, levels=levels)  # any offset
    assert sorted(d.tolist()) == list(range(n * n))
    order = np.argsort(d)
    steps = np.abs(np.diff(cols.ravel()[order])) + np.abs(np.diff(rows.ravel()[order]))
    assert steps.tolist() == [1] * (n * n - 1)


def test_hilbert_distance_coarsens_wide_extents_into_its_levels():
    cols = np.array([0, 1, 2**20, 2**20 + 1])
    d = hilbert_distance(cols, np.zeros(4, dtype=int), levels=4)
    assert d.max() < 16 * 16 and d[0] == d[1] and d[2] == d[3] and d[0] != d[2]
