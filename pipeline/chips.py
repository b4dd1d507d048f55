"""Cut square chips around points from an open raster with plain rasterio windows.

A chip is read as the part of its window that lies inside the raster, placed into a
zero-filled array; the validity mask is False outside the raster and where GDAL's dataset
mask says "no data". Reading windows directly (not through a spatial index and a merge, as
torchgeo's RasterDataset does) keeps a point-chip loop as fast as a bare rasterio loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

__all__ = ["ChipGrid", "chip_window", "read_chip", "window_overlap_fraction"]


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


def _has_mask(dataset: rasterio.io.DatasetReader) -> bool:
    return any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums)


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
        True where the raster has data (GDAL dataset mask) inside its extent.
    """
    indexes = indexes or list(range(1, dataset.count + 1))
    height, width = int(window.height), int(window.width)
    if out is None:
        out = np.zeros((len(indexes), height, width), dtype=dataset.dtypes[indexes[0] - 1])
    else:
        out[...] = 0
    valid = np.zeros((height, width), dtype=bool)
    col0, row0 = int(window.col_off), int(window.row_off)
    c_start, r_start = max(col0, 0), max(row0, 0)
    c_stop = min(col0 + width, dataset.width)
    r_stop = min(row0 + height, dataset.height)
    if c_stop <= c_start or r_stop <= r_start:
        return out, valid
    inner = Window(c_start, r_start, c_stop - c_start, r_stop - r_start)
    rows = slice(r_start - row0, r_stop - row0)
    cols = slice(c_start - col0, c_stop - col0)
    out[:, rows, cols] = dataset.read(indexes, window=inner)
    if _has_mask(dataset):
        valid[rows, cols] = dataset.dataset_mask(window=inner) > 0
    else:
        valid[rows, cols] = True
    return out, valid
