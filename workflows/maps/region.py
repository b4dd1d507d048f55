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
import pandas as pd
import pyogrio
import shapely
from affine import Affine
from eocausal.pipeline.imagery import describe_raster, expand_imagery
from eocausal.pipeline.points import UnitPoints
from pyproj import CRS

from eocausal.errors import ConfigError, InputFileError

__all__ = ["SLICE_CELLS", "CellGrid", "Region", "imagery_extent", "lay_grid", "read_region"]

log = logging.getLogger(__name__)

DEFAULT_CELLS_ACROSS = 200
SLICE_CELLS = 8192  # cells made into ids, points or table rows at a time
ALL = slice(None)
Index = slice | np.ndarray


@dataclass(frozen=True)
class Region:
    """The region's shapes in EPSG:4326, and whether they are places (points) or areas."""

    shapes: gpd.GeoDataFrame
    source: str
    places: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.shapes.total_bounds)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class CellGrid:
    """The map's cells as arrays: their grid rows and columns, ids made on demand.

    Cells are the raster cells of ``shape``/``transform`` whose centre lies inside the
    region, in row-major order; a list of places is one raster row (``row`` 0, ``col`` the
    place's index, centres in ``xy``, ``shape`` and ``transform`` None). Nothing here holds
    a string or a shapely object per cell: ids (``cell_{row}_{col}``, ``place_{i}``) and
    point geometry are made per slice (:meth:`ids`, :meth:`frame`), so the grid costs
    8 bytes a cell (16 more for places).
    """

    rows: np.ndarray  # (N,) int32
    cols: np.ndarray  # (N,) int32
    crs: str
    spacing: float
    shape: tuple[int, int] | None
    transform: Affine | None
    xy_places: np.ndarray | None = None  # (N, 2) float64, places only
    names: np.ndarray | None = None  # (N,) the region's ``name`` column, places only

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def raster_shape(self) -> tuple[int, int]:
        """Shape of the per-cell value rasters: the grid's, or one row of places."""
        return self.shape if self.shape is not None else (1, len(self))

    def xy(self, index: Index = ALL) -> np.ndarray:
        """Cell centres (n, 2) in ``crs`` of the cells at ``index`` (a slice or positions)."""
        if self.xy_places is not None:
            return self.xy_places[index]
        rows, cols = self.rows[index], self.cols[index]
        xs, ys = self.transform * (cols + 0.5, rows + 0.5)
        return np.column_stack([xs, ys])

    def ids(self, index: Index = ALL) -> np.ndarray:
        """Ids of the cells at ``index`` as a numpy str array (no Python string per cell)."""
        cols = self.cols[index]
        if self.shape is None:
            return np.strings.add("place_", _digits(cols))
        rows = self.rows[index]
        return np.strings.add(np.strings.add(np.strings.add("cell_", _digits(rows)), "_"),
                              _digits(cols))

    @property
    def id_width(self) -> int:
        """Characters of the longest id."""
        if not len(self):
            return 1
        if self.shape is None:
            return 6 + len(str(int(self.cols.max())))
        return 6 + len(str(int(self.rows.max()))) + len(str(int(self.cols.max())))

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raster (rows, cols) of cells named by ``ids``, parsed from the ids themselves."""
        ids = np.asarray(ids, dtype=str)
        head, _, tail = np.strings.rpartition(ids, "_")
        cols = tail.astype(np.int64)
        if self.shape is None:
            return np.zeros_like(cols), cols
        return np.strings.slice(head, 5, None).astype(np.int64), cols

    def unit_points(self) -> UnitPoints:
        """Every cell's id and centre, the lean units ingestion takes (~40 bytes a cell)."""
        ids = np.empty(len(self), dtype=f"S{self.id_width}")  # ids are ASCII
        for start in range(0, len(self), SLICE_CELLS):
            part = slice(start, start + SLICE_CELLS)
            ids[part] = np.strings.encode(self.ids(part), "ascii")
        return UnitPoints(ids, np.ascontiguousarray(self.xy(), dtype=np.float64),
                          CRS.from_user_input(self.crs))

    def frame(self, index: Index = ALL) -> gpd.GeoDataFrame:
        """The cells at ``index`` as a GeoDataFrame (``unit_id``, ``row``, ``col``, points,
        and ``name`` for places): one slice of the exports, never the whole grid at once."""
        xy = self.xy(index)
        frame = gpd.GeoDataFrame(
            {"unit_id": self.ids(index).astype(object),
             "row": self.rows[index].astype(np.int64),
             "col": self.cols[index].astype(np.int64)},
            geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=self.crs,
            index=pd.RangeIndex(len(self))[index])  # the cells' positions in the grid
        if self.names is not None:
            frame["name"] = self.names[index]
        return frame

    @property
    def units(self) -> gpd.GeoDataFrame:
        """Every cell as a GeoDataFrame: for small grids and tests; the map stage works in
        slices and never builds it."""
        return self.frame()

    @property
    def centre_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the cell centres."""
        if self.xy_places is not None:
            xy = self.xy_places
            return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()),
                    float(xy[:, 1].max()))
        corners = np.array([[self.rows.min(), self.cols.min()], [self.rows.max(), self.cols.max()]])
        xs, ys = self.transform * (corners[:, 1] + 0.5, corners[:, 0] + 0.5)
        return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) for matplotlib's imshow."""
        if self.shape is None or self.transform is None:
            x0, y0, x1, y1 = self.centre_bounds
            return (x0, x1, y0, y1)
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.shape[1], self.shape[0])
        return (left, right, bottom, top)


def _digits(values: np.ndarray) -> np.ndarray:
    """Non-negative integers as decimal strings, in a numpy str array just wide enough."""
    width = len(str(int(values.max()))) if len(values) else 1
    return values.astype(f"U{width}")


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
        pts = np.ascontiguousarray(shapely.get_coordinates(projected.geometry.to_numpy()))
        names = region.shapes["name"].to_numpy() if "name" in region.shapes else None
        return CellGrid(np.zeros(len(pts), np.int32), np.arange(len(pts), dtype=np.int32), crs,
                        float(spacing or 0.0), None, None, xy_places=pts, names=names)
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
    rows, cols = _inside_cells(shapely.union_all(projected.geometry.to_numpy()), transform,
                               n_rows, n_cols)
    if not len(rows):
        raise ConfigError(
            f"No cell centre at spacing {spacing:g} m falls inside {region.source}; use a "
            "smaller spacing."
        )
    log.info("Map grid: %d x %d cells of %g m in %s, %d inside the region", n_rows, n_cols,
             spacing, crs, len(rows))
    return CellGrid(rows, cols, crs, float(spacing), (n_rows, n_cols), transform)


def _inside_cells(area: shapely.Geometry, transform: Affine, n_rows: int, n_cols: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int32, row-major) of the cells whose centre lies inside ``area``,
    tested a block of rows at a time so no array spans the whole rectangle."""
    shapely.prepare(area)
    step = max(1, SLICE_CELLS // n_cols)
    found_rows, found_cols = [], []
    for top in range(0, n_rows, step):
        rows, cols = np.mgrid[top:min(top + step, n_rows), 0:n_cols]
        rows, cols = rows.ravel(), cols.ravel()
        xs, ys = transform * (cols + 0.5, rows + 0.5)
        inside = shapely.contains_xy(area, xs, ys)
        found_rows.append(rows[inside].astype(np.int32))
        found_cols.append(cols[inside].astype(np.int32))
    return np.concatenate(found_rows), np.concatenate(found_cols)
