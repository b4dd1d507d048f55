"""Regular grids of points over a raster, for predicting effects where no trial ran.

Each grid cell's centre becomes a pseudo-unit: it is chipped, encoded and scored exactly
like a trial unit, so the effect map is a model prediction, not an interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
from affine import Affine
from eocausal.pipeline.imagery import RasterSource

from eocausal.errors import ConfigError

__all__ = ["RegionGrid", "region_grid"]


@dataclass(frozen=True)
class RegionGrid:
    """Cell centres as units, plus the raster grid (shape, transform, CRS) they fill."""

    units: gpd.GeoDataFrame
    shape: tuple[int, int]
    transform: Affine
    crs: str

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) for matplotlib's imshow."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.shape[1], self.shape[0])
        return (left, right, bottom, top)


def region_grid(source: RasterSource, *, stride: int, margin: int = 0) -> RegionGrid:
    """Grid cells of ``stride`` x ``stride`` source pixels covering the raster.

    Parameters
    ----------
    source : RasterSource
        The raster to cover (its own CRS and pixel grid).
    stride : int
        Cell side in source pixels.
    margin : int, default=0
        Source pixels to leave out along each edge (half a chip keeps chips inside).
    """
    if stride < 1:
        raise ConfigError(f"Map grid stride must be a positive number of pixels. Got {stride}.")
    n_rows = (source.height - 2 * margin) // stride
    n_cols = (source.width - 2 * margin) // stride
    if n_rows < 1 or n_cols < 1:
        raise ConfigError(
            f"Raster '{source.path}' ({source.width}x{source.height} px) is too small for a map "
            f"grid with stride {stride} and margin {margin}; lower 'map.stride'."
        )
    cell = source.transform @ Affine.translation(margin, margin) @ Affine.scale(stride)
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    xs, ys = cell @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    ids = [f"cell_{r}_{c}" for r, c in zip(rows.ravel(), cols.ravel(), strict=True)]
    units = gpd.GeoDataFrame(
        {"unit_id": ids, "row": rows.ravel(), "col": cols.ravel()},
        geometry=gpd.points_from_xy(xs, ys), crs=source.crs,
    )
    return RegionGrid(units=units, shape=(n_rows, n_cols), transform=cell, crs=source.crs)
