"""The region to map and the grid of cells laid inside it.

A region is a bounding box in longitude/latitude, a polygon file (optionally filtered with an
OGR SQL ``where``), a point file (a list of candidate places: one cell per point), or, when
none is given, the extent of the imagery. Cells are squares of ``spacing`` metres in the UTM
zone of the region's centre, so a 1 km cell is 1 km wherever the region lies; cells whose
centre falls outside the region's polygons stay in the raster as nodata.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from affine import Affine
from eocausal.pipeline.imagery import describe_raster, expand_imagery

from eocausal.errors import ConfigError, InputFileError

__all__ = ["CellGrid", "Region", "imagery_extent", "lay_grid", "read_region"]

log = logging.getLogger(__name__)

DEFAULT_CELLS_ACROSS = 200


@dataclass(frozen=True)
class Region:
    """The region's shapes in EPSG:4326, and whether they are places (points) or areas."""

    shapes: gpd.GeoDataFrame
    source: str
    places: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.shapes.total_bounds)  # type: ignore[return-value]


@dataclass(frozen=True)
class CellGrid:
    """Cells as pseudo-units (``unit_id``, ``row``, ``col``, point geometry in ``crs``).

    ``shape``/``transform`` describe the raster the cells fill (None for a list of places);
    ``units`` holds only the cells inside the region, so the rest stay nodata.
    """

    units: gpd.GeoDataFrame
    crs: str
    spacing: float
    shape: tuple[int, int] | None
    transform: Affine | None

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) for matplotlib's imshow."""
        if self.shape is None or self.transform is None:
            x0, y0, x1, y1 = self.units.total_bounds
            return (x0, x1, y0, y1)
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.shape[1], self.shape[0])
        return (left, right, bottom, top)


def imagery_extent(imagery: Sequence[str | Path]) -> tuple[float, float, float, float]:
    """Union of the rasters' bounds in longitude/latitude (EPSG:4326)."""
    boxes = []
    for path in expand_imagery(imagery):
        src = describe_raster(path, checksum=False)
        left, top = src.transform @ (0, 0)
        right, bottom = src.transform @ (src.width, src.height)
        box = gpd.GeoSeries([shapely.box(left, bottom, right, top)], crs=src.crs)
        boxes.append(box.to_crs("EPSG:4326").total_bounds)
    b = np.array(boxes)
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


def _parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        return None
    if not (x0 < x1 and y0 < y1 and -180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90):
        raise ConfigError(
            f"Region bounding box {text!r} must be 'minlon,minlat,maxlon,maxlat' in degrees "
            "(EPSG:4326) with min < max; for example '-106.0,40.1,-105.4,40.6'."
        )
    return x0, y0, x1, y1


def read_region(region: str | Path | None, *, where: str | None = None,
                imagery: Sequence[str | Path] = ()) -> Region:
    """Read the region: a bbox, a polygon or point file (with ``where``), or the imagery extent.

    Raises
    ------
    InputFileError
        If the file does not exist.
    ConfigError
        If the bbox is malformed, ``where`` is invalid or selects nothing.
    """
    if region is None or str(region).strip() == "":
        x0, y0, x1, y1 = imagery_extent(imagery)
        shapes = gpd.GeoDataFrame({"name": ["imagery"]}, geometry=[shapely.box(x0, y0, x1, y1)],
                                  crs="EPSG:4326")
        return Region(shapes, "the imagery's extent")
    bbox = _parse_bbox(str(region)) if not Path(str(region)).exists() else None
    if bbox is not None:
        shapes = gpd.GeoDataFrame({"name": ["bbox"]}, geometry=[shapely.box(*bbox)],
                                  crs="EPSG:4326")
        return Region(shapes, f"bbox {region}")
    path = Path(str(region))
    if not path.exists():
        raise InputFileError(
            f"Region '{region}' is neither a file nor a bounding box 'minlon,minlat,maxlon,"
            "maxlat'. Give a polygon file (GeoPackage, GeoJSON, Shapefile) or four numbers."
        )
    try:
        shapes = gpd.read_file(path, where=where) if where else gpd.read_file(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read region '{path}'{f' with where {where!r}' if where else ''}: {exc}. "
            "Check the file and that 'where' is an OGR SQL filter such as \"name = 'Uganda'\"."
        ) from exc
    if len(shapes) == 0:
        raise ConfigError(
            f"Region '{path}' has no features{f' where {where!r}' if where else ''}. Check the "
            "filter's column and value (they are case-sensitive)."
        )
    if shapes.crs is None:
        raise ConfigError(f"Region '{path}' has no CRS. Set one (for example EPSG:4326).")
    shapes = shapes.to_crs("EPSG:4326")
    places = bool((shapes.geom_type == "Point").all())
    return Region(shapes, f"'{path.name}'" + (f" where {where}" if where else ""), places)


def _utm(region: Region) -> str:
    return str(region.shapes.estimate_utm_crs().to_string())


def lay_grid(region: Region, spacing: float | None, *, max_cells: int) -> CellGrid:
    """Lay square cells of ``spacing`` metres over the region, in its UTM zone.

    Raises
    ------
    ConfigError
        If the grid would hold more than ``max_cells`` cells (the message gives the spacing
        that fits), or no cell centre falls inside the region.
    """
    crs = _utm(region)
    projected = region.shapes.to_crs(crs)
    if region.places:
        pts = shapely.get_coordinates(projected.geometry.to_numpy())
        units = gpd.GeoDataFrame(
            {"unit_id": [f"place_{i}" for i in range(len(pts))], "row": np.zeros(len(pts), int),
             "col": np.arange(len(pts))}, geometry=gpd.points_from_xy(pts[:, 0], pts[:, 1]),
            crs=crs)
        for column in ("name",):
            if column in region.shapes:
                units[column] = region.shapes[column].to_numpy()
        return CellGrid(units, crs, float(spacing or 0.0), None, None)
    x0, y0, x1, y1 = projected.total_bounds
    if spacing is None:
        spacing = float(max(x1 - x0, y1 - y0) / DEFAULT_CELLS_ACROSS)
    n_cols, n_rows = max(1, math.ceil((x1 - x0) / spacing)), max(1, math.ceil((y1 - y0) / spacing))
    if n_cols * n_rows > max_cells:
        fit = math.sqrt((x1 - x0) * (y1 - y0) / max_cells)
        raise ConfigError(
            f"Spacing {spacing:g} m gives {n_cols} x {n_rows} = {n_cols * n_rows:,} cells over "
            f"{region.source}, more than max_cells={max_cells:,}. Use a spacing of at least "
            f"{math.ceil(fit):,} m or raise 'max_cells'."
        )
    transform = Affine.translation(x0, y1) * Affine.scale(spacing, -spacing)
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    rows, cols = rows.ravel(), cols.ravel()
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    inside = shapely.contains_xy(shapely.union_all(projected.geometry.to_numpy()), xs, ys)
    if not inside.any():
        raise ConfigError(
            f"No cell centre at spacing {spacing:g} m falls inside {region.source}; use a "
            "smaller spacing."
        )
    rows, cols, xs, ys = rows[inside], cols[inside], xs[inside], ys[inside]
    units = gpd.GeoDataFrame(
        {"unit_id": [f"cell_{r}_{c}" for r, c in zip(rows, cols, strict=True)],
         "row": rows, "col": cols}, geometry=gpd.points_from_xy(xs, ys), crs=crs)
    log.info("Map grid: %d x %d cells of %g m in %s, %d inside the region", n_rows, n_cols,
             spacing, crs, len(units))
    return CellGrid(units, crs, float(spacing), (n_rows, n_cols), transform)
