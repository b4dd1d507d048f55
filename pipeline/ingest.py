"""Ingestion: units + rasters -> tile store, resumable, with every unused unit accounted for.

The driver does the cheap planning in one process: describe every raster (failing early on
a truncated file or a missing CRS, before anything is written), choose the target grid,
and plan the chips (:mod:`pipeline.plan`: which units lie outside all imagery, the rest
sorted along a Hilbert curve, a slice of units at a time). The store is created with the
kept units' ids and centres in that order, and cut into chunk-sized
:class:`~pipeline.partition.PartitionTask`\\ s that carry only their row range. The tasks
run through ``map_partitions`` (a plain loop, or dask from ``workflows``). A rerun with the
same inputs reopens the store and runs only the chunks whose done marker is missing, so a
killed ingestion resumes where it stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from eocausal.pipeline.imagery import (
    RasterSource,
    describe_raster,
    expand_imagery,
    group_by_date,
    resolve_bands,
)
from eocausal.pipeline.partition import (
    DateSource,
    PartitionDone,
    PartitionTask,
    ingest_partition,
    units_per_chunk_for,
)
from eocausal.pipeline.plan import CentresOf, IdsOf, plan_chips
from eocausal.pipeline.points import UnitPoints
from eocausal.pipeline.store import (
    TileStore,
    check_replaceable,
    consolidate,
    create_store,
    open_store,
)
from eocausal.pipeline.target import TargetGrid, make_target_grid, plan_access
from pyproj import CRS, Transformer

from eocausal.errors import ConfigError, NoUsableUnitsError
from eocausal.memory import release_freed_memory

if TYPE_CHECKING:  # pandas and geopandas cost a command 0.45 s to import: not for points
    import geopandas as gpd
    import pandas as pd

__all__ = ["SKIPPED_COLUMNS", "IngestResult", "ingest", "unit_centres"]

SKIPPED_COLUMNS = ("unit_id", "reason")

log = logging.getLogger(__name__)

Mapper = Callable[[Callable[[PartitionTask], Any], list[PartitionTask]], Iterable[Any]]


@dataclass
class IngestResult:
    """What ingestion produced: the store, counts, and the units it could not use.

    ``skipped_records`` holds one ``{"unit_id", "reason"}`` a skipped unit; ``skipped`` is
    the same as a DataFrame, built when asked for, so that a command which only writes the
    list (``write_skipped``) never imports pandas.
    """

    store_path: Path
    n_units: int
    n_usable: int
    skipped_records: list[dict[str, str]] = field(repr=False)
    n_tasks_run: int = 0
    n_tasks_total: int = 0

    @property
    def store(self) -> TileStore:
        return open_store(self.store_path)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped_records)

    @cached_property
    def skipped(self) -> pd.DataFrame:
        """The skipped units, columns ``unit_id`` and ``reason`` (built on first use)."""
        import pandas as pd

        return pd.DataFrame(self.skipped_records, columns=list(SKIPPED_COLUMNS))

    def write_skipped(self, path: str | Path) -> None:
        """The skipped units as CSV, as ``skipped.to_csv(path, index=False)`` writes it."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=SKIPPED_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.skipped_records)


def unit_centres(units: gpd.GeoDataFrame | UnitPoints, crs: str, polygons: str = "centroid"
                 ) -> np.ndarray:
    """Chip centres (N, 2) in ``crs``: points as given; polygons by centroid or bounds centre.

    Points (the common, large case) are reprojected as coordinate arrays with pyproj, the
    transform geopandas' ``to_crs`` applies, without building a new shapely point per unit
    (at a million units that copy alone added ~300 MB to the peak).
    """
    if isinstance(units, UnitPoints):
        return units.centres(crs)
    geoms = units.geometry.to_numpy()
    if (shapely.get_type_id(geoms) == 0).all():
        xy = shapely.get_coordinates(geoms)
        if units.crs is None or CRS.from_user_input(units.crs) == CRS.from_user_input(crs):
            return xy
        transformer = Transformer.from_crs(units.crs, crs, always_xy=True)
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    projected = units.geometry.to_crs(crs)
    if polygons == "bounds":
        b = projected.bounds
        return np.column_stack([(b.minx + b.maxx).to_numpy() / 2, (b.miny + b.maxy).to_numpy() / 2])
    # shapely directly: geopandas would warn about centroids in geographic CRSs.
    return shapely.get_coordinates(shapely.centroid(projected.to_numpy()))


def _unit_columns(units: gpd.GeoDataFrame | UnitPoints, crs: str, polygons: str
                  ) -> tuple[IdsOf, CentresOf]:
    """How the plan reads ids and chip centres by rows. Points are read from the lean arrays
    (reprojected a slice at a time); a GeoDataFrame (polygons, small files) is converted
    once."""
    if isinstance(units, UnitPoints):
        return units.ids, partial(units.centres, crs)
    ids = units["unit_id"].to_numpy(dtype=str)
    centres = unit_centres(units, crs, polygons)
    return ids.__getitem__, centres.__getitem__


def _chip_size_for_bounds(units: gpd.GeoDataFrame, grid: TargetGrid, chip_size: int) -> int:
    """Smallest chip (at least ``chip_size``) covering every polygon's bounding box."""
    b = units.geometry.to_crs(grid.crs).bounds
    extent = np.maximum((b.maxx - b.minx) / grid.resolution[0], (b.maxy - b.miny) / grid.resolution[1])
    return max(chip_size, int(math.ceil(float(extent.max()))) + 1)


def _date_sources(groups, grid: TargetGrid, force_warp: bool,
                  resampling: str | None) -> list[list[DateSource]]:
    dates = []
    for _, sources in groups:
        plans = []
        for source in sources:
            access = plan_access(source, grid, force_warp=force_warp, resampling=resampling)
            width, height = ((source.width, source.height) if access.native
                             else (access.vrt_width, access.vrt_height))
            plans.append(DateSource(access, width, height, source.nodata, source.scales,
                                    source.offsets, source.remote))
        dates.append(plans)
    return dates


def _reusable(out: Path, fingerprint: str, units_per_chunk: int | None) -> TileStore | None:
    """The existing store when it holds these inputs (and the asked-for chunk size, if any)."""
    try:
        store = open_store(out)
    except Exception:
        return None
    if store.attrs.get("fingerprint") != fingerprint:
        return None
    if units_per_chunk is not None and store.units_per_chunk != min(units_per_chunk,
                                                                    max(store.n_units, 1)):
        return None
    return store


def _workers(map_partitions: Mapper | None, n_workers: int | None) -> int:
    """Workers that will run the tasks: given, announced by the mapper, or this process."""
    if n_workers is not None:
        return max(1, int(n_workers))
    return max(1, int(getattr(map_partitions, "n_workers", 1) or 1))


def ingest(
    units: gpd.GeoDataFrame | UnitPoints,
    imagery: Sequence[str | Path],
    out: str | Path,
    *,
    chip_size: int = 32,
    bands: Sequence[int | str] | None = None,
    min_valid_fraction: float = 0.5,
    units_per_chunk: int | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    resampling: str | None = None,
    dates: Sequence[str] | None = None,
    polygons: str = "centroid",
    apply_scale_offset: bool = True,
    resume: bool = True,
    map_partitions: Mapper | None = None,
    n_workers: int | None = None,
    compression: str | None = None,
) -> IngestResult:
    """Cut a chip, or a dated stack of chips, around every unit into a tile store.

    Parameters
    ----------
    units : GeoDataFrame or UnitPoints
        Validated units (:func:`pipeline.units.read_units`), in any CRS; or their ids and
        point coordinates alone (:func:`pipeline.points.read_unit_points`), the lean form
        for millions of points.
    imagery : sequence of path or glob
        GeoTIFF/COG files in any CRSs and pixel sizes. Files of one date form a mosaic (a
        chip that straddles two files is filled from both, first file first); several dates
        (from ``dates``, an ``ACQUISITION_DATE`` tag or a YYYYMMDD in the name) give each
        unit a (T, C, H, W) stack with a validity mask per date.
    out : path
        The tile store. An existing store from the same inputs is resumed, else replaced.
    chip_size : int, default=32
        Chip side in target pixels.
    bands : sequence of int or str, optional
        1-based indexes or band descriptions, taken from the first raster; default all.
    min_valid_fraction : float, default=0.5
        Units whose best date has a smaller fraction of valid pixels are skipped.
    units_per_chunk : int, optional
        Units per store chunk and per task. Default: sized from the chip's bytes and the
        worker count (:func:`pipeline.partition.units_per_chunk_for`, ~8 MiB a chunk);
        a resumed store keeps the chunk size it was created with.
    crs, resolution : optional
        Target grid; default the first raster's own CRS and pixel size. When given, every
        raster is read through a WarpedVRT onto that grid.
    resampling : str, optional
        Resampling for warped reads; default nearest for integers, bilinear for floats.
    dates : sequence of str, optional
        One YYYY-MM-DD date per raster, overriding dates from tags and file names.
    polygons : {"centroid", "bounds"}, default="centroid"
        For polygon units: centre the chip on the centroid, or on the bounding box and widen
        the chip (never resample) until it covers the largest polygon's bounds.
    apply_scale_offset : bool, default=True
        Where a file declares scale/offset, store ``pixel * scale + offset`` as float32.
    resume : bool, default=True
        Reuse finished chunks of an interrupted run with identical inputs.
    map_partitions : callable, optional
        ``map_partitions(func, tasks)`` returning results in task order; default a loop here.
        A mapper with an ``n_workers`` attribute sizes the chunks for that many workers, and
        one with a ``prepare(n_tasks)`` method is told the task count before the store is
        created, so it can start its workers while the driver is still busy.
    n_workers : int, optional
        Workers to size chunks for (overrides the mapper's ``n_workers``).
    compression : {None, "lz4"}, default=None
        Codec of the stored chips (see :func:`pipeline.store.create_store`).

    Returns
    -------
    IngestResult
        ``skipped`` lists ``unit_id`` and ``reason`` for every unit left out.
    """
    if chip_size < 1:
        raise ConfigError(f"chip_size must be a positive integer. Got {chip_size} instead.")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ConfigError(f"min_valid_fraction must be in [0, 1]. Got {min_valid_fraction} instead.")
    if compression not in (None, "none", "lz4"):
        raise ConfigError(f"compression must be None, 'none' or 'lz4'. Got {compression!r}.")
    if polygons not in ("centroid", "bounds"):
        raise ConfigError(f"polygons must be 'centroid' or 'bounds'. Got {polygons!r} instead.")
    sources = [describe_raster(p) for p in expand_imagery(imagery, bands)]
    groups = group_by_date(sources, dates)
    first = sources[0]
    indexes = resolve_bands(first, bands)
    _check_bands(sources, indexes)
    grid = make_target_grid(sources, crs=crs, resolution=resolution)
    _check_chip_size(chip_size, grid, sources)
    warp = crs is not None or resolution is not None
    date_sources = _date_sources(groups, grid, warp, resampling)
    scaled = apply_scale_offset and any(s.has_scale_offset for s in sources)
    dtype = "float32" if scaled else np.result_type(*[s.dtype for s in sources]).name
    if (polygons == "bounds" and not isinstance(units, UnitPoints)
            and not (units.geom_type == "Point").all()):
        chip_size = _chip_size_for_bounds(units, grid, chip_size)

    plan = plan_chips(len(units), *_unit_columns(units, grid.crs, polygons), grid, chip_size,
                      date_sources)
    skipped = _outside_records(plan.ids_of(plan.outside), plan.centres_of(plan.outside), grid,
                               sources)
    if plan.n_kept == 0:
        raise NoUsableUnitsError(
            f"All {len(units)} units lie outside the imagery {[s.path for s in sources][:5]} "
            f"({len(sources)} file(s); first bounds {tuple(round(b, 1) for b in first.bounds)} "
            f"in {first.crs}); the units span "
            f"{_span(units, first.crs)} in that CRS. Check "
            "that the units file's CRS is right and that the imagery covers the study area."
        )
    band_names = [first.band_names[i - 1] for i in indexes]
    fingerprint = plan.fingerprint(
        chip=chip_size, bands=indexes,
        sources=[s.sha256 or s.path for s in sources], grid=[grid.crs, list(grid.transform)[:6]],
        dtype=dtype, warp=warp, resampling=resampling, dates=[d for d, _ in groups],
        compression=compression,
    )
    out = Path(out)
    store = _reusable(out, fingerprint, units_per_chunk) if resume else None
    per_chunk = units_per_chunk or units_per_chunk_for(
        plan.n_kept, chip_size=chip_size, n_bands=len(indexes), n_dates=len(groups),
        itemsize=np.dtype(dtype).itemsize, n_workers=_workers(map_partitions, n_workers))
    prepare = getattr(map_partitions, "prepare", None)
    if callable(prepare):
        prepare(-(-plan.n_kept // (store.units_per_chunk if store else per_chunk)))
    fresh = store is None
    if fresh:
        check_replaceable(out)
        if out.exists():
            shutil.rmtree(out)
        store = create_store(
            out, unit_ids=plan.kept_ids(), n_dates=len(groups), band_names=band_names,
            chip_size=chip_size, dtype=dtype, crs=grid.crs, pixel_size=grid.resolution,
            dates=[d for d, _ in groups], centres=plan.kept_centres(),
            sources=[s.as_record() for s in sources], units_per_chunk=per_chunk,
            nodata=first.nodata, compression=compression,
            extra_attrs={"fingerprint": fingerprint, "transform": list(grid.transform)[:6],
                         "scale_offset_applied": scaled, "polygons": polygons,
                         "resampling": None if not warp else (resampling or "by dtype")},
        )
    # A store made just now has no chunk done (reading every flag costs ~1 ms a chunk).
    done = np.zeros(store.n_chunks, dtype=bool) if fresh else store.done_chunks()
    per_chunk = store.units_per_chunk
    # A task carries its row range, not its windows: it recomputes them from the centres
    # in the store, so the driver (and dask's graph) holds no per-unit task data.
    tasks = [
        PartitionTask(str(out), i, start, min(start + per_chunk, plan.n_kept), chip_size,
                      tuple(tuple(d) for d in date_sources), tuple(indexes), grid, scaled)
        for i, start in enumerate(range(0, plan.n_kept, per_chunk)) if not done[i]
    ]
    if len(tasks) < len(done):
        log.info("Resuming '%s': %d of %d chunks already done", out, len(done) - len(tasks),
                 len(done))
    n_kept = plan.n_kept
    del plan  # the store holds the ids and centres now: tasks run without the plan
    release_freed_memory()
    runner = map_partitions or (lambda func, items: map(func, items))
    finished = list(runner(ingest_partition, tasks))
    summaries = _summaries(store, finished) if len(tasks) == len(done) else None
    return _finish(store, n_kept, skipped, min_valid_fraction, sources, len(tasks), len(done),
                   summaries)


def _summaries(store: TileStore, finished: list[PartitionDone]) -> tuple[np.ndarray, np.ndarray]:
    """The store's ``partition_stats`` and ``valid_fraction``, from the tasks' own results
    (every chunk ran in this call, so they are exactly what the tasks wrote)."""
    stats = np.zeros((store.n_chunks, 4, store.n_bands))
    fractions = np.zeros((store.n_units, store.n_dates), dtype=np.float32)
    for done in finished:
        stats[done.index] = done.summary
        fractions[done.start:done.start + len(done.fractions)] = done.fractions
    return stats, fractions


def _span(units: gpd.GeoDataFrame | UnitPoints, crs: Any) -> tuple[float, ...]:
    """The units' bounds in ``crs``, rounded for a message."""
    if isinstance(units, UnitPoints):
        xy = units.centres(crs)
        bounds = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
    else:
        bounds = units.to_crs(crs).total_bounds
    return tuple(float(b) for b in np.round(bounds, 1))


def _check_chip_size(chip_size: int, grid: TargetGrid, sources: list[RasterSource]) -> None:
    """A chip wider than every raster (on the target grid) can never be mostly valid: say so
    before any work, not after minutes of reading."""
    res = grid.resolution
    res_x, res_y = (res, res) if isinstance(res, int | float) else (res[0], abs(res[-1]))
    widths = [((s.bounds[2] - s.bounds[0]) / res_x, (s.bounds[3] - s.bounds[1]) / res_y)
              for s in sources if s.bounds is not None and str(s.crs) == str(grid.crs)]
    if widths and all(chip_size > min(w, h) for w, h in widths):
        w, h = max(widths, key=lambda wh: min(wh))
        raise ConfigError(
            f"Chip size {chip_size} px is larger than every raster ({sources[0].path}: about "
            f"{w:.0f} x {h:.0f} px on the target grid); choose 'chips.size' (--chip-size) of at "
            f"most {int(min(w, h))} px.")


def _check_bands(sources: list[RasterSource], indexes: list[int]) -> None:
    needed = max(indexes)
    short = [s.path for s in sources if s.count < needed]
    if short:
        raise ConfigError(
            f"Rasters {short[:3]} have fewer than {needed} bands, but band {needed} was "
            f"selected from '{sources[0].path}'. Select bands every raster has."
        )


def _outside_records(ids: np.ndarray, centres: np.ndarray, grid: TargetGrid,
                     sources: list[RasterSource]) -> list[dict[str, str]]:
    where = "the raster" if len(sources) == 1 else f"any of the {len(sources)} rasters"
    return [{"unit_id": uid, "reason": f"outside imagery: chip centre ({x:.1f}, {y:.1f}) in "
             f"{grid.crs} misses {where}"} for uid, (x, y) in zip(ids, centres, strict=True)]


def _finish(store: TileStore, n_units: int, skipped: list[dict[str, str]],
            min_valid_fraction: float, sources: list[RasterSource], n_run: int,
            n_total: int, summaries: tuple[np.ndarray, np.ndarray] | None = None
            ) -> IngestResult:
    """Flag usable units, record band statistics, and list low-validity units.

    ``summaries``: the chunks' stats and valid fractions when every chunk ran now (else they
    are read from the store, where a resumed run's earlier chunks left them)."""
    if summaries is None:
        summaries = (store.partition_stats(), np.asarray(store.group["valid_fraction"][:]))
    stats, fractions = summaries
    missing = np.flatnonzero(stats[:, 3, 0] != 1.0)
    if missing.size:
        raise RuntimeError(f"Chunks {missing[:5].tolist()} of '{store.path}' were not written.")
    best = fractions.max(axis=1)
    usable = best >= min_valid_fraction
    flag = store.group.create_array("usable", shape=usable.shape, dtype=bool,
                                    chunks=(max(len(usable), 1),), dimension_names=["unit"],
                                    overwrite=True)
    flag[:] = usable
    unusable = np.flatnonzero(~usable)
    for uid, frac in zip(store.ids_at(unusable), best[unusable], strict=True):
        skipped.append({"unit_id": uid, "reason": f"too few valid pixels: {frac:.0%} of the "
                        f"chip has data (min_valid_fraction={min_valid_fraction:g})"})
    store.stats_from_partitions(stats)
    store.group.attrs["min_valid_fraction"] = min_valid_fraction
    consolidate(store)
    log.info("Ingested %d units (%d usable, %d skipped)", n_units, usable.sum(),
             len(skipped))
    if not usable.any():
        raise NoUsableUnitsError(
            f"No unit has a chip with at least {min_valid_fraction:.0%} valid pixels (nodata, NaN "
            f"and pixels outside the rasters are invalid) in "
            f"{[s.path for s in sources][:5]}. Lower 'chips.min_valid_fraction' or check nodata."
        )
    return IngestResult(store.path, n_units, int(usable.sum()), skipped, n_run, n_total)
