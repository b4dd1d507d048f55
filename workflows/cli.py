"""The ``eocausal`` command line: thin shells over the stage functions.

Commands load lazily: ``eocausal --help`` and ``eocausal ingest`` import no torch,
scikit-learn or econml. A user's mistake (an :class:`~eocausal.errors.EocausalError`)
prints one message and exits with status 2; Ctrl-C prints one line and exits 130; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any, NoReturn

import click

from eocausal.errors import EocausalError

__all__ = ["cli", "main"]

# name -> (module, attribute, one-line help); a command's module is imported only when used.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("eocausal.workflows.cli_run", "demo",
             "Simulate a world with known effects and run every stage on it."),
    "run": ("eocausal.workflows.cli_run", "run",
            "Run every stage of CONFIG into one run directory (skips what is up to date)."),
    "simulate": ("eocausal.workflows.cli_simulate", "simulate",
                 "Write a synthetic world: scenes, units and the true effects."),
    "ingest": ("eocausal.workflows.cli_ingest", "ingest",
               "Cut a chip around every unit into a Zarr tile store."),
    "encode": ("eocausal.workflows.cli_encode", "encode",
               "Encode every chip of a tile store into a features file."),
    "estimate": ("eocausal.workflows.cli_estimate", "estimate",
                 "Estimate ATE and per-unit effects from units and features."),
    "map": ("eocausal.workflows.cli_map", "map_command",
            "Map a finished run's predicted effects over a region (COG, GPKG, PNG, HTML)."),
    "clusters": ("eocausal.workflows.cli_clusters", "clusters",
                 "Image-cluster heterogeneity model: cluster effects, salience, per-unit effects."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (see ``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            module, attr, _ = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2] if name in COMMANDS else
                 (self.commands[name].get_short_help_str(80)))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages (dask's included).")
def cli(verbose: bool) -> None:
    """Estimate treatment effects from satellite imagery: ingest, encode, estimate, map."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for name in ("distributed", "dask", "tornado", "bokeh", "asyncio"):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eocausal`` console script."""
    from eocausal.workflows.interrupt import (
        forget_caught_interrupt,
        install,
        restore,
        was_interrupted,
    )

    previous = install()
    try:
        code = _main(argv, was_interrupted)
    finally:
        restore(previous)
    if code == 130:
        forget_caught_interrupt()
    return code


def _main(argv: list[str] | None, was_interrupted: Any) -> int:
    try:
        cli.main(args=argv, prog_name="eocausal", standalone_mode=False)
    except EocausalError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:
        # click turns Ctrl-C into Abort; the stage that was running rides on its cause
        cause = exc if isinstance(exc, KeyboardInterrupt) else (exc.__cause__ or exc.__context__)
        return _interrupted(getattr(cause, "stage", None))
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:  # ENOSPC
            return _disk_full(exc)
        if was_interrupted():
            return _interrupted(None)
        lines = str(exc).strip().splitlines()
        click.echo(f"error: cannot read or write '{exc.filename or ''}': "
                   f"{exc.strerror or (lines or [type(exc).__name__])[0]}. Check the path and "
                   "its permissions.", err=True)
        return 2
    except Exception as exc:
        if was_interrupted():  # Ctrl-C surfaced as another error inside compiled code
            return _interrupted(None)
        if argv is not None and ("-v" in argv or "--verbose" in argv) or \
                (argv is None and ("-v" in sys.argv or "--verbose" in sys.argv)):
            raise
        # Not a mistake we foresaw: one line, and the traceback one flag away.
        lines = str(exc).strip().splitlines()
        click.echo(f"error: unexpected {type(exc).__name__}: {(lines or [''])[0][:500]} "
                   "(this looks like a bug in eocausal: rerun with 'eocausal -v ...' for the "
                   "traceback and report it)", err=True)
        return 1
    return 0


def _interrupted(stage: str | None) -> int:
    where = f" during {stage}" if stage else ""
    # zarr's I/O loop, cut short, would log one line per pending task at shutdown
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    click.echo(f"interrupted{where}; rerun the same command to resume", err=True)
    return 130


def _disk_full(exc: OSError) -> int:
    import shutil

    where = exc.filename or "."
    try:
        free = shutil.disk_usage(where if isinstance(where, str) else ".").free
        space = f"{free / 2**20:,.0f} MB free"
    except OSError:
        space = "free space unknown"
    click.echo(f"error: the disk is full writing '{where}' ({space}); free some space and rerun "
               "the same command to resume.", err=True)
    return 2


def console_main() -> NoReturn:
    """The ``eocausal`` console script (and ``python -m``): run the command, then end at once
    (:func:`eocausal.workflows.fast_exit.exit_now`: no 0.25 s interpreter teardown)."""
    from eocausal.workflows.fast_exit import exit_now

    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
