"""The ``eocausal`` command line: thin shells over the stage functions.

A user's mistake (an :class:`~pipeline.errors.EocausalError`) prints one message and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import click
import yaml

from eocausal.errors import EocausalError

__all__ = ["main", "cli"]


def _echo(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Estimate treatment effects from satellite imagery: ingest, encode, estimate, map."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _print_outputs(result: Any) -> None:
    summary = result.summary
    click.echo(f"\nATE {summary['ate']:.3f}  95% CI [{summary['ate_lo']:.3f}, "
               f"{summary['ate_hi']:.3f}]  (n used {summary['n_used']}, "
               f"skipped {summary['n_skipped']})")
    truth = summary.get("truth")
    if truth:
        click.echo(f"truth: ATE {truth['true_ate']:.3f}, error {truth['ate_error']:+.3f}, "
                   f"covered {truth['interval_covers_truth']}, Spearman(CATE) "
                   f"{truth['spearman_cate']:.2f}, root PEHE {truth['root_pehe']:.3f}")
    click.echo("\nOutputs:")
    for name, path in result.outputs.items():
        click.echo(f"  {name:<20} {path}")


def _run(config: Any, out: Path) -> None:
    from eocausal.workflows.runner import run_config

    click.echo(f"Running '{config.name}' into {out}", err=True)
    result = run_config(config, out, echo=_echo, progress=sys.stderr.isatty())
    _print_outputs(result)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: runs/<config name>).")
@click.option("--scheduler", default=None,
              help="'synchronous', 'local' (LocalCluster) or a dask scheduler address.")
@click.option("--workers", type=int, default=None, help="Workers for a LocalCluster.")
def run(config_path: Path, out: Path | None, scheduler: str | None, workers: int | None) -> None:
    """Run every stage of CONFIG (a YAML file) into one run directory."""
    from eocausal.workflows.config import load_config

    config = load_config(config_path)
    if scheduler is not None:
        config.compute.scheduler = scheduler
    if workers is not None:
        config.compute.workers = workers
    _run(config, out or Path("runs") / config.name)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run directory.")
@click.option("--n-units", type=int, default=None, help="Units in the simulated world (default 2000).")
@click.option("--design", type=click.Choice(["rct", "observational"]), default=None,
              help="Simulated design (default rct).")
def demo(out: Path, n_units: int | None, design: str | None) -> None:
    """Simulate a world with known effects and run every stage on it."""
    from eocausal.workflows.config import config_from_dict

    data = yaml.safe_load(resources.files("eocausal.configs").joinpath("demo.yaml").read_text())
    if n_units is not None:
        data["simulate"]["n_units"] = n_units
    if design is not None:
        data["simulate"]["design"] = design
        data["estimator"]["design"] = design
        if design == "observational":
            data["estimator"]["propensity"] = None
    _run(config_from_dict(data, source="demo.yaml"), out)


def _spec_options(func: Any) -> Any:
    from eocausal.simulator.world import WorldSpec

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


@cli.command()
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


def _parse_bands(values: tuple[str, ...]) -> list[int | str] | None:
    bands: list[int | str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                bands.append(int(item) if item.isdigit() else item)
    return bands or None


@cli.command()
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
@click.option("--treatment", default="treatment", show_default=True)
@click.option("--outcome", default="outcome", show_default=True)
@click.option("--group", default=None, help="Group / image-key column.")
@click.option("--lon", default="lon", show_default=True, help="Longitude column (tables).")
@click.option("--lat", default="lat", show_default=True, help="Latitude column (tables).")
@click.option("--units-crs", default=None, help="CRS of a table's coordinates (default EPSG:4326).")
@click.option("--scheduler", default=None, help="'synchronous', 'local' or a scheduler address.")
@click.option("--workers", type=int, default=None, help="Workers for a LocalCluster.")
def ingest(units_path: Path, imagery: tuple[str, ...], patches: Path | None, chip_size: int,
           out: Path, resolution: float | None, crs: str | None, bands: tuple[str, ...],
           min_valid_fraction: float, id_col: str, treatment: str, outcome: str,
           group: str | None, lon: str, lat: str, units_crs: str | None,
           scheduler: str | None, workers: int | None) -> None:
    """Cut a chip around every unit into a Zarr tile store (resumes an interrupted run)."""
    from eocausal.workflows.config import config_from_dict
    from eocausal.workflows.runner import ingest_units

    config = config_from_dict({
        "units": {"path": str(units_path), "id": id_col, "treatment": treatment,
                  "outcome": outcome, "group": group, "lon": lon, "lat": lat, "crs": units_crs},
        "imagery": {"paths": list(imagery), "bands": _parse_bands(bands), "crs": crs,
                    "resolution": resolution},
        "patches": {"path": str(patches), "key_column": "group"} if patches else None,
        "chips": {"size": chip_size, "min_valid_fraction": min_valid_fraction},
        "compute": {"scheduler": scheduler, "workers": workers},
    }, source="command line")
    from eocausal.workflows.cluster import partition_mapper

    with partition_mapper(scheduler, workers, progress=sys.stderr.isatty()) as mapper:
        units, result = ingest_units(config, out, mapper)
    skipped_path = out.parent / "skipped_units.csv"
    result.skipped.to_csv(skipped_path, index=False)
    click.echo(f"{result.n_usable} of {len(units)} units have a usable chip in {out}")
    click.echo(f"{len(result.skipped)} skipped, with reasons, in {skipped_path}")


def _register_stage_commands() -> None:
    from eocausal.workflows.cli_clusters import clusters
    from eocausal.workflows.cli_encode import encode
    from eocausal.workflows.cli_estimate import estimate

    cli.add_command(encode)
    cli.add_command(estimate)
    cli.add_command(clusters)


_register_stage_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eocausal`` console script."""
    try:
        cli.main(args=argv, prog_name="eocausal", standalone_mode=False)
    except EocausalError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
