"""What the units readers share and need no pandas for: the column map, the suffixes of
tables, and the checks written on numpy arrays.

Split from :mod:`pipeline.units` so that ingestion's lean reader
(:mod:`pipeline.points`) does not import pandas and geopandas (0.45 s of a command's start,
measured) to read two columns of a Parquet file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eocausal.errors import UnitsError

__all__ = ["CHECK_ROWS", "TABLE_SUFFIXES", "VECTOR_SUFFIXES", "UnitColumns",
           "check_coordinate_bounds", "format_rows"]

TABLE_SUFFIXES = {".csv", ".txt", ".tsv"}
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".zip"}


@dataclass(frozen=True)
class UnitColumns:
    """Which columns of the units file hold what; the config's ``units`` section.

    ``lon``/``lat`` and ``crs`` apply to plain tables; ``crs`` also overrides a vector file
    that lacks one. ``treatment``/``outcome`` may be None for units that are only mapped.
    """

    id: str = "unit_id"
    treatment: str | None = "treatment"
    outcome: str | None = "outcome"
    covariates: tuple[str, ...] = field(default_factory=tuple)
    group: str | None = None
    lon: str = "lon"
    lat: str = "lat"
    crs: str | None = None


def format_rows(index: Any, limit: int = 5) -> str:
    """``"3, 8, 12 and 40 more"``: the first rows (or ids) of a problem, for a message."""
    rows = [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
            for r in list(index)[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(rows) + more


CHECK_ROWS = 65_536  # rows checked at a time: a few MB of temporaries at most


def check_coordinate_bounds(bounds: np.ndarray, crs: Any, unit_ids: np.ndarray,
                            source: str) -> None:
    """Coordinates must lie on the earth: latitude 95 is a typo, not a place outside imagery.

    ``bounds`` is (N, 4) minx, miny, maxx, maxy or (N, 2) x, y of points, in ``crs`` (a
    pyproj CRS). Checked in slices, so a million points need no N-sized temporaries.
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    xs, ys = ([0, 2], [1, 3]) if bounds.shape[1] == 4 else ([0], [1])
    bad = np.zeros(len(bounds), dtype=bool)
    for start in range(0, len(bounds), CHECK_ROWS):
        part = bounds[start:start + CHECK_ROWS]
        if crs.is_geographic:
            lon, lat = part[:, xs], part[:, ys]
            ok = (np.isfinite(part).all(axis=1) & (np.abs(lat) <= 90).all(axis=1)
                  & (lon >= -180).all(axis=1) & (lon <= 360).all(axis=1))
        else:  # projected: finite and within the 40,000 km an earth-sized grid can span
            ok = np.isfinite(part).all(axis=1) & (np.abs(part) < 4e7).all(axis=1)
        bad[start:start + CHECK_ROWS] = ~ok
    if crs.is_geographic:
        what = "longitude in [-180, 360] and latitude in [-90, 90]"
    else:
        what = f"finite {crs.to_string()} coordinates within 40,000 km of its origin"
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UnitsError(
            f"Units file '{source}' has invalid coordinates in rows {format_rows(rows)} (unit "
            f"ids {format_rows(np.asarray(unit_ids)[rows])}): expected {what}. Check "
            "for swapped lon/lat columns or a wrong 'units.crs'.")
