"""``eocausal ingest``: units and imagery (or patches) into a tile store, nothing else.

Calls the run's own ingest stage, so the store and skipped_units.csv are the files that
``eocausal run`` writes. Needs only unit ids and geometry. Imports no torch or scikit-learn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["ingest", "parse_bands"]


def parse_bands(values: tuple[str, ...]) -> list[int | str] | None:
    """``("B04,B03", "8")`` -> ``["B04", "B03", 8]``: indexes as ints, names as strings."""
    bands: list[int | str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                bands.append(int(item) if item.isdigit() else item)
    return bands or None


@click.command()
@click.option("--units", "units_path", type=click.Path(path_type=Path), required=True,
              help="Units file: GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet, CSV.")
@click.option("--imagery", multiple=True, help="GeoTIFF/COG path or glob; repeat for more.")
@click.option("--patches", type=click.Path(path_type=Path), default=None,
              help="Pre-cut patches (.npz with 'keys' and 'images') instead of --imagery.")
@click.option("--chip-size", type=int, default=32, show_default=True, help="Chip side, pixels.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Tile store to write.")
@click.option("--resolution", type=float, default=None, help="Target pixel size (CRS units).")
@click.option("--crs", default=None, help="Target CRS, e.g. EPSG:32636 (default: the first raster's).")
@click.option("--bands", multiple=True, help="Band indexes or names, comma separated.")
@click.option("--min-valid-fraction", type=float, default=0.5, show_default=True)
@click.option("--id", "id_col", default="unit_id", show_default=True, help="Unit id column.")
@click.option("--group", default=None, help="Group / image-key column (the patch key).")
@click.option("--lon", default="lon", show_default=True, help="Longitude column (tables).")
@click.option("--lat", default="lat", show_default=True, help="Latitude column (tables).")
@click.option("--units-crs", default=None, help="CRS of a table's coordinates (default EPSG:4326).")
@click.option("--scheduler", default=None, help="'synchronous' (this process), 'processes' (worker processes here; the default picks them for 16+ tasks), 'local' (a dask LocalCluster) or a dask scheduler address.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: one per core).")
def ingest(units_path: Path, imagery: tuple[str, ...], patches: Path | None, chip_size: int,
           out: Path, resolution: float | None, crs: str | None, bands: tuple[str, ...],
           min_valid_fraction: float, id_col: str, group: str | None, lon: str, lat: str,
           units_crs: str | None, scheduler: str | None, workers: int | None) -> None:
    """Cut a chip around every unit into a Zarr tile store (resumes an interrupted run)."""
    from eocausal.workflows.cluster import partition_mapper

    # The mapper first: with --scheduler local its workers start now, in the background,
    # while this process imports and plans (a second of CPU here that they overlap).
    with partition_mapper(scheduler, workers, progress=sys.stderr.isatty()) as mapper:
        from eocausal.workflows.stages.ingest import ingest_stage, start_workers_early

        if patches is None:  # before the imports below: workers start while they run
            start_workers_early(mapper, units_path, chip_size)
        from eocausal.workflows.config import config_from_dict
        from eocausal.workflows.context import StageContext
        from eocausal.workflows.dag import as_stage
        from eocausal.workflows.lock import RunLock
        from eocausal.workflows.paths import RunPaths

        config = config_from_dict({
            "units": {"path": str(units_path), "id": id_col, "group": group, "lon": lon,
                      "lat": lat, "crs": units_crs},
            "imagery": {"paths": list(imagery), "bands": parse_bands(bands), "crs": crs,
                        "resolution": resolution},
            "patches": {"path": str(patches), "key_column": "group"} if patches else None,
            "chips": {"size": chip_size, "min_valid_fraction": min_valid_fraction},
            "compute": {"scheduler": scheduler, "workers": workers},
        }, source="command line")
        paths = RunPaths.for_store(out)
        echo = lambda message: click.echo(f"  {message}", err=True)  # noqa: E731
        with as_stage("ingest"), RunLock(paths.lock, paths.lock_info, note=echo):
            result = ingest_stage(StageContext(config, paths, echo=echo, mapper=mapper,
                                               with_outcome=False))
    click.echo(f"{result.n_usable} of {result.n_units} units have a usable chip in {out}")
    click.echo(f"{result.n_skipped} skipped, with reasons, in {result.skipped}")
