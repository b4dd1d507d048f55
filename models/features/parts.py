"""Encode a large tile store in parallel: each task encodes a range of whole chunks to a part.

The encoder is prepared once here (rcf filters fitted, weights loaded) and saved next to the
parts, so every task encodes with the very same module; a task receives only paths and
ranges, opens the store itself, writes its own parquet part and returns its path and row
count, as dask tasks should (see STYLE.md). The parts are then concatenated, in store order,
into one ``features.parquet`` with the same metadata :func:`models.features.encode_store`
records, one part at a time so memory stays flat. This module never imports dask: the
workflows layer passes a ``map_partitions(func, tasks)`` callable, as for ingestion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from eocausal.models.features.encode import (
    encode_range,
    feature_metadata,
    log_date_use,
    open_nonempty_store,
    prepare_encoder,
)
from eocausal.models.features.io import METADATA_KEY, feature_columns
from eocausal.pipeline.store import TileStore, open_store
from torch import nn

from eocausal.errors import EncoderError

__all__ = ["PartTask", "encode_part", "encode_store_parts", "load_part_encoder", "plan_parts"]

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"


@dataclass(frozen=True)
class PartTask:
    """Everything one worker needs to encode store units ``[start, stop)`` to ``part_path``."""

    store_path: str
    start: int
    stop: int
    encoder_path: str
    part_path: str
    batch_size: int
    device: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torch_threads: int | None = None
    encoder_sha256: str = ""


def _sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_part_encoder(task: PartTask) -> nn.Module:
    """The pickled encoder of this call, after checking it is the very file the call wrote.

    ``torch.load(weights_only=False)`` runs code from the file, so it is refused unless the
    file's checksum equals the one :func:`encode_store_parts` recorded when it wrote it.
    """
    if not task.encoder_sha256 or _sha256(task.encoder_path) != task.encoder_sha256:
        raise EncoderError(
            f"Refusing to load '{task.encoder_path}': it is not the encoder file this encoding "
            "wrote (its checksum differs). Run the encoding again; do not reuse part folders."
        )
    return torch.load(task.encoder_path, map_location="cpu", weights_only=False)


def plan_parts(n_units: int, units_per_chunk: int, n_parts: int) -> list[tuple[int, int]]:
    """Split ``n_units`` into at most ``n_parts`` ranges of whole chunks, in store order.

    Raises
    ------
    EncoderError
        If ``n_parts`` is not a positive int.
    """
    if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts < 1:
        raise EncoderError(f"n_parts must be a positive int. Got {n_parts!r} instead.")
    n_chunks = -(-n_units // units_per_chunk)
    groups = np.array_split(np.arange(n_chunks), min(n_parts, max(n_chunks, 1)))
    return [
        (int(g[0]) * units_per_chunk, min(n_units, (int(g[-1]) + 1) * units_per_chunk))
        for g in groups
        if len(g)
    ]


def encode_part(task: PartTask) -> tuple[str, int]:
    """Encode one range of a store into its own parquet part; return (part path, n rows).

    Runs in this process or on a dask worker alike. The encoder file is one this module
    wrote in the same call (a pickled module), loaded only after its checksum is verified.
    """
    if task.torch_threads is not None:
        torch.set_num_threads(task.torch_threads)  # one worker process per core: no oversubscription
    store = open_store(task.store_path)
    encoder = load_part_encoder(task)
    ids, features = encode_range(
        store, encoder, mean=np.asarray(task.mean), std=np.asarray(task.std),
        start=task.start, stop=task.stop, batch_size=task.batch_size, device=task.device,
        log_dates=False,
    )
    frame = pd.DataFrame(features, columns=feature_columns(features.shape[1]))
    frame.insert(0, "unit_id", ids)
    tmp = Path(task.part_path).with_name(f".{Path(task.part_path).name}.tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, task.part_path)
    return task.part_path, len(frame)


def encode_store_parts(
    store: TileStore | str | os.PathLike[str],
    encoder_name: str | nn.Module,
    options: Mapping[str, Any] | None = None,
    parts_dir: str | os.PathLike[str] = "feature_parts",
    n_parts: int = 8,
    map_partitions: Callable[[Callable, list[PartTask]], Iterable[tuple[str, int]]] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    seed: int | None = 0,
    batch_size: int = 256,
    device: str = "auto",
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    torch_threads: int | None = None,
    keep_parts: bool = False,
) -> Path:
    """Encode a store in ``n_parts`` parallel tasks, then join the parts into one parquet file.

    Parameters
    ----------
    store : TileStore or path
    encoder_name : str or nn.Module
        A registered encoder (prepared here, as :func:`models.features.prepare_encoder`
        does) or an encoder already built.
    options : dict, optional
        Encoder options.
    parts_dir : path, default="feature_parts"
        Folder for the encoder file and the parts (created).
    n_parts : int, default=8
        Tasks; each gets whole chunks, so there are at most as many as chunks.
    map_partitions : callable, optional
        ``map_partitions(func, tasks)`` returning results in task order; a loop in this
        process by default. The workflows layer passes a dask-backed one.
    out : path, optional
        The joined file; default ``parts_dir / "features.parquet"``.
    weights, seed, batch_size, device, mean, std
        As for :func:`models.features.encode_store`.
    torch_threads : int, optional
        Torch threads in each task (set it to the cores per worker on a cluster).
    keep_parts : bool, default=False
        Keep the part files after joining them.

    Returns
    -------
    path : Path
        The written ``features.parquet``; its rows and metadata equal what
        ``encode_store`` followed by ``write_features`` gives.
    """
    store = open_nonempty_store(store)
    encoder = (
        prepare_encoder(store, encoder_name, options=options, weights=weights, seed=seed)
        if isinstance(encoder_name, str)
        else encoder_name
    )
    mean = store.band_mean if mean is None else np.asarray(mean, dtype=np.float64)
    std = store.band_std if std is None else np.asarray(std, dtype=np.float64)
    log_date_use(store, encoder)
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    encoder_path = parts_dir / ENCODER_FILE
    torch.save(encoder.cpu(), encoder_path)
    encoder_sha256 = _sha256(encoder_path)
    ranges = plan_parts(store.n_units, store.units_per_chunk, n_parts)
    tasks = [
        PartTask(str(store.path), start, stop, str(encoder_path),
                 str(parts_dir / f"part-{i:05d}.parquet"), batch_size, str(device),
                 tuple(float(v) for v in mean), tuple(float(v) for v in std), torch_threads,
                 encoder_sha256)
        for i, (start, stop) in enumerate(ranges)
    ]
    runner = map_partitions or (lambda func, items: map(func, items))
    results = list(runner(encode_part, tasks))
    metadata = feature_metadata(store, encoder, mean, std)
    path = _join_parts([Path(p) for p, _ in results], Path(out or parts_dir / "features.parquet"),
                       metadata, expected=store.n_units)
    if not keep_parts:
        for part, _ in results:
            Path(part).unlink(missing_ok=True)
        encoder_path.unlink(missing_ok=True)
    log.info("Encoded %d units in %d parts into %s", store.n_units, len(tasks), path)
    return path


def _join_parts(parts: list[Path], out: Path, metadata: Mapping[str, Any], *, expected: int) -> Path:
    """Append parts in order into ``out`` (written under a temporary name, then renamed)."""
    blob = json.dumps(dict(metadata), sort_keys=True, allow_nan=False).encode()
    tmp = out.with_name(f".{out.name}.tmp")
    writer: pq.ParquetWriter | None = None
    n_rows = 0
    try:
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                schema = table.schema.with_metadata({**(table.schema.metadata or {}),
                                                     METADATA_KEY: blob})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            n_rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if n_rows != expected:
        tmp.unlink(missing_ok=True)
        raise EncoderError(
            f"The feature parts in '{parts[0].parent}' hold {n_rows} rows for {expected} "
            "units; a task lost or repeated rows. Run the encoding again."
        )
    os.replace(tmp, out)
    return out
