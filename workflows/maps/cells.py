"""The map's predictions per cell, held as float32 rasters on the grid, and their exports.

Memory is what makes a map of a country at a fine spacing possible on a laptop, so no
per-cell table is ever held: each prediction column is a raster of the grid (a list of
places is a raster of one row), filled part by part in place, 4 bytes a raster cell. Ids,
point geometry and table rows are made a slice at a time (:meth:`MapCells.frames`), and
``cells.parquet``/``cells.gpkg`` are written slice by slice; the COG, the figure, the HTML
layers and the aggregates read the rasters directly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from eocausal.models.evaluation.targeting import budget_count
from eocausal.workflows.maps.region import ALL, SLICE_CELLS, CellGrid, Index

__all__ = ["BANDS", "VALUE_DTYPE", "MapCells", "band_names", "top_cells", "write_cells"]

BANDS = ("cate", "cate_lo", "cate_hi", "support")
VALUE_DTYPE = np.float32  # predictions carry far less precision than float32's 7 digits
INTEGER_COLUMNS = ("cluster",)  # held as float (NaN = none), exported as nullable integers
UNKNOWN, INSIDE, OUTSIDE = -1, 0, 1  # the support flag: no prediction, inside, extrapolated


def band_names(columns: Iterable[str]) -> list[str]:
    """effect.tif's bands: the effect, its interval and support, then the cluster model's
    probabilities ``p_cluster_1..K`` and predictive effect when the run has one.

    ``columns`` are the prediction columns (a DataFrame's column names do too).
    """
    columns = list(columns)
    k = sorted(int(c.rsplit("_", 1)[1]) for c in columns
               if c.startswith("p_cluster_") and c.rsplit("_", 1)[1].isdigit())
    extra = [f"p_cluster_{i}" for i in k]
    if k:
        extra += ["tau_cluster", "tau_cluster_lo", "tau_cluster_hi"]
    return [*BANDS, *extra]


class MapCells:
    """Predictions of every cell of ``grid`` as rasters of ``grid.raster_shape``.

    Parameters
    ----------
    grid : CellGrid
        The cells.
    threshold : float
        Support threshold: a cell whose ``support_distance`` exceeds it is extrapolated
        (decided on the float64 distance, before it is stored as float32).

    Attributes
    ----------
    values : dict of str to ndarray of shape grid.raster_shape
        One float32 raster per prediction column (NaN: no prediction), in the order the
        prediction parts give them.
    support : ndarray of int8, shape grid.raster_shape
        -1 no prediction, 0 inside the trial's support, 1 extrapolated.
    """

    def __init__(self, grid: CellGrid, threshold: float) -> None:
        self.grid = grid
        self.threshold = float(threshold)
        self.values: dict[str, np.ndarray] = {}
        self.support = np.full(grid.raster_shape, UNKNOWN, dtype=np.int8)

    @property
    def columns(self) -> list[str]:
        return list(self.values)

    def fill(self, part: pd.DataFrame) -> None:
        """Write one prediction part (``unit_id``, ``usable`` and value columns) in place.

        Cells that are not usable (no imagery) keep NaN and an unknown support flag.
        """
        usable = part["usable"].to_numpy(dtype=bool)
        rows, cols = self.grid.positions(part["unit_id"].to_numpy()[usable])
        for name in part.columns:
            if name in ("unit_id", "usable"):
                continue
            if name not in self.values:
                self.values[name] = np.full(self.grid.raster_shape, np.nan, dtype=VALUE_DTYPE)
            self.values[name][rows, cols] = part[name].to_numpy(dtype=float)[usable]
        distance = part["support_distance"].to_numpy(dtype=float)[usable]
        flag = np.where(distance > self.threshold, OUTSIDE, INSIDE).astype(np.int8)
        flag[np.isnan(distance)] = UNKNOWN
        self.support[rows, cols] = flag

    def column(self, name: str, index: Index = ALL) -> np.ndarray:
        """One column's values at the cells ``index`` (float32)."""
        return self.values[name][self.grid.rows[index], self.grid.cols[index]]

    def frame(self, index: Index = ALL) -> gpd.GeoDataFrame:
        """The cells at ``index`` as the rows of ``cells.parquet``: grid columns, point
        geometry, predictions (float64; ``cluster`` a nullable integer), ``extrapolated``."""
        frame = self.grid.frame(index)
        for name in self.values:
            values = self.column(name, index).astype(np.float64)
            frame[name] = pd.array(values, dtype="Int64") if name in INTEGER_COLUMNS else values
        flag = self.support[self.grid.rows[index], self.grid.cols[index]]
        extrapolated = pd.array(flag == OUTSIDE, dtype="boolean")
        extrapolated[flag == UNKNOWN] = pd.NA
        frame["extrapolated"] = extrapolated
        return frame

    def frames(self, slice_rows: int = SLICE_CELLS) -> Iterator[gpd.GeoDataFrame]:
        """The cells table a slice at a time, in the grid's row-major order."""
        for start in range(0, len(self.grid), slice_rows):
            yield self.frame(slice(start, start + slice_rows))

    def rasters(self) -> dict[str, np.ndarray]:
        """effect.tif's bands by name (views of the held rasters, ``support`` made here:
        1 inside the trial's support, 0 extrapolated, NaN without a prediction)."""
        bands = {}
        for name in band_names(self.columns):
            if name == "support":
                bands[name] = np.where(np.isfinite(self.values["cate"]),
                                       (self.support == INSIDE).astype(VALUE_DTYPE),
                                       VALUE_DTYPE(np.nan))
            else:
                bands[name] = self.values[name]
        return bands

    def counts(self) -> dict[str, float | int | None]:
        """The map's headline numbers for map.json."""
        cate = self.values["cate"]
        predicted = int(np.isfinite(cate).sum())
        outside = int((self.support == OUTSIDE).sum())
        return {"n_cells": len(self.grid), "n_predicted": predicted,
                "n_nodata": len(self.grid) - predicted, "n_extrapolated": outside,
                "share_extrapolated": outside / predicted if predicted else None,
                "mean_cate": float(np.nanmean(cate, dtype=np.float64)) if predicted else None}

    def targets(self, budget: float | None) -> gpd.GeoDataFrame | None:
        """The ``budget`` best-predicted cells inside the trial's support, best first, with
        ``rank`` and their ``lon``/``lat``; geometry is made for the chosen cells only."""
        if budget is None:
            return None
        eligible = self.support[self.grid.rows, self.grid.cols] == INSIDE
        chosen = top_cells(self.column("cate"), budget, eligible=eligible)
        picked = self.frame(chosen)
        lonlat = picked.to_crs(4326).geometry
        picked.insert(0, "rank", np.arange(1, len(picked) + 1))
        picked["lon"], picked["lat"] = lonlat.x.to_numpy(), lonlat.y.to_numpy()
        return picked


def top_cells(cate: np.ndarray, budget: float, *, eligible: np.ndarray) -> np.ndarray:
    """Positions of the top ``budget`` eligible cells by effect, best first.

    The same choice and order as :func:`eocausal.models.evaluation.targeting.rank_places`
    (ties to the earlier cell), found with a partition: only the cells at or above the
    budget's last value are sorted.
    """
    candidates = np.flatnonzero(np.isfinite(cate) & eligible)
    k = budget_count(budget, candidates.size)
    if k == 0:
        return candidates
    values = cate[candidates]
    if k < candidates.size:
        last = np.partition(values, candidates.size - k)[candidates.size - k]  # k-th largest
        keep = values >= last
        candidates, values = candidates[keep], values[keep]
    return candidates[np.argsort(-values, kind="stable")][:k]


def write_cells(cells: MapCells, parquet: Path, gpkg: Path, *,
                slice_rows: int = SLICE_CELLS) -> None:
    """Write the cells as GeoParquet and GeoPackage slice by slice.

    The GeoParquet ``geo`` metadata comes from geopandas (written for one row, bbox set to
    all cells); each slice is then appended as a row group, so no table of every cell is
    ever made. The GeoPackage is appended to the same way.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    head = io.BytesIO()
    cells.frame(slice(0, 1)).to_parquet(head, index=False)
    schema = pq.read_schema(pa.BufferReader(head.getvalue()))
    geo = json.loads(schema.metadata[b"geo"])
    geo["columns"][geo["primary_column"]]["bbox"] = list(cells.grid.centre_bounds)
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    tmp = parquet.with_name(f".{parquet.name}.tmp")
    gpkg.unlink(missing_ok=True)
    with pq.ParquetWriter(tmp, schema) as writer:
        for i, part in enumerate(cells.frames(slice_rows)):
            writer.write_table(pa.table(part.to_arrow(index=False)).cast(schema))
            part.to_file(gpkg, layer="cells", driver="GPKG", mode="w" if i == 0 else "a")
    tmp.replace(parquet)
