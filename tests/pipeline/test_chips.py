"""Chips equal a direct rasterio read of the same window; edges and nodata are masked."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from eocausal.pipeline.chips import (
    ChipGrid,
    chip_window,
    mask_from_nodata,
    nodata_validity,
    read_chip,
    window_overlap_fraction,
)
from hypothesis import given
from hypothesis import strategies as st
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

from tests.conftest import IMAGERY, LANDSAT8, RGB_BYTE, RMNP_4326, SENTINEL2


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


NDVI = sorted((IMAGERY / "eolearn_ndvi_series").glob("s2_ndvi_*.tif"))


def _chips_vs_dataset_mask(path, size, n, rng, indexes=None):
    """read_chip's validity against GDAL's dataset mask at random windows, edges included."""
    with rasterio.open(path) as src:
        checked = 0
        for _ in range(n):
            col = int(rng.integers(-size // 2, src.width - size // 2))
            row = int(rng.integers(-size // 2, src.height - size // 2))
            window = Window(col, row, size, size)
            _, valid = read_chip(src, window, indexes=indexes)
            expected = src.dataset_mask(window=window, boundless=True) > 0
            np.testing.assert_array_equal(valid, expected)
            checked += int((~expected).sum())
    return checked


@pytest.mark.parametrize("path", [RGB_BYTE, RMNP_4326, *NDVI[:3]], ids=lambda p: p.name)
def test_nodata_validity_equals_dataset_mask(path, data_dir):
    """The numpy path (no GDAL mask read) gives GDAL's dataset mask pixel for pixel."""
    with rasterio.open(path) as src:
        assert mask_from_nodata(src)
    invalid = _chips_vs_dataset_mask(path, 32, 60, np.random.default_rng(1))
    assert invalid > 0  # the windows did cross nodata, so the comparison had teeth


def test_nodata_validity_nan_series_has_cloud_holes(data_dir):
    """NaN nodata (cloud pixels in the NDVI series) is invalid; finite pixels valid."""
    def cloud_share(path):
        with rasterio.open(path) as src:
            return float(np.isnan(src.read(1)).mean())

    cloudy = next(p for p in NDVI if 0.2 < cloud_share(p) < 0.8)
    with rasterio.open(cloudy) as src:
        chip, valid = read_chip(src, Window(0, 0, src.width, src.height))
        np.testing.assert_array_equal(valid, ~np.isnan(chip[0]))
        assert 0 < valid.mean() < 1


def test_band_subset_ors_every_band(tmp_path):
    """GDAL's dataset mask ORs all bands: a chip of band 1 only is still valid where band 2
    has data, as in the dataset mask."""
    path = tmp_path / "two.tif"
    data = np.zeros((2, 8, 8), dtype=np.uint8)
    data[0, :4] = 5  # band 1 has data in the top half, band 2 in the left half
    data[1, :, :4] = 7
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=2, dtype="uint8",
                       nodata=0, transform=Affine(1, 0, 0, 0, -1, 8)) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        _, valid = read_chip(src, Window(0, 0, 8, 8), indexes=[1])
        np.testing.assert_array_equal(valid, src.dataset_mask() > 0)
    np.testing.assert_array_equal(valid, (data != 0).any(axis=0))


def _with_internal_mask(source, out):
    """A copy of ``source`` (nodata kept) whose internal mask also blanks a valid square."""
    with rasterio.open(source) as src:
        profile, pixels, mask = src.profile, src.read(), src.dataset_mask()
    mask[300:400, 300:400] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(out, "w", **profile) as dst:
        dst.write(pixels)
        dst.write_mask(mask)
    return out


def test_real_mask_band_is_still_read(tmp_path, data_dir):
    path = _with_internal_mask(RGB_BYTE, tmp_path / "masked.tif")
    with rasterio.open(path) as src:
        assert not mask_from_nodata(src)
        assert MaskFlags.per_dataset in src.mask_flag_enums[0]
        chip, valid = read_chip(src, Window(330, 330, 16, 16))
        assert not valid.any()  # the mask says no data although the pixels are not nodata
        assert nodata_validity(chip, src.nodatavals).all()
    _chips_vs_dataset_mask(path, 32, 30, np.random.default_rng(2))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NodataShadowWarning")
def test_alpha_band_is_the_mask(tmp_path):
    """A 4-band RGBA with a nodata value: GDAL uses the alpha band, and so does read_chip."""
    path = tmp_path / "rgba.tif"
    data = np.full((4, 8, 8), 9, dtype=np.uint8)
    data[3, :, :3] = 0  # alpha says transparent in the first three columns
    data[:3, 5:] = 0  # nodata pixels in the last three rows, opaque alpha
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=4, dtype="uint8",
                       nodata=0, photometric="RGB", alpha="YES",
                       transform=Affine(1, 0, 0, 0, -1, 8)) as dst:
        dst.write(data)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                           ColorInterp.alpha]
    with rasterio.open(path) as src:
        assert not mask_from_nodata(src)
        _, valid = read_chip(src, Window(0, 0, 8, 8))
        np.testing.assert_array_equal(valid, src.dataset_mask() > 0)


def test_out_of_range_nodata_never_matches():
    pixels = np.array([[[0, 255]]], dtype=np.uint8)
    assert nodata_validity(pixels, (-1.0,)).all()
    assert nodata_validity(pixels, (0.5,)).all()
    np.testing.assert_array_equal(nodata_validity(pixels, (255.0,)), [[True, False]])
    np.testing.assert_array_equal(nodata_validity(pixels, (None,)), [[True, True]])


def test_nodata_validity_of_many_chips_at_once():
    rng = np.random.default_rng(3)
    chips = rng.integers(0, 3, size=(5, 3, 4, 4)).astype(np.uint8)
    batched = nodata_validity(chips, (0.0, 0.0, 0.0))
    for one, got in zip(chips, batched, strict=True):
        np.testing.assert_array_equal(got, nodata_validity(one, (0.0, 0.0, 0.0)))
    np.testing.assert_array_equal(nodata_validity(chips, (0.0, 1.0, 2.0)),
                                  (chips != np.array([0, 1, 2])[:, None, None]).any(axis=1))
