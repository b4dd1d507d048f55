"""``eocausal encode``: a tile store in, ``features.parquet`` out, with a progress bar.

A thin shell over :func:`models.features.encode_store` (and
:func:`models.parts.encode_store_parts` with ``--parts``); registered on the ``eocausal``
group in :mod:`workflows.cli`, whose ``main`` prints a user's mistake as one message.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from eocausal.errors import ConfigError

__all__ = ["encode", "parse_options"]


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("n_features=256", "mode=empirical")`` -> ``{"n_features": 256, "mode": "empirical"}``.

    Values are read as YAML scalars or lists (``256``, ``0.5``, ``true``, ``[2, 1, 0]``), so
    numbers arrive as numbers.

    Raises
    ------
    ConfigError
        If a pair has no ``=`` or an empty key, or a key is given twice.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--option must look like KEY=VALUE, for example --option n_features=256. "
                f"Got {pair!r} instead."
            )
        if key in options:
            raise ConfigError(f"--option {key} is given twice. Give each option once.")
        try:
            options[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            options[key] = text
    return options


@click.command("encode")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--encoder", "encoder_name", required=True,
              help="Encoder name: resnet18, resnet34, resnet50, rcf, sequence, or a registered one.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Local state-dict file for a ResNet (never downloaded).")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Encoder option, repeatable: --option n_features=1024 --option mode=empirical; "
                   "for sequence: --option base=rcf --option aggregate=mean_var.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="features.parquet to write.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Units per read and forward pass; a multiple of the store chunk reads whole chunks.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto uses CUDA when present.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds random init and rcf filters.")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader processes reading and normalising ahead of the model.")
@click.option("--parts", type=click.IntRange(min=1), default=None,
              help="Encode in this many parallel parts (see --scheduler), then join them.")
@click.option("--scheduler", default=None,
              help="With --parts: 'processes' (worker processes here), 'local' (a dask "
                   "LocalCluster) or a dask scheduler address; default runs the parts in this "
                   "process.")
def encode(
    store: Path,
    encoder_name: str,
    weights: Path | None,
    option_pairs: tuple[str, ...],
    out: Path,
    batch_size: int,
    device: str,
    seed: int,
    num_workers: int,
    parts: int | None,
    scheduler: str | None,
) -> None:
    """Encode every chip of the tile store STORE into a features file (--out)."""
    from eocausal.models.features.encode import open_nonempty_store, resolve_device
    from eocausal.workflows.config import config_from_dict
    from eocausal.workflows.context import StageContext
    from eocausal.workflows.dag import as_stage
    from eocausal.workflows.paths import RunPaths
    from eocausal.workflows.stages.encode import encode_stage

    options = parse_options(option_pairs)
    config = config_from_dict({
        "seed": seed,
        "encoder": {"name": encoder_name, "options": options,
                    "weights": None if weights is None else str(weights),
                    "batch_size": batch_size, "device": device, "num_workers": num_workers},
    }, source="command line")
    tiles = open_nonempty_store(store)
    resolve_device(device)  # a missing GPU is reported before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(config, RunPaths.for_store(store).with_features(out),
                       progress=sys.stderr.isatty(), with_outcome=False)
    ctx.remember("store", tiles)
    if parts is not None:
        # Built (and fitted, for empirical rcf) before the bar, so a mistake shows no empty bar.
        _encode_parts(tiles, ctx.encoder(), encoder_name, out, batch_size, device, parts,
                      scheduler)
        return
    with as_stage("encode"):
        table = encode_stage(ctx)
    click.echo(f"encoded {table.n_units} units with {encoder_name} -> {table.n_features} "
               f"features: {table.path}")


def _encode_parts(tiles: Any, encoder: Any, encoder_name: str, out: Path, batch_size: int,
                  device: str, parts: int, scheduler: str | None) -> None:
    from eocausal.models.features.parts import encode_store_parts
    from eocausal.workflows.cluster import partition_mapper

    parts_dir = out.parent / f".{out.stem}_parts"
    with partition_mapper(scheduler, None, desc=f"encode ({encoder_name})") as mapper:
        path = encode_store_parts(
            tiles, encoder, None, parts_dir, parts, mapper, out=out, batch_size=batch_size,
            device=device,
            torch_threads=1 if scheduler is not None else None,
        )
    with contextlib.suppress(OSError):
        parts_dir.rmdir()  # empty once the parts are joined
    click.echo(f"encoded {tiles.n_units} units with {encoder_name} in {parts} parts: {path}")
