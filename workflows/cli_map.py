"""``eocausal map``: predict effects on a grid over the imagery of a finished run.

Reruns the run's own map stage (and its report) from the run directory: the config, the
encoder and the fitted model all come from the files the run wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["map_command"]


@click.command("map")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Grid step in pixels (default: the run's, or half a chip).")
def map_command(run_dir: Path, stride: int | None) -> None:
    """Predict CATE on a grid over the run's imagery; writes RUN_DIR/maps/."""
    from eocausal.workflows.api import open_run
    from eocausal.workflows.runner import run_config

    run = open_run(run_dir)
    config = run.config
    if stride is not None:
        config.map.stride = stride
    config.map.enabled = True
    result = run_config(config, run_dir, force=("map",), progress=sys.stderr.isatty(),
                        echo=lambda message: click.echo(f"  {message}", err=True))
    for name, path in result.outputs.items():
        if name.startswith("maps/"):
            click.echo(f"  {name:<20} {path}")
