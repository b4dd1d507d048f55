"""The map stage: region -> grid -> chips -> features -> effects -> exports in ``maps/``.

:func:`build_map` is what the stage layer and ``eocausal map`` call. Memory stays flat in the
number of cells: chips go to a tile store on disk chunk by chunk, each prediction task holds
one chunk, and only five numbers per cell come back.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from eocausal.models.evaluation.targeting import TargetingResult, rank_places
from eocausal.pipeline.imagery import describe_raster, expand_imagery, resolve_bands
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.workflows.maps.aggregate import aggregate_cells, read_aggregate_polygons
from eocausal.workflows.maps.cog import write_effect_cog
from eocausal.workflows.maps.figure import effect_figure
from eocausal.workflows.maps.predict import (
    covariate_means,
    load_run_model,
    predict_cells,
    support_reference,
)
from eocausal.workflows.maps.region import CellGrid, Region, imagery_extent, lay_grid, read_region
from eocausal.workflows.maps.settings import MapSettings
from eocausal.workflows.maps.web import effect_html
from eocausal.workflows.paths import RunPaths

from eocausal.errors import ConfigError, EncoderError, NoUsableUnitsError

__all__ = ["MapResult", "band_names", "build_map", "write_cells"]

log = logging.getLogger(__name__)

BANDS = ("cate", "cate_lo", "cate_hi", "support")


@dataclass(frozen=True)
class MapResult:
    """What the map stage wrote and its headline numbers (``summary`` goes to summary.json)."""

    outputs: dict[str, Path]
    summary: dict[str, Any]
    cells: gpd.GeoDataFrame = field(repr=False)
    aggregates: gpd.GeoDataFrame | None = field(default=None, repr=False)
    targets: pd.DataFrame | None = field(default=None, repr=False)


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return f"{b[0]:.3f} to {b[2]:.3f} E, {b[1]:.3f} to {b[3]:.3f} N"


def _check_overlap(region: Region, imagery: list[str]) -> None:
    img = imagery_extent(imagery)
    if not shapely.box(*img).intersects(shapely.union_all(region.shapes.geometry.to_numpy())):
        raise ConfigError(
            f"The region {region.source} (lon/lat {_fmt_bounds(region.bounds)}) does not overlap "
            f"the imagery {[Path(p).name for p in imagery][:3]} (lon/lat {_fmt_bounds(img)}). "
            "Give a region inside the imagery, or imagery ('--imagery') that covers the region."
        )


def _check_bands(imagery: list[str], band_names: list[str], tiles: Path) -> None:
    first = describe_raster(imagery[0], checksum=False)
    try:
        resolve_bands(first, band_names)
    except ConfigError as exc:
        raise EncoderError(
            f"The map imagery '{first.path}' has bands {list(first.band_names)}, but the run's "
            f"model was trained on bands {band_names} (tile store '{tiles}'). Map with imagery "
            "of the same band set."
        ) from exc


def _ingest_kwargs(store_attrs: dict[str, Any]) -> dict[str, Any]:
    """Chip the cells on the grid the study's chips were cut on (warped there if they were)."""
    if store_attrs.get("resampling") is None:
        return {}
    pixel = store_attrs.get("pixel_size")
    resolution = float(pixel[0] if isinstance(pixel, (list, tuple)) else pixel)
    resampling = store_attrs["resampling"]
    return {"crs": store_attrs["crs"], "resolution": resolution,
            "resampling": None if resampling == "by dtype" else resampling}


def _assemble(units: gpd.GeoDataFrame, parts: Iterable[pd.DataFrame]) -> gpd.GeoDataFrame:
    """Add each part's predictions to the grid's cells in place, one part at a time.

    A merge would copy the whole cells table (geometry included) once more; here each part
    only fills preallocated columns, so the map holds one per-cell table. Cells that got no
    prediction (no imagery) keep NaN.
    """
    index = pd.Index(units["unit_id"])
    columns: dict[str, np.ndarray] = {}
    for part in parts:
        part = part[part["usable"].to_numpy(dtype=bool)]
        positions = index.get_indexer(part["unit_id"])
        for name in part.columns:
            if name in ("unit_id", "usable"):
                continue
            if name not in columns:
                columns[name] = np.full(len(units), np.nan)
            columns[name][positions] = part[name].to_numpy(dtype=float)
    for name, values in columns.items():
        units[name] = values
    return units


def _predict(paths: RunPaths, settings: MapSettings, grid: CellGrid, imagery: list[str],
             run: Any, mapper: Any, echo: Callable[[str], None]) -> tuple[gpd.GeoDataFrame, float]:
    attrs = run.store.attrs
    try:
        result = ingest(grid.units, imagery, paths.grid_tiles, chip_size=run.store.chip_size,
                        bands=run.band_names,
                        min_valid_fraction=float(attrs.get("min_valid_fraction", 0.5)),
                        units_per_chunk=settings.cells_per_task, map_partitions=mapper,
                        **_ingest_kwargs(attrs))
    except NoUsableUnitsError as exc:
        raise ConfigError(
            f"No cell of the map grid has imagery: {exc} Give a region inside the imagery."
        ) from exc
    echo(f"chipped {result.n_usable} of {len(grid.units)} cells "
         f"({len(grid.units) - result.n_usable} without imagery stay nodata)")
    effects = gpd.read_file(paths.effects) if paths.effects.exists() else None
    used = None if effects is None else effects["unit_id"].astype(str)
    reference, threshold = support_reference(run, used, settings.support_quantile)
    covariates = covariate_means(paths, run.model, settings.covariates)
    grid_store = open_store(result.store_path)
    # Each task loads the effect model once (about a second for a forest): one task per worker.
    n_parts = settings.prediction_tasks or (1 if mapper is None else
                                            int(getattr(mapper, "n_workers", 8)))
    n_parts = max(1, min(n_parts, grid_store.n_chunks))
    parts = predict_cells(run, grid_store, paths.map_parts, paths=paths,
                          covariates=covariates, reference=reference,
                          batch_size=settings.batch_size, device=settings.device,
                          n_parts=n_parts, seed=settings.seed, map_partitions=mapper)
    cells = _assemble(grid.units, parts)
    shutil.rmtree(paths.map_parts, ignore_errors=True)
    distance = cells["support_distance"].to_numpy()
    extrapolated = pd.array(distance > threshold, dtype="boolean")
    extrapolated[np.isnan(distance)] = pd.NA
    cells["extrapolated"] = extrapolated
    if "cluster" in cells:
        cells["cluster"] = pd.array(cells["cluster"].to_numpy(), dtype="Int64")
    return gpd.GeoDataFrame(cells, geometry="geometry", crs=grid.crs), threshold


SLICE_ROWS = 16_384  # cells per write: the exports never convert the whole table at once


def write_cells(cells: gpd.GeoDataFrame, parquet: Path, gpkg: Path, *,
                slice_rows: int = SLICE_ROWS) -> None:
    """Write the cells as GeoParquet and GeoPackage slice by slice.

    The GeoParquet ``geo`` metadata comes from geopandas (written for one row, bbox set to
    all cells); each slice is then appended as a row group, so no Arrow copy of the whole
    table is ever made. The GeoPackage is appended to the same way.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    head = io.BytesIO()
    cells.iloc[:1].to_parquet(head, index=False)
    schema = pq.read_schema(pa.BufferReader(head.getvalue()))
    geo = json.loads(schema.metadata[b"geo"])
    geo["columns"][cells.geometry.name]["bbox"] = [float(v) for v in cells.total_bounds]
    metadata = {b"geo": json.dumps(geo).encode()}
    schema = schema.with_metadata(metadata)
    tmp = parquet.with_name(f".{parquet.name}.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(cells), slice_rows):
            part = pa.table(cells.iloc[start:start + slice_rows].to_arrow(index=False))
            writer.write_table(part.cast(schema))
    tmp.replace(parquet)
    gpkg.unlink(missing_ok=True)
    for start in range(0, len(cells), slice_rows):
        cells.iloc[start:start + slice_rows].to_file(gpkg, layer="cells", driver="GPKG",
                                                     mode="w" if start == 0 else "a")


def band_names(cells: pd.DataFrame) -> list[str]:
    """effect.tif's bands: the effect, its interval and support, then the cluster model's
    probabilities ``p_cluster_1..K`` and predictive effect when the run has one."""
    k = sorted(int(c.rsplit("_", 1)[1]) for c in cells.columns
               if c.startswith("p_cluster_") and c.rsplit("_", 1)[1].isdigit())
    extra = [f"p_cluster_{i}" for i in k]
    if k:
        extra += ["tau_cluster", "tau_cluster_lo", "tau_cluster_hi"]
    return [*BANDS, *extra]


def _rasters(cells: gpd.GeoDataFrame, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    rows, cols = cells["row"].to_numpy(), cells["col"].to_numpy()
    bands = {}
    for name in band_names(cells):
        grid = np.full(shape, np.nan, dtype=np.float32)
        if name == "support":
            values = np.where(cells["extrapolated"].astype("boolean").fillna(True), 0.0, 1.0)
            values[~np.isfinite(cells["cate"].to_numpy(dtype=float))] = np.nan
        else:
            values = cells[name].to_numpy(dtype=float)
        grid[rows, cols] = values
        bands[name] = grid
    return bands


def _targets(cells: gpd.GeoDataFrame, budget: float | None) -> gpd.GeoDataFrame | None:
    if budget is None:
        return None
    eligible = ~cells["extrapolated"].astype("boolean").fillna(True).to_numpy(dtype=bool)
    chosen = rank_places(cells["cate"].to_numpy(dtype=float), budget, eligible=eligible)
    picked = cells.iloc[chosen].copy()
    lonlat = picked.to_crs(4326).geometry
    picked.insert(0, "rank", np.arange(1, len(picked) + 1))
    picked["lon"], picked["lat"] = lonlat.x.to_numpy(), lonlat.y.to_numpy()
    return picked


def build_map(paths: RunPaths, settings: MapSettings, *, mapper: Any = None,
              progress: bool = False, echo: Callable[[str], None] = print,
              title: str | None = None, outcome_label: str | None = None,
              outcome_units: str | None = None,
              targeting: TargetingResult | None = None) -> MapResult:
    """Predict the effect over the region and write every map export into ``maps/``.

    Parameters
    ----------
    paths : RunPaths
        A run directory with ``tiles.zarr``, ``features.parquet`` and ``estimator.joblib``.
    settings : MapSettings
        Region, spacing, imagery, aggregation and budget.
    mapper : callable, optional
        ``map_partitions(func, tasks)`` of :func:`eocausal.workflows.cluster.partition_mapper`;
        chipping and prediction run through it (in this process by default).
    title, outcome_label, outcome_units : str, optional
        For the PNG/HTML and the COG's metadata (the config's ``units.outcome_*``).
    targeting : TargetingResult, optional
        The trial's held-out value of the budget rule, recorded in ``map.json``.

    Returns
    -------
    MapResult

    Raises
    ------
    ConfigError
        The region misses the imagery, the spacing gives more than ``max_cells`` cells, or
        the region cannot be read. ``EncoderError``: the run directory mixes encoders or band
        sets, or the map imagery has other bands. ``MissingColumnError``: ``by`` is not a
        column of the aggregate file.
    """
    del progress  # the mapper draws the bars
    run = load_run_model(paths, device=settings.device)
    if settings.imagery:
        imagery = [str(p) for p in expand_imagery(settings.imagery)]
    elif run.store.attrs.get("source_kind") == "patches":
        raise ConfigError(
            f"The run's chips in '{paths.tiles}' are pre-cut patches, which carry no "
            "georeferenced scene to map over. Give rasters with the same bands ('--imagery' "
            "or 'map.imagery')."
        )
    else:
        imagery = [s["path"] for s in run.store.attrs["sources"]]
    _check_bands(imagery, run.band_names, paths.tiles)
    polygons = (read_aggregate_polygons(settings.aggregate, settings.by)
                if settings.aggregate is not None else None)
    region = read_region(settings.region, where=settings.where, imagery=imagery)
    _check_overlap(region, imagery)
    grid = lay_grid(region, settings.spacing, max_cells=settings.max_cells)
    paths.maps.mkdir(parents=True, exist_ok=True)
    cells, threshold = _predict(paths, settings, grid, imagery, run, mapper, echo)
    units_label = outcome_units or "outcome units"
    label = f"Effect on {outcome_label or 'the outcome'} ({units_label})"
    title = title or f"Predicted effect of the programme, {region.source}"
    outputs: dict[str, Path] = {}
    bands = None
    if grid.shape is not None:
        bands = _rasters(cells, grid.shape)
        tags = {"outcome_label": outcome_label or "", "outcome_units": units_label,
                "support_threshold": f"{threshold:.6g}",
                "support": "1 inside the trial's support, 0 extrapolation"}
        outputs["effect.tif"] = write_effect_cog(
            paths.effect_tif, bands, transform=grid.transform, crs=grid.crs, tags=tags,
            band_tags={n: {"units": units_label if not n.startswith("p_") else "probability"}
                       for n in bands if n != "support"})
    write_cells(cells, paths.cells_parquet, paths.cells_gpkg)
    outputs.update({"cells.parquet": paths.cells_parquet, "cells.gpkg": paths.cells_gpkg})
    aggregates = None
    if polygons is not None:
        aggregates = aggregate_cells(cells, polygons, settings.by, shape=grid.shape,
                                     errors=settings.aggregate_errors)
        empty = int((aggregates["n_cells"] == 0).sum())
        aggregates = aggregates[aggregates["n_cells"] > 0].reset_index(drop=True)
        if empty:
            echo(f"{empty} of {len(polygons)} polygons of '{settings.aggregate}' hold no mapped "
                 "cell and are left out of the aggregates")
        aggregates.to_file(paths.aggregates_gpkg, layer="aggregates", driver="GPKG")
        aggregates.drop(columns="geometry").to_csv(paths.aggregates_csv, index=False)
        outputs.update({"aggregates.gpkg": paths.aggregates_gpkg,
                        "aggregates.csv": paths.aggregates_csv})
    targets = _targets(cells, settings.budget)
    if targets is not None:
        targets.drop(columns="geometry").to_csv(paths.targets_csv, index=False)
        outputs["targets.csv"] = paths.targets_csv
    units = gpd.read_file(paths.effects) if paths.effects.exists() else None
    boundaries = [region.shapes] + ([polygons] if polygons is not None else [])
    effect_figure(paths.effect_png, surface=None if bands is None else bands["cate"],
                  extent=grid.extent, crs=grid.crs, title=title, label=label,
                  extrapolated=None if bands is None else bands["support"] == 0,
                  cells=cells if bands is None else None, units=units, boundaries=boundaries,
                  areas=aggregates)
    outputs["effect.png"] = paths.effect_png
    effect_html(paths.effect_html, title=title, label=label, bands=bands,
                transform=grid.transform, crs=grid.crs, cells=cells, units=units,
                aggregates=aggregates, targets=targets)
    outputs["effect.html"] = paths.effect_html
    predicted = np.isfinite(cells["cate"].to_numpy(dtype=float))
    summary = {
        "region": region.source, "crs": grid.crs, "spacing_m": grid.spacing,
        "grid_shape": None if grid.shape is None else list(grid.shape),
        "n_cells": int(len(cells)), "n_predicted": int(predicted.sum()),
        "n_nodata": int((~predicted).sum()),
        "n_extrapolated": int(cells["extrapolated"].fillna(False).astype(bool).sum()),
        "share_extrapolated": float(cells.loc[predicted, "extrapolated"].astype(bool).mean())
        if predicted.any() else None,
        "support_threshold": threshold,
        "mean_cate": float(np.nanmean(cells["cate"])) if predicted.any() else None,
        "outcome_units": units_label,
        "n_clusters": None if run.clusters is None else int(run.clusters.n_clusters),
        "aggregate_errors": settings.aggregate_errors if polygons is not None else None,
        "budget": settings.budget, "n_targets": None if targets is None else int(len(targets)),
        "targeting": None if targeting is None else targeting.summary(),
        "outputs": {k: str(v.relative_to(paths.root)) for k, v in outputs.items()},
    }
    paths.map_summary.write_text(json.dumps(summary, indent=2, default=float))
    echo(f"mapped {summary['n_predicted']} cells ({summary['n_nodata']} nodata, "
         f"{summary['n_extrapolated']} outside the trial's support) -> {paths.maps}")
    return MapResult(outputs, summary, cells, aggregates, targets)
