"""The target grid that every chip is cut on, and how each raster reaches it.

By default the grid is the first raster's own CRS, pixel size and pixel alignment, so a
study with one scene is read natively, pixel for pixel. Rasters on that same grid (same CRS
and pixel size, origin a whole number of pixels away) are read natively too; any other
raster, and every raster when ``crs``/``resolution`` is given, is reached through a
rasterio ``WarpedVRT`` whose transform *is* the target grid, so a chip window means the same
pixels in every source. Resampling: nearest for integer rasters (keeps classes, quality bits
and digital numbers intact), bilinear for floating-point ones, unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from eocausal.pipeline.imagery import RasterSource
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from eocausal.errors import ConfigError

__all__ = [
    "SourceAccess",
    "TargetGrid",
    "default_resampling",
    "make_target_grid",
    "plan_access",
    "vrt_transform",
]

ALIGN_TOLERANCE = 1e-6  # fraction of a pixel


@dataclass(frozen=True)
class TargetGrid:
    """An unbounded, north-up pixel grid: CRS, pixel size, and one pixel corner (origin)."""

    crs: str
    transform: Affine

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    def windows(self, centres: np.ndarray, size: int) -> np.ndarray:
        """Top-left (col, row) on this grid of the ``size``-pixel chip around each centre.

        The one place a chip window is derived: planning and the tasks (which recompute
        their windows from the store's centres) must agree to the pixel.
        """
        cols, rows = ~self.transform @ (centres[:, 0], centres[:, 1])
        half = size // 2
        return np.column_stack([np.floor(cols) - half, np.floor(rows) - half]).astype(np.int64)


@dataclass(frozen=True)
class SourceAccess:
    """How a task reads one raster on the target grid: natively at an offset, or warped.

    In both cases ``col_offset``/``row_offset`` are where the dataset's first pixel lies on
    the target grid, so a target window minus the offsets is a window of the dataset: the
    file itself when native, else a WarpedVRT of ``vrt_width`` x ``vrt_height`` target
    pixels whose transform is :func:`vrt_transform`.
    """

    path: str
    native: bool
    col_offset: int = 0
    row_offset: int = 0
    vrt_width: int = 0
    vrt_height: int = 0
    resampling: str = "nearest"
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # in the target CRS


def default_resampling(dtype: str) -> str:
    """Nearest for integer data, bilinear for floating point (see the module docstring)."""
    return "bilinear" if np.issubdtype(np.dtype(dtype), np.floating) else "nearest"


def make_target_grid(
    sources: Sequence[RasterSource], *, crs: str | None = None, resolution: float | None = None
) -> TargetGrid:
    """Pick the target grid: the first raster's own, or ``crs``/``resolution`` when given."""
    first = sources[0]
    if crs is None and resolution is None:
        return TargetGrid(first.crs, first.transform)
    try:
        target_crs = CRS.from_user_input(crs or first.crs).to_string()
    except Exception as exc:  # pyproj raises CRSError with a long message
        raise ConfigError(f"Target CRS '{crs}' is not a CRS pyproj understands: {exc}") from None
    if resolution is None:
        left, bottom, right, top = transform_bounds(first.crs, target_crs, *first.bounds)
        resolution = max((right - left) / first.width, (top - bottom) / first.height)
    if not resolution > 0:
        raise ConfigError(f"Target resolution must be positive. Got {resolution} instead.")
    lefts, tops = [], []
    for source in sources:
        left, _, _, top = transform_bounds(source.crs, target_crs, *source.bounds)
        lefts.append(left)
        tops.append(top)
    # Snap the origin to multiples of the resolution (gdalwarp -tap) so reruns align.
    x0 = math.floor(min(lefts) / resolution) * resolution
    y0 = math.ceil(max(tops) / resolution) * resolution
    return TargetGrid(target_crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y0))


def _native_offset(source: RasterSource, grid: TargetGrid) -> tuple[int, int] | None:
    if CRS.from_user_input(source.crs) != CRS.from_user_input(grid.crs):
        return None
    st, gt = source.transform, grid.transform
    if st.b != 0 or st.d != 0 or not np.allclose((st.a, st.e), (gt.a, gt.e), rtol=1e-9):
        return None
    col = (st.c - gt.c) / gt.a
    row = (st.f - gt.f) / gt.e
    if abs(col - round(col)) > ALIGN_TOLERANCE or abs(row - round(row)) > ALIGN_TOLERANCE:
        return None
    return round(col), round(row)


def plan_access(
    source: RasterSource, grid: TargetGrid, *, force_warp: bool = False,
    resampling: str | None = None,
) -> SourceAccess:
    """Decide how ``source`` is read on ``grid`` and where it lies in the target CRS."""
    bounds = transform_bounds(source.crs, grid.crs, *source.bounds, densify_pts=21)
    method = resampling or default_resampling(source.dtype)
    if method not in Resampling.__members__:
        raise ConfigError(
            f"Resampling '{method}' is unknown; use one of {sorted(Resampling.__members__)}."
        )
    offset = None if force_warp else _native_offset(source, grid)
    if offset is not None:
        # Native: target col = source col + offset, so source col = target col - offset.
        return SourceAccess(source.path, True, offset[0], offset[1], resampling=method,
                            bounds=bounds)
    inverse = ~grid.transform
    left_col, top_row = inverse @ (bounds[0], bounds[3])
    right_col, bottom_row = inverse @ (bounds[2], bounds[1])
    col0, row0 = math.floor(left_col), math.floor(top_row)
    return SourceAccess(
        source.path, False, col0, row0,
        vrt_width=max(1, math.ceil(right_col) - col0),
        vrt_height=max(1, math.ceil(bottom_row) - row0), resampling=method, bounds=bounds,
    )


def vrt_transform(access: SourceAccess, grid: TargetGrid) -> Affine:
    """The WarpedVRT transform: the target grid shifted to the source's first pixel."""
    return grid.transform @ Affine.translation(access.col_offset, access.row_offset)
