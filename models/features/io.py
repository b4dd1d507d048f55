"""``features.parquet``: features with the metadata that says how they were made.

The encoder's name, options and weight checksum, the store and the band statistics are
stored as JSON in the parquet schema metadata, so the file alone tells how its columns were
made. Writes go to a temporary name and are renamed into place, so a crash never leaves a
half-written file where a finished one is expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from eocausal.errors import EncoderError, InputFileError

__all__ = ["METADATA_KEY", "feature_columns", "read_features", "write_features"]

METADATA_KEY = b"eocausal"


def feature_columns(n_features: int) -> list[str]:
    """Column names ``f0000 .. f{D-1}``, zero-padded so they sort in order."""
    width = max(4, len(str(n_features - 1)))
    return [f"f{i:0{width}d}" for i in range(n_features)]


def write_features(
    df: pd.DataFrame, path: str | os.PathLike[str], metadata: Mapping[str, Any]
) -> Path:
    """Write features to parquet with ``metadata`` as JSON under the schema key ``eocausal``.

    The file is written next to ``path`` and renamed into place, so a crash never leaves a
    half-written ``features.parquet`` behind.

    Raises
    ------
    EncoderError
        If ``df`` has no ``unit_id`` column or ``metadata`` is not JSON-serialisable.
    """
    if "unit_id" not in df.columns:
        raise EncoderError(
            "The features frame has no 'unit_id' column; it comes from encode_store."
        )
    try:
        blob = json.dumps(dict(metadata), sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"Feature metadata must be JSON-serialisable: {exc}.") from exc
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: blob})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_features(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a features parquet file and the metadata :func:`write_features` stored in it."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"No features file at '{path}'. Run 'eocausal encode' to create it.")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    frame = table.to_pandas()
    frame.attrs["eocausal"] = metadata
    return frame, metadata
