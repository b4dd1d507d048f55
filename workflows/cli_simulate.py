"""``eocausal simulate``: a synthetic world whose pixels carry known causal structure."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from eocausal.simulator.world import WorldSpec

__all__ = ["simulate"]


def _spec_options(func: Any) -> Any:
    """One option per WorldSpec field, so the command never lags the simulator."""
    for f in reversed(fields(WorldSpec)):
        if f.name in ("crs", "origin", "start_date"):
            kind: Any = str if f.name != "origin" else None
        else:
            kind = type(f.default) if f.default is not None else str
        if kind is None:
            continue
        func = click.option(f"--{f.name.replace('_', '-')}", f.name, type=kind, default=None,
                            help=f"default {f.default!r}")(func)
    return func


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@_spec_options
def simulate(out: Path, **options: Any) -> None:
    """Write a synthetic world: GeoTIFF scene(s), units.gpkg, truth.parquet, truth.json."""
    from eocausal.simulator.simulate import simulate as simulate_world

    world = simulate_world(out, **{k: v for k, v in options.items() if v is not None})
    click.echo(f"true ATE {world.ate:.3f}")
    for path in [*world.scene_paths, world.units_path, world.truth_path, world.truth_json_path,
                 world.truth_surface_path]:
        click.echo(f"  {path}")
