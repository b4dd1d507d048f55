"""Cut square chips around points from an open raster with plain rasterio windows.

A chip is read as the part of its window that lies inside the raster, placed into a
zero-filled array; the validity mask is False outside the raster and where GDAL's dataset
mask says "no data". Reading windows directly (not through a spatial index and a merge, as
torchgeo's RasterDataset does) keeps a point-chip loop as fast as a bare rasterio loop.

When a raster's only mask is its nodata value (every band's mask flags are ``nodata`` or
``all_valid``), the dataset mask is the OR over bands of "pixel differs from the band's
nodata value", so it is computed from the pixels already read (:func:`nodata_validity`)
instead of a second GDAL read per chip; a real mask band (``.msk``, internal mask, alpha)
is still read through GDAL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

__all__ = ["ChipGrid", "chip_window", "mask_from_nodata", "nodata_validity", "nodata_values",
           "read_chip", "window_overlap_fraction"]


@dataclass(frozen=True)
class ChipGrid:
    """Where a raster's pixels lie: enough to place chips without opening the file."""

    transform: Affine
    width: int
    height: int

    @classmethod
    def from_dataset(cls, dataset: rasterio.io.DatasetReader) -> ChipGrid:
        return cls(dataset.transform, dataset.width, dataset.height)


def chip_window(transform: Affine, x: float, y: float, size: int) -> Window:
    """The ``size`` x ``size`` pixel window whose centre pixel contains map point (x, y).

    For even sizes the point's pixel sits at index ``size // 2`` (just below and right of
    the geometric centre), so a chip never needs resampling.
    """
    col, row = ~transform @ (x, y)
    half = size // 2
    return Window(math.floor(col) - half, math.floor(row) - half, size, size)


def window_overlap_fraction(window: Window, grid: ChipGrid) -> float:
    """Fraction of ``window``'s pixels that lie inside the raster (0 when it misses it)."""
    cols = max(0, min(window.col_off + window.width, grid.width) - max(window.col_off, 0))
    rows = max(0, min(window.row_off + window.height, grid.height) - max(window.row_off, 0))
    return (cols * rows) / float(window.width * window.height)


_CLEAN = ([MaskFlags.nodata], [MaskFlags.all_valid])


def _nodata_only(dataset: rasterio.io.DatasetReader, flags: list[list[MaskFlags]]) -> bool:
    if not all(f in _CLEAN for f in flags):
        return False  # a mask band, .msk file or alpha band: GDAL's mask decides
    return not (dataset.count == 4 and dataset.colorinterp[3] == ColorInterp.alpha)


def mask_from_nodata(dataset: rasterio.io.DatasetReader) -> bool:
    """True when the dataset mask follows from the nodata values alone, so numpy can compute it.

    That holds when at least one band has GDAL's nodata mask, every band's mask is the nodata
    mask or "all valid" (no mask band, ``.msk`` file or alpha band), and the file is not a
    4-band RGBA whose alpha band GDAL would use as the dataset mask.
    """
    flags = dataset.mask_flag_enums
    return any(f == [MaskFlags.nodata] for f in flags) and _nodata_only(dataset, flags)


def nodata_values(dataset: rasterio.io.DatasetReader,
                  flags: list[list[MaskFlags]] | None = None) -> tuple[float | None, ...]:
    """Each band's nodata value, or None for a band whose mask says "all valid"."""
    flags = dataset.mask_flag_enums if flags is None else flags
    return tuple(v if MaskFlags.nodata in f else None
                 for v, f in zip(dataset.nodatavals, flags, strict=True))


def nodata_validity(pixels: np.ndarray, nodatavals: tuple[float | None, ...]) -> np.ndarray:
    """Valid pixels as GDAL's dataset mask defines them for a nodata-only raster.

    A pixel is valid where any band differs from its band's nodata value (NaN matches NaN);
    a band without a nodata value (None), or whose value its dtype cannot hold, makes every
    pixel valid.

    Parameters
    ----------
    pixels : ndarray of shape (..., C, H, W)
        Every band of the dataset, in band order (leading axes: many chips at once).
    nodatavals : tuple of float or None, length C

    Returns
    -------
    valid : ndarray of shape (..., H, W), bool
    """
    shape = pixels.shape[:-3] + pixels.shape[-2:]
    if any(v is None or not _representable(v, pixels.dtype) for v in nodatavals):
        return np.ones(shape, dtype=bool)  # that band never reads "no data"
    values = np.asarray(nodatavals, dtype=np.float64)
    if np.isnan(values).all():
        return ~np.isnan(pixels).all(axis=-3)
    if np.isnan(values).any():  # mixed NaN and numbers: band by band
        bands = np.moveaxis(pixels, -3, 0)
        return np.logical_or.reduce([~np.isnan(b) if np.isnan(v) else b != b.dtype.type(v)
                                     for b, v in zip(bands, values, strict=True)])
    if (values == values[0]).all():
        return (pixels != pixels.dtype.type(values[0])).any(axis=-3)
    return (pixels != values.astype(pixels.dtype)[:, None, None]).any(axis=-3)


def _representable(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    info = _INT_RANGES.get(dtype) or _INT_RANGES.setdefault(dtype, np.iinfo(dtype))
    return bool(math.isfinite(value) and float(value).is_integer()
                and info.min <= value <= info.max)


_INT_RANGES: dict[np.dtype, np.iinfo] = {}  # np.iinfo costs microseconds; chips are many


def read_chip(
    dataset: rasterio.io.DatasetReader,
    window: Window,
    *,
    indexes: list[int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one chip and its validity mask.

    Parameters
    ----------
    dataset : rasterio dataset
        An open raster (the caller owns the ``with`` block).
    window : Window
        Integer pixel window, possibly reaching past the raster's edges.
    indexes : list of int, optional
        1-based band indexes; all bands by default.
    out : ndarray of shape (C, H, W), optional
        Array to fill (zeroed first), to avoid one allocation per chip.

    Returns
    -------
    pixels : ndarray of shape (C, H, W), the dataset's dtype
        Zero outside the raster.
    valid : ndarray of shape (H, W), bool
        True where the raster has data (GDAL's dataset mask, or the same computed from the
        nodata values for a raster without a mask band) inside its extent.
    """
    every = list(range(1, dataset.count + 1))
    indexes = indexes or every
    height, width = int(window.height), int(window.width)
    if out is None:
        out = np.zeros((len(indexes), height, width), dtype=dataset.dtypes[indexes[0] - 1])
    valid = np.zeros((height, width), dtype=bool)
    col0, row0 = int(window.col_off), int(window.row_off)
    c_start, r_start = max(col0, 0), max(row0, 0)
    c_stop = min(col0 + width, dataset.width)
    r_stop = min(row0 + height, dataset.height)
    if c_stop <= c_start or r_stop <= r_start:
        out[...] = 0
        return out, valid
    inner = Window(c_start, r_start, c_stop - c_start, r_stop - r_start)
    rows = slice(r_start - row0, r_stop - row0)
    cols = slice(c_start - col0, c_stop - col0)
    whole = inner.width == width and inner.height == height
    if whole and out.dtype == np.dtype(dataset.dtypes[indexes[0] - 1]) and out.flags.c_contiguous:
        dataset.read(indexes, window=inner, out=out)  # wholly inside: no fill, no copy
    else:
        out[...] = 0
        out[:, rows, cols] = dataset.read(indexes, window=inner)
    flags = dataset.mask_flag_enums  # one GDAL query per chip
    if all(f == [MaskFlags.all_valid] for f in flags):
        valid[rows, cols] = True
    elif _nodata_only(dataset, flags):
        # The dataset mask ORs every band: a subset of bands needs the others read too.
        pixels = out[:, rows, cols] if indexes == every else dataset.read(window=inner)
        valid[rows, cols] = nodata_validity(pixels, nodata_values(dataset, flags))
    else:
        valid[rows, cols] = dataset.dataset_mask(window=inner) > 0
    return out, valid
