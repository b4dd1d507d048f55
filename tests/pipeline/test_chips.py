"""Chips equal a direct rasterio read of the same window; edges and nodata are masked."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from eocausal.pipeline.chips import ChipGrid, chip_window, read_chip, window_overlap_fraction
from hypothesis import given
from hypothesis import strategies as st
from rasterio.windows import Window

from tests.conftest import LANDSAT8, RGB_BYTE, SENTINEL2


@pytest.mark.parametrize("path", [SENTINEL2, LANDSAT8, RGB_BYTE])
def test_interior_chip_equals_direct_read(path, data_dir):
    rng = np.random.default_rng(0)
    with rasterio.open(path) as src:
        for _ in range(10):
            col, row = rng.integers(20, min(src.width, src.height) - 20, size=2)
            x, y = src.xy(row, col)  # pixel centre
            window = chip_window(src.transform, x, y, 32)
            chip, valid = read_chip(src, window)
            direct = src.read(window=Window(col - 16, row - 16, 32, 32))
            np.testing.assert_array_equal(chip, direct)
            expected_valid = src.dataset_mask(window=Window(col - 16, row - 16, 32, 32)) > 0
            np.testing.assert_array_equal(valid, expected_valid)


def test_edge_chip_masks_outside_pixels(data_dir):
    with rasterio.open(SENTINEL2) as src:
        x, y = src.xy(3, 5)  # near the top-left corner
        chip, valid = read_chip(src, chip_window(src.transform, x, y, 32))
        assert valid[:13, :].sum() == 0 and valid[:, :11].sum() == 0
        assert valid[13:, 11:].all()
        assert (chip[:, :13, :] == 0).all()
        np.testing.assert_array_equal(chip[:, 13:, 11:], src.read(window=Window(0, 0, 21, 19)))


def test_nodata_collar_is_invalid(data_dir):
    with rasterio.open(RGB_BYTE) as src:
        x, y = src.xy(5, 5)  # inside the raster, in the black nodata collar
        chip, valid = read_chip(src, chip_window(src.transform, x, y, 16))
        assert src.nodata == 0
        inside = valid | (chip.sum(axis=0) == 0)
        assert not valid[8:, 8:].any() and inside.all()


def test_selected_bands_and_out_buffer(data_dir):
    with rasterio.open(LANDSAT8) as src:
        x, y = src.xy(100, 200)
        window = chip_window(src.transform, x, y, 8)
        buffer = np.full((2, 8, 8), 7, dtype=src.dtypes[0])
        chip, _ = read_chip(src, window, indexes=[8, 2], out=buffer)
        assert chip is buffer
        np.testing.assert_array_equal(chip, src.read([8, 2], window=window))


@given(
    col=st.floats(-50, 150, allow_nan=False), row=st.floats(-50, 150, allow_nan=False),
    size=st.integers(1, 64),
)
def test_chip_window_centres_the_point(col, row, size):
    transform = Affine(20.0, 0, 300000.0, 0, -20.0, 4000000.0)
    x, y = transform @ (col, row)
    window = chip_window(transform, x, y, size)
    assert window.width == size and window.height == size
    point_col, point_row = ~transform @ (x, y)
    assert window.col_off + size // 2 <= point_col < window.col_off + size // 2 + 1 + 1e-6
    assert window.row_off + size // 2 <= point_row < window.row_off + size // 2 + 1 + 1e-6
    fraction = window_overlap_fraction(window, ChipGrid(transform, 100, 100))
    assert 0.0 <= fraction <= 1.0
