"""Ingestion: units + rasters -> tile store, with every unit that got no chip accounted for.

Units are sorted along a Hilbert curve so that each partition reads nearby windows, then cut
into partitions of whole store chunks. A partition is a plain function of picklable inputs
(paths, centres, a store path) that opens its own rasters and writes its own region, so it
runs the same in this process or on a dask worker (pass ``map_partitions=client.map``-like
callables from the workflows layer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio

from pipeline.chips import ChipGrid, chip_window, read_chip, window_overlap_fraction
from pipeline.errors import ConfigError, NoUsableUnitsError
from pipeline.imagery import RasterSource, describe_raster, expand_imagery, resolve_bands
from pipeline.store import TileStore, consolidate, create_store, open_store

__all__ = ["IngestResult", "PartitionTask", "ingest", "ingest_partition", "unit_centres"]

log = logging.getLogger(__name__)

GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


@dataclass(frozen=True)
class PartitionTask:
    """Everything one worker needs to fill store rows ``[start, start + len(centres))``."""

    store_path: str
    start: int
    centres: np.ndarray  # (B, 2) map x, y in the rasters' CRS
    paths: tuple[str, ...]  # one raster per date
    indexes: tuple[int, ...]
    chip_size: int


@dataclass
class IngestResult:
    """What ingestion produced: the store and the units it could not use, with reasons."""

    store_path: Path
    n_units: int
    n_usable: int
    skipped: pd.DataFrame = field(repr=False)

    @property
    def store(self) -> TileStore:
        return open_store(self.store_path)


def unit_centres(units: gpd.GeoDataFrame, crs: str) -> np.ndarray:
    """Chip centres (N, 2) in ``crs``: points as given, polygons by their centroid."""
    projected = units.geometry.to_crs(crs)
    points = projected.where(projected.geom_type == "Point", projected.centroid)
    return np.column_stack([points.x.to_numpy(), points.y.to_numpy()])


def ingest_partition(task: PartitionTask) -> np.ndarray:
    """Read every chip of one partition and write it to the store.

    Returns the valid-pixel fraction per unit and date, shape (B, T): a small result, as
    dask tasks should return.
    """
    store = open_store(task.store_path)
    n, n_dates, size = len(task.centres), len(task.paths), task.chip_size
    chips = np.zeros((n, n_dates, len(task.indexes), size, size), dtype=store.chips.dtype)
    valid = np.zeros((n, n_dates, size, size), dtype=bool)
    with rasterio.Env(**GDAL_ENV):
        for t, path in enumerate(task.paths):
            with rasterio.open(path) as src:
                for i, (x, y) in enumerate(task.centres):
                    window = chip_window(src.transform, x, y, size)
                    _, valid[i, t] = read_chip(
                        src, window, indexes=list(task.indexes), out=chips[i, t]
                    )
    store.write_units(task.start, chips, valid)
    return valid.mean(axis=(2, 3))


def _check_same_grid(sources: Sequence[RasterSource]) -> None:
    first = sources[0]
    for other in sources[1:]:
        if (other.crs, other.transform, other.width, other.height) != (
            first.crs, first.transform, first.width, first.height
        ):
            raise ConfigError(
                f"Rasters '{first.path}' and '{other.path}' lie on different grids "
                f"({first.crs}, {first.width}x{first.height} vs {other.crs}, "
                f"{other.width}x{other.height}). A series of dates must share one grid: "
                "warp them to one grid first (gdalwarp -tap) or ingest them separately."
            )


def _hilbert_order(centres: np.ndarray) -> np.ndarray:
    return np.argsort(gpd.GeoSeries(gpd.points_from_xy(*centres.T)).hilbert_distance().to_numpy(),
                      kind="stable")


def ingest(
    units: gpd.GeoDataFrame,
    imagery: Sequence[str | Path],
    out: str | Path,
    *,
    chip_size: int = 32,
    bands: Sequence[int | str] | None = None,
    min_valid_fraction: float = 0.5,
    units_per_chunk: int = 256,
    map_partitions: Callable[[Callable, list[PartitionTask]], Iterable[np.ndarray]] | None = None,
) -> IngestResult:
    """Cut a chip (or a dated stack of chips) around every unit into a tile store.

    Parameters
    ----------
    units : GeoDataFrame
        Validated units (see :func:`pipeline.units.read_units`), any CRS.
    imagery : sequence of path or glob
        One raster, or one raster per date on a shared grid (dates from the file's
        ``ACQUISITION_DATE`` tag or a YYYYMMDD in its name).
    out : path
        The tile store to create (overwritten).
    chip_size : int, default=32
        Chip side in pixels.
    bands : sequence of int or str, optional
        1-based band indexes or band descriptions; all bands by default.
    min_valid_fraction : float, default=0.5
        Units whose best date has a smaller fraction of valid pixels are skipped.
    units_per_chunk : int, default=256
        Units per store chunk and per task.
    map_partitions : callable, optional
        ``map_partitions(func, tasks)`` returning results in task order; defaults to a
        loop in this process. The workflows layer passes a dask-backed one.

    Returns
    -------
    IngestResult
        With ``skipped`` listing ``unit_id`` and ``reason`` for every unit left out.
    """
    if chip_size < 1:
        raise ConfigError(f"chip_size must be a positive integer. Got {chip_size} instead.")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ConfigError(
            f"min_valid_fraction must be in [0, 1]. Got {min_valid_fraction} instead."
        )
    paths = expand_imagery(imagery)
    sources = [describe_raster(p) for p in paths]
    sources.sort(key=lambda s: (s.date or "", s.path))
    _check_same_grid(sources)
    first = sources[0]
    indexes = resolve_bands(first, bands)
    grid = ChipGrid(first.transform, first.width, first.height)

    centres = unit_centres(units, first.crs)
    ids = units["unit_id"].to_numpy(dtype=str)
    overlap = np.array([
        window_overlap_fraction(chip_window(grid.transform, x, y, chip_size), grid)
        for x, y in centres
    ])
    outside = overlap == 0.0
    skipped = [
        {"unit_id": uid, "reason": f"outside imagery: chip centre ({x:.1f}, {y:.1f}) in "
         f"{first.crs} misses the raster bounds {tuple(round(b, 1) for b in first.bounds)}"}
        for uid, (x, y) in zip(ids[outside], centres[outside], strict=True)
    ]
    keep = np.flatnonzero(~outside)
    if keep.size == 0:
        raise NoUsableUnitsError(
            f"All {len(ids)} units lie outside the imagery {[s.path for s in sources]} "
            f"(bounds {first.bounds} in {first.crs}); units span "
            f"{tuple(np.round(units.to_crs(first.crs).total_bounds, 1))}. Check that the "
            "units file's CRS is right and that the imagery covers the study area."
        )
    keep = keep[_hilbert_order(centres[keep])]

    store = create_store(
        out, unit_ids=ids[keep], n_dates=len(sources),
        band_names=[first.band_names[i - 1] for i in indexes], chip_size=chip_size,
        dtype=first.dtype, crs=first.crs, pixel_size=first.pixel_size,
        dates=[s.date for s in sources], centres=centres[keep],
        sources=[s.as_record() for s in sources], units_per_chunk=units_per_chunk,
        nodata=first.nodata,
    )
    per_chunk = store.units_per_chunk
    tasks = [
        PartitionTask(str(out), start, centres[keep[start:start + per_chunk]],
                      tuple(s.path for s in sources), tuple(indexes), chip_size)
        for start in range(0, keep.size, per_chunk)
    ]
    runner = map_partitions or (lambda func, items: map(func, items))
    fractions = np.concatenate(list(runner(ingest_partition, tasks)), axis=0)

    best = fractions.max(axis=1)
    usable = best >= min_valid_fraction
    _write_unit_arrays(store, fractions, usable)
    for uid, frac in zip(ids[keep][~usable], best[~usable], strict=True):
        skipped.append({
            "unit_id": uid,
            "reason": f"too few valid pixels: {frac:.0%} of the chip has data "
                      f"(min_valid_fraction={min_valid_fraction:g})",
        })
    store.finalize_stats()
    consolidate(store)
    log.info("Ingested %d units (%d usable, %d skipped)", keep.size, usable.sum(), len(skipped))
    if not usable.any():
        raise NoUsableUnitsError(
            f"No unit has a chip with at least {min_valid_fraction:.0%} valid pixels in "
            f"{[s.path for s in sources]}. Lower 'chips.min_valid_fraction' or check nodata."
        )
    return IngestResult(Path(out), int(keep.size), int(usable.sum()),
                        pd.DataFrame(skipped, columns=["unit_id", "reason"]))


def _write_unit_arrays(store: TileStore, fractions: np.ndarray, usable: np.ndarray) -> None:
    group = store.group
    arr = group.create_array("valid_fraction", shape=fractions.shape, dtype="float32",
                             chunks=fractions.shape, dimension_names=["unit", "time"],
                             overwrite=True)
    arr[:] = fractions.astype(np.float32)
    flag = group.create_array("usable", shape=usable.shape, dtype=bool, chunks=usable.shape,
                              dimension_names=["unit"], overwrite=True)
    flag[:] = usable
