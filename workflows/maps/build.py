"""The map stage: region -> grid -> chips -> features -> effects -> exports in ``maps/``.

:func:`build_map` is what the stage layer and ``eocausal map`` call. Memory stays flat in the
number of cells: chips go to a tile store on disk chunk by chunk, each prediction task holds
one chunk, the predictions fill float32 rasters of the grid in place
(:class:`~eocausal.workflows.maps.cells.MapCells`), and every export is made from those
rasters or a slice of cells at a time: no table, id string or point of every cell is held.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from eocausal.models.evaluation.targeting import TargetingResult
from eocausal.pipeline.imagery import describe_raster, expand_imagery, resolve_bands
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.workflows.maps.aggregate import aggregate_grid, read_aggregate_polygons
from eocausal.workflows.maps.cells import MapCells, band_names, write_cells
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
from eocausal.memory import release_freed_memory

__all__ = ["MapResult", "band_names", "build_map", "write_cells"]  # the last two from cells

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapResult:
    """What the map stage wrote and its headline numbers (``summary`` goes to summary.json).

    ``map_cells`` holds the predictions as rasters; :attr:`cells` makes the whole cells
    table from them on demand (for small maps and tests: the stage itself never does).
    """

    outputs: dict[str, Path]
    summary: dict[str, Any]
    map_cells: MapCells = field(repr=False)
    aggregates: gpd.GeoDataFrame | None = field(default=None, repr=False)
    targets: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def cells(self) -> gpd.GeoDataFrame:
        """Every cell as the rows of ``cells.parquet`` (grid columns, points, predictions)."""
        return self.map_cells.frame()


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


def _predict(paths: RunPaths, settings: MapSettings, grid: CellGrid, imagery: list[str],
             run: Any, mapper: Any, echo: Callable[[str], None]) -> MapCells:
    attrs = run.store.attrs
    try:
        # ids and centres alone: the one moment every cell's id exists, freed on return
        result = ingest(grid.unit_points(), imagery, paths.grid_tiles,
                        chip_size=run.store.chip_size, bands=run.band_names,
                        min_valid_fraction=float(attrs.get("min_valid_fraction", 0.5)),
                        units_per_chunk=settings.cells_per_task, map_partitions=mapper,
                        **_ingest_kwargs(attrs))
    except NoUsableUnitsError as exc:
        raise ConfigError(
            f"No cell of the map grid has imagery: {exc} Give a region inside the imagery."
        ) from exc
    echo(f"chipped {result.n_usable} of {len(grid)} cells "
         f"({len(grid) - result.n_usable} without imagery stay nodata)")
    store_path = result.store_path
    del result  # its table of skipped cells
    release_freed_memory()
    effects = gpd.read_file(paths.effects) if paths.effects.exists() else None
    used = None if effects is None else effects["unit_id"].astype(str)
    reference, threshold = support_reference(run, used, settings.support_quantile)
    covariates = covariate_means(paths, run.model, settings.covariates)
    grid_store = open_store(store_path)
    # Each task loads the effect model once (about a second for a forest): one task per worker.
    n_parts = settings.prediction_tasks or (1 if mapper is None else
                                            int(getattr(mapper, "n_workers", 8)))
    n_parts = max(1, min(n_parts, grid_store.n_chunks))
    parts = predict_cells(run, grid_store, paths.map_parts, paths=paths,
                          covariates=covariates, reference=reference,
                          batch_size=settings.batch_size, device=settings.device,
                          n_parts=n_parts, seed=settings.seed, map_partitions=mapper)
    cells = MapCells(grid, threshold)
    for part in parts:
        cells.fill(part)
    shutil.rmtree(paths.map_parts, ignore_errors=True)
    release_freed_memory()
    return cells


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
    cells = _predict(paths, settings, grid, imagery, run, mapper, echo)
    units_label = outcome_units or "outcome units"
    label = f"Effect on {outcome_label or 'the outcome'} ({units_label})"
    title = title or f"Predicted effect of the programme, {region.source}"
    outputs: dict[str, Path] = {}
    bands = None
    if grid.shape is not None:
        bands = cells.rasters()
        tags = {"outcome_label": outcome_label or "", "outcome_units": units_label,
                "support_threshold": f"{cells.threshold:.6g}",
                "support": "1 inside the trial's support, 0 extrapolation"}
        outputs["effect.tif"] = write_effect_cog(
            paths.effect_tif, bands, transform=grid.transform, crs=grid.crs, tags=tags,
            band_tags={n: {"units": units_label if not n.startswith("p_") else "probability"}
                       for n in bands if n != "support"})
    write_cells(cells, paths.cells_parquet, paths.cells_gpkg)
    outputs.update({"cells.parquet": paths.cells_parquet, "cells.gpkg": paths.cells_gpkg})
    aggregates = None
    if polygons is not None:
        aggregates = aggregate_grid(cells, polygons, settings.by,
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
    targets = cells.targets(settings.budget)
    if targets is not None:
        targets.drop(columns="geometry").to_csv(paths.targets_csv, index=False)
        outputs["targets.csv"] = paths.targets_csv
    units = gpd.read_file(paths.effects) if paths.effects.exists() else None
    boundaries = [region.shapes] + ([polygons] if polygons is not None else [])
    places = cells.frame() if bands is None else None  # a list of places: drawn as points
    effect_figure(paths.effect_png, surface=None if bands is None else bands["cate"],
                  extent=grid.extent, crs=grid.crs, title=title, label=label,
                  extrapolated=None if bands is None else bands["support"] == 0,
                  cells=places, units=units, boundaries=boundaries, areas=aggregates)
    outputs["effect.png"] = paths.effect_png
    effect_html(paths.effect_html, title=title, label=label, bands=bands,
                transform=grid.transform, crs=grid.crs, bounds=grid.centre_bounds,
                cells=places, units=units, aggregates=aggregates, targets=targets)
    outputs["effect.html"] = paths.effect_html
    del places, bands
    counts = cells.counts()
    summary = {
        "region": region.source, "crs": grid.crs, "spacing_m": grid.spacing,
        "grid_shape": None if grid.shape is None else list(grid.shape),
        "n_cells": counts["n_cells"], "n_predicted": counts["n_predicted"],
        "n_nodata": counts["n_nodata"], "n_extrapolated": counts["n_extrapolated"],
        "share_extrapolated": counts["share_extrapolated"],
        "support_threshold": cells.threshold,
        "mean_cate": counts["mean_cate"],
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
