"""``eocausal run`` and ``eocausal demo``: every stage of a config into one run directory."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = ["demo", "run"]


def _echo(message: str) -> None:
    click.echo(f"  {message}", err=True)


def _print_outputs(result: Any) -> None:
    summary = result.summary
    if summary.get("ate") is not None:
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


def _run(config: Any, out: Path, force: tuple[str, ...] = ()) -> None:
    from eocausal.workflows.runner import run_config

    click.echo(f"Running '{config.name}' into {out}", err=True)
    result = run_config(config, out, echo=_echo, progress=sys.stderr.isatty(), force=force)
    _print_outputs(result)


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: runs/<config name>).")
@click.option("--scheduler", default=None,
              help="'synchronous' (this process), 'processes' (worker processes here; the default picks them for 16+ tasks), 'local' (a dask LocalCluster) or a dask scheduler address.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: one per core).")
@click.option("--force", multiple=True, metavar="STAGE",
              help="Rerun STAGE and every stage after it, even if up to date (repeatable).")
def run(config_path: Path, out: Path | None, scheduler: str | None, workers: int | None,
        force: tuple[str, ...]) -> None:
    """Run every stage of CONFIG (a YAML file) into one run directory.

    A rerun skips every stage whose settings and inputs are unchanged ("encode: up to date").
    """
    from eocausal.workflows.config import load_config

    config = load_config(config_path)
    if scheduler is not None:
        config.compute.scheduler = scheduler
    if workers is not None:
        config.compute.workers = workers
    _run(config, out or Path("runs") / config.name, force)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run directory.")
@click.option("--n-units", type=int, default=None, help="Units in the simulated world (default 2000).")
@click.option("--design", type=click.Choice(["rct", "observational"]), default=None,
              help="Simulated design (default rct).")
@click.option("--force", multiple=True, metavar="STAGE",
              help="Rerun STAGE and every stage after it (repeatable).")
def demo(out: Path, n_units: int | None, design: str | None, force: tuple[str, ...]) -> None:
    """Simulate a world with known effects and run every stage on it."""
    from eocausal.workflows.config import config_from_dict

    text = resources.files("eocausal.configs").joinpath("demo.yaml").read_text()
    data = yaml.safe_load(text)
    if n_units is not None:
        data["simulate"]["n_units"] = n_units
    if design is not None:
        data["simulate"]["design"] = design
        data["estimator"]["design"] = design
        if design == "observational":
            data["estimator"]["propensity"] = None
    _run(config_from_dict(data, source="demo.yaml"), out, force)
