"""Ingestion of rasters whose only mask is a nodata value: the block-read fast path computes
validity from the pixels, and must equal GDAL's dataset mask and the per-chip path."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from eocausal.pipeline.chips import read_chip
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, validate_units
from rasterio.windows import Window

from tests.conftest import RGB_BYTE, RMNP_4326

SIZE = 16


def _dense_units(path, step, margin):
    """Units on a dense grid of pixels, chips wholly inside (the block path takes them)."""
    with rasterio.open(path) as src:
        rows, cols = np.meshgrid(np.arange(margin, src.height - margin, step),
                                 np.arange(margin, src.width - margin, step), indexing="ij")
        pixels = list(zip(rows.ravel(), cols.ravel(), strict=True))
        xy = [src.xy(r, c) for r, c in pixels]
        frame = gpd.GeoDataFrame(
            {"unit_id": [f"u{i:05d}" for i in range(len(pixels))],
             "treatment": np.arange(len(pixels)) % 2, "outcome": np.zeros(len(pixels))},
            geometry=gpd.points_from_xy(*zip(*xy, strict=True)), crs=src.crs)
    return validate_units(frame, UnitColumns()), pixels


@pytest.mark.parametrize("path", [RGB_BYTE, RMNP_4326], ids=lambda p: p.name)
def test_store_validity_equals_dataset_mask(path, tmp_path, data_dir):
    units, pixels = _dense_units(path, step=12, margin=SIZE)
    result = ingest(units, [path], tmp_path / "s.zarr", chip_size=SIZE, min_valid_fraction=0.0)
    store = open_store(result.store_path)
    batch = store.read_units(list(units["unit_id"]))
    invalid = 0
    with rasterio.open(path) as src:
        for i, (row, col) in enumerate(pixels):
            window = Window(col - SIZE // 2, row - SIZE // 2, SIZE, SIZE)
            mask = src.dataset_mask(window=window) > 0
            np.testing.assert_array_equal(batch.valid[i, 0], mask)
            expected, ok = read_chip(src, window)  # the per-chip path, GDAL-equal validity
            np.testing.assert_array_equal(ok, mask)
            np.testing.assert_array_equal(batch.chips[i, 0], np.where(mask, expected, 0))
            invalid += int((~mask).sum())
    assert invalid > 300  # the grid crossed nodata pixels: the check had teeth
