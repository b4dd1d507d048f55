"""Ingest stage: units and imagery (or pre-cut patches) into the tile store.

Needs only unit ids and geometry (and the image key for patches): a list of candidate places
without outcomes ingests like a trial.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eocausal.workflows.context import StageContext

from eocausal.errors import ConfigError
from eocausal.files import atomic_path

__all__ = ["IngestOutput", "ingest_inputs", "ingest_settings", "ingest_stage",
           "start_workers_early"]


@dataclass(frozen=True)
class IngestOutput:
    """What the ingest stage wrote: the store, the skipped-units list, and counts."""

    store: str
    skipped: str
    n_units: int
    n_usable: int
    n_skipped: int
    chunks_written: int
    chunks_total: int

    def record(self) -> dict[str, Any]:
        return asdict(self)


def ingest_settings(config: Any) -> dict[str, Any]:
    """The parts of the config that decide the tile store's contents."""
    u = config.units
    return {"units": {"path": str(u.path), "id": u.id, "lon": u.lon, "lat": u.lat,
                      "crs": u.crs, "group": u.group},
            "imagery": config.imagery.model_dump(mode="json"),
            "patches": None if config.patches is None else config.patches.model_dump(mode="json"),
            "chips": config.chips.model_dump(mode="json")}


def ingest_inputs(ctx: StageContext) -> list[Path]:
    config = ctx.config
    files: list[Path] = [] if config.units.path is None else [Path(config.units.path)]
    if config.patches is not None:
        return [*files, Path(config.patches.path)]
    from eocausal.pipeline.imagery import expand_imagery

    try:
        return [*files, *(Path(p) for p in expand_imagery(config.imagery.paths))]
    except Exception:  # reported by the stage itself, with its own message
        return files


def start_workers_early(mapper: Any, units_path: str | Path, chip_size: int,
                        units_per_chunk: int | None = None) -> None:
    """Start the workers an ingestion will need from the units file's row count alone.

    Workers take about a second to start (the forkserver imports the task modules); started
    on a Parquet footer's count, before the driver imports the config and reads and checks
    every unit, they are up when the first task is (at 100,000 units with two workers the
    driver otherwise cut 1.3 s of chips alone, measured). A CSV's count is estimated from
    its first MiB; other formats wait for the count that reading gives. ``eocausal
    ingest`` calls this before its own imports; the stage calls it again (a no-op once
    started) for ``eocausal run``.
    """
    if getattr(mapper, "prepare", None) is None:
        return
    from eocausal.pipeline.points import count_unit_rows

    rows = count_unit_rows(units_path)
    if rows:
        _prepare_workers(mapper, rows, chip_size, units_per_chunk)


def _prepare_workers(mapper: Any, n_units: int, chip_size: int,
                     units_per_chunk: int | None) -> None:
    """Tell the mapper the fewest tasks this ingestion can have, as soon as units are counted.

    The exact count needs the rasters' bands and the plan; a lower bound (one byte, one band
    a pixel: the most units a chunk can hold) is enough to start a LocalCluster that will
    surely be needed while this process still opens rasters and plans windows.
    """
    prepare = getattr(mapper, "prepare", None)
    if prepare is None or n_units == 0:
        return
    from eocausal.pipeline.sizing import units_per_chunk_for  # no rasterio or zarr yet

    per_task = units_per_chunk or units_per_chunk_for(n_units, chip_size=chip_size, n_bands=1,
                                                      itemsize=1)
    prepare(-(-n_units // per_task))


def ingest_stage(ctx: StageContext) -> IngestOutput:
    """Cut every unit's chip (or look up its patch) into ``paths.tiles``; list the skipped."""
    config, paths = ctx.config, ctx.paths
    if config.patches is None and config.units.path is not None:
        start_workers_early(ctx.mapper, config.units.path, config.chips.size,
                            config.chips.units_per_chunk)
    units = ctx.units() if config.patches is not None else ctx.unit_points()
    ctx.forget("store", "encoder")
    _prepare_workers(ctx.mapper, len(units), config.chips.size, config.chips.units_per_chunk)
    if config.patches is not None:
        from eocausal.pipeline.patches import ingest_patches

        p = config.patches
        result = ingest_patches(units, p.path, paths.tiles, key_column=p.key_column,
                                keys=p.keys, images=p.images, channels_last=p.channels_last,
                                band_names=p.band_names,
                                units_per_chunk=config.chips.units_per_chunk or 1024)
    else:
        if not config.imagery.paths:
            raise ConfigError("The config names no imagery: set 'imagery.paths', 'patches' or "
                              "'simulate'.")
        from eocausal.pipeline.ingest import ingest

        img, chips = config.imagery, config.chips
        result = ingest(units, img.paths, paths.tiles, chip_size=chips.size, bands=img.bands,
                        min_valid_fraction=chips.min_valid_fraction,
                        units_per_chunk=chips.units_per_chunk, crs=img.crs,
                        resolution=img.resolution, resampling=img.resampling, dates=img.dates,
                        polygons=chips.polygons, apply_scale_offset=img.apply_scale_offset,
                        map_partitions=ctx.mapper, compression=chips.compression)
    with atomic_path(paths.skipped) as tmp:
        result.write_skipped(tmp)
    ctx.echo(f"ingested {result.n_usable} of {len(units)} units into {result.store_path} "
             f"({result.n_skipped} skipped, listed in {paths.skipped.name})")
    return IngestOutput(store=str(result.store_path), skipped=str(paths.skipped),
                        n_units=len(units), n_usable=result.n_usable,
                        n_skipped=result.n_skipped, chunks_written=result.n_tasks_run,
                        chunks_total=result.n_tasks_total)
