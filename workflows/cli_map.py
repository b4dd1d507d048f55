"""``eocausal map RUN_DIR``: predict the effect over a region and write ``RUN_DIR/maps/``.

A thin shell over :func:`eocausal.workflows.maps.build_map` with the keys of the run
config's ``map:`` section as options; registered on the ``eocausal`` group in
:mod:`workflows.cli`, whose ``main`` prints a user's mistake as one message (exit 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from eocausal.errors import InputFileError

__all__ = ["map_command"]


def _units_labels(run_dir: Path) -> tuple[str | None, str | None]:
    """The config's ``units.outcome_label``/``outcome_units``, from the run's manifest."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return None, None
    units = (json.loads(manifest.read_text()).get("config") or {}).get("units") or {}
    return units.get("outcome_label"), units.get("outcome_units")


@click.command("map")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--region", default=None,
              help="Polygon or point file, or a bbox 'minlon,minlat,maxlon,maxlat'; default the "
                   "imagery's extent.")
@click.option("--where", default=None,
              help="OGR SQL filter on the region file, e.g. \"name = 'Uganda'\".")
@click.option("--spacing", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cell side in metres (default: about 200 cells across the region).")
@click.option("--imagery", multiple=True, help="Rasters to chip instead of the run's own.")
@click.option("--aggregate", type=click.Path(path_type=Path), default=None,
              help="Polygons to average the cells over (aggregates.gpkg / .csv).")
@click.option("--by", default=None, help="Name column of the --aggregate polygons.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Places to treat next: a count, or a share (< 1) of the cells.")
@click.option("--max-cells", type=click.IntRange(min=1), default=250_000, show_default=True,
              help="Refuse a grid with more cells than this.")
@click.option("--scheduler", default=None,
              help="'synchronous' (this process), 'processes' (worker processes here; the default picks them for 16+ tasks), 'local' (a dask LocalCluster) or a dask scheduler address.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="LocalCluster worker processes.")
def map_command(run_dir: Path, region: str | None, where: str | None, spacing: float | None,
                imagery: tuple[str, ...], aggregate: Path | None, by: str | None,
                budget: float | None, max_cells: int, scheduler: str | None,
                workers: int | None) -> None:
    """Map the run's predicted effect over a region: COG, GeoParquet, GPKG, PNG, HTML."""
    from eocausal.workflows.cluster import partition_mapper
    from eocausal.workflows.maps import MapSettings, build_map
    from eocausal.workflows.paths import RunPaths

    if not run_dir.is_dir():
        raise InputFileError(f"Run directory '{run_dir}' does not exist. Give the folder that "
                             "'eocausal run' wrote.")
    settings = MapSettings(region=region, where=where, spacing=spacing,
                           imagery=list(imagery) or None, aggregate=aggregate, by=by,
                           budget=budget, max_cells=max_cells)
    label, units = _units_labels(run_dir)
    with partition_mapper(scheduler, workers, desc="map", progress=sys.stderr.isatty()) as mapper:
        result = build_map(RunPaths(run_dir), settings, mapper=mapper,
                           echo=lambda m: click.echo(f"  {m}", err=True),
                           outcome_label=label, outcome_units=units)
    for name, path in result.outputs.items():
        click.echo(f"  {name:<16} {path}")
