"""The feature stage: chips from the tile store -> one row of encoder features per unit.

:func:`encode_chips` works on arrays (notebooks, tests); :func:`encode_store` streams a tile
store batch by batch so memory stays flat with the number of units; :func:`write_features`
and :func:`read_features` keep the encoder's settings in the parquet file itself, so a
``features.parquet`` always says how it was made.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from models.encoders import build_encoder, factory_options, list_encoders
from models.rcf import RCF
from pipeline.errors import EncoderError, InputFileError
from pipeline.store import TileStore, open_store

__all__ = [
    "encode_chips",
    "encode_store",
    "feature_columns",
    "prepare_encoder",
    "read_features",
    "write_features",
]

log = logging.getLogger(__name__)

METADATA_KEY = b"eocausal"
FIT_BUDGET_BYTES = 256 * 2**20  # float32 chips read to fit empirical rcf filters
FIT_MAX_UNITS = 1024


def feature_columns(n_features: int) -> list[str]:
    """Column names ``f0000 .. f{D-1}``, zero-padded so they sort in order."""
    width = max(4, len(str(n_features - 1)))
    return [f"f{i:0{width}d}" for i in range(n_features)]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def normalize_chips(
    chips: np.ndarray,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-band ``(x - mean) / std`` as float32; invalid or non-finite pixels become 0.

    Zero is the band mean after standardisation, so missing pixels add no signal. A band
    whose ``std`` is 0 is divided by 1 instead.
    """
    out = np.asarray(chips, dtype=np.float32)
    n_bands = out.shape[1]
    if mean is not None:
        out = out - np.asarray(mean, dtype=np.float32).reshape(1, n_bands, 1, 1)
    if std is not None:
        scale = np.asarray(std, dtype=np.float32).reshape(1, n_bands, 1, 1)
        out = out / np.where(scale == 0, np.float32(1), scale)
    if out is chips:
        out = out.copy()
    if valid is not None:
        out[~np.broadcast_to(valid[:, None].astype(bool), out.shape)] = 0.0
    out[~np.isfinite(out)] = 0.0
    return out


def encode_chips(
    chips: np.ndarray,
    encoder: nn.Module,
    *,
    valid: np.ndarray | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Encode chips in batches: normalise per band, run the encoder, stack the features.

    Parameters
    ----------
    chips : ndarray of shape (N, C, H, W)
        Pixels in any numeric dtype.
    encoder : nn.Module
        From :func:`models.encoders.build_encoder`; moved to ``device`` (in place).
    valid : ndarray of shape (N, H, W) of bool, optional
        Pixels set to 0 after normalisation where False (no data).
    mean, std : ndarray of shape (C,), optional
        Band statistics (the store's ``band_mean``/``band_std``); None skips that step.
    batch_size : int, default=256
        Chips per forward pass; results do not depend on it.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available.

    Returns
    -------
    features : ndarray of shape (N, encoder.n_features), float32

    Raises
    ------
    EncoderError
        If shapes disagree (bands vs ``mean``/``std``/encoder) or the encoder's output
        is not (B, n_features).
    """
    chips = np.asarray(chips)
    if chips.ndim != 4:
        raise EncoderError(f"chips must have shape (N, C, H, W). Got shape {chips.shape}.")
    n, n_bands = chips.shape[:2]
    for name, stat in (("mean", mean), ("std", std)):
        if stat is not None and np.size(stat) != n_bands:
            raise EncoderError(f"{name} has {np.size(stat)} values for {n_bands} bands.")
    if valid is not None and np.shape(valid) != (n, *chips.shape[2:]):
        raise EncoderError(f"valid must have shape {(n, *chips.shape[2:])}. Got {np.shape(valid)}.")
    expected = getattr(encoder, "settings", {}).get("options", {}).get("in_channels")
    if expected is not None and expected != n_bands:
        raise EncoderError(
            f"The encoder was built for {expected} bands but the chips have {n_bands}. "
            f"Build it with in_channels={n_bands}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EncoderError(f"batch_size must be a positive int. Got {batch_size!r} instead.")
    n_features = int(encoder.n_features)
    torch_device = resolve_device(device)
    encoder = encoder.to(torch_device).eval()
    out = np.empty((n, n_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            mask = None if valid is None else np.asarray(valid[start:stop])
            x = normalize_chips(chips[start:stop], mean, std, mask)
            y = encoder(torch.from_numpy(x).to(torch_device))
            if tuple(y.shape) != (stop - start, n_features):
                raise EncoderError(
                    f"Encoder output has shape {tuple(y.shape)}, expected "
                    f"{(stop - start, n_features)}."
                )
            out[start:stop] = y.float().cpu().numpy()
    return out


def prepare_encoder(
    store: TileStore | str | os.PathLike[str],
    encoder_name: str,
    *,
    options: Mapping[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    seed: int | None = 0,
) -> nn.Module:
    """Build a registered encoder for a store's bands and fit it where it learns from data.

    For ``rcf`` with ``mode="empirical"`` the filters are whitened patches of up to 1,024
    units from whole chunks chosen at random (with ``seed``) over the store, since store order
    follows space and its first chunks cover only one corner of the area. Keep the returned
    module to encode other stores (a map grid) with the very same filters.
    """
    if not isinstance(store, TileStore):
        store = open_store(store)
    opts = _encoder_options(encoder_name, options, weights, seed)
    encoder = build_encoder(encoder_name, store.n_bands, **opts)
    if isinstance(encoder, RCF) and not encoder.fitted:
        chips, valid = _fit_sample(store, seed)
        encoder.fit_patches(
            normalize_chips(chips, store.band_mean, store.band_std, valid), valid=valid
        )
    return encoder


def encode_store(
    store: TileStore | str | os.PathLike[str],
    encoder: str | nn.Module,
    *,
    options: Mapping[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    seed: int | None = 0,
    progress: Callable[[int, int], None] | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> pd.DataFrame:
    """Encode every unit of a tile store, streaming batches, into a features frame.

    Chips are normalised with the store's band mean/std and invalid pixels set to 0. Stores
    with several dates (T > 1) are encoded from their first date only for now; a sequence
    encoder comes later. For ``rcf`` with ``mode="empirical"`` the filters are fitted first
    on up to 1,024 units from whole chunks chosen at random (with ``seed``) over the store,
    since store order follows space and its first chunks cover only one corner of the area.

    Parameters
    ----------
    store : TileStore or path
        An open store or its path.
    encoder : str or nn.Module
        A name from :func:`models.encoders.list_encoders` (built with
        :func:`prepare_encoder`), or an encoder already built, for example the one that
        encoded the trial's units when a map grid is encoded.
    options : dict, optional
        Encoder options, for example ``{"n_features": 1024}``.
    weights : path, optional
        A weights file for encoders that take one (ResNets).
    batch_size : int, default=256
        Units per read and per forward pass.
    device : str, default="auto"
    seed : int or None, default=0
        Passed to the encoder when it takes a ``seed`` (random init, rcf filters).
    progress : callable(n_done, n_total), optional
        Called after every batch (the CLI draws a progress bar with it).
    mean, std : ndarray of shape (C,), optional
        Band statistics to normalise with; default the store's own. A map grid passes the
        trial store's, so grid chips are scaled exactly like the chips the model saw.

    Returns
    -------
    features : DataFrame
        ``unit_id`` then ``f0000 .. f{D-1}`` (float32), in store order. ``features.attrs
        ["eocausal"]`` holds the metadata to pass to :func:`write_features`.
    """
    if not isinstance(store, TileStore):
        store = open_store(store)
    if isinstance(encoder, str):
        encoder = prepare_encoder(store, encoder, options=options, weights=weights, seed=seed)
    mean = store.band_mean if mean is None else np.asarray(mean, dtype=np.float64)
    std = store.band_std if std is None else np.asarray(std, dtype=np.float64)
    if store.n_dates > 1:
        log.warning(
            "Tile store '%s' has %d dates; encoding the first date (%s) only.",
            store.path,
            store.n_dates,
            store.dates[0],
        )
    n_total = store.n_units
    parts: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    done = 0
    for batch in store.iter_batches(batch_size):
        parts.append(
            encode_chips(
                batch.chips[:, 0],
                encoder,
                valid=batch.valid[:, 0],
                mean=mean,
                std=std,
                batch_size=batch_size,
                device=device,
            )
        )
        ids.append(batch.unit_ids)
        done += len(batch.unit_ids)
        if progress is not None:
            progress(done, n_total)
    features = np.concatenate(parts) if parts else np.empty((0, encoder.n_features), np.float32)
    frame = pd.DataFrame(features, columns=feature_columns(encoder.n_features))
    frame.insert(0, "unit_id", np.concatenate(ids) if ids else np.array([], dtype=str))
    frame.attrs["eocausal"] = {
        "encoder": encoder.settings,
        "store": str(store.path),
        "n_units": n_total,
        "time_index": 0,
        "date": store.dates[0] if store.dates else None,
        "n_dates_in_store": store.n_dates,
        "band_names": store.band_names,
        "band_mean": np.asarray(mean).tolist(),
        "band_std": np.asarray(std).tolist(),
    }
    return frame


def _encoder_options(
    name: str, options: Mapping[str, Any] | None, weights: Any, seed: int | None
) -> dict[str, Any]:
    """Merge ``weights``/``seed`` into ``options``; refuse contradicting duplicates."""
    opts = dict(options or {})
    for key, value in (("weights", weights), ("seed", seed)):
        if key in opts and value is not None and opts[key] != value:
            raise EncoderError(
                f"'{key}' is given both as an argument ({value!r}) and in options "
                f"({opts[key]!r}). Give it once."
            )
    if weights is not None:
        opts["weights"] = str(weights)
    accepted = factory_options(name) if name in list_encoders() else None
    if "seed" not in opts and (accepted is None or "seed" in accepted):
        opts["seed"] = seed
    return opts


def _fit_sample(store: TileStore, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First-date chips and masks of whole chunks drawn at random, within a memory budget."""
    if store.n_units == 0:
        raise EncoderError(
            f"Tile store '{store.path}' has no units, so empirical rcf filters cannot be "
            "sampled. Check the ingestion's skipped_units.csv."
        )
    per_unit = store.n_bands * store.chip_size**2 * 4
    n_units = max(1, min(FIT_MAX_UNITS, FIT_BUDGET_BYTES // per_unit, store.n_units))
    chunk = store.units_per_chunk
    n_chunks = -(-store.n_units // chunk)
    rng = np.random.default_rng(seed)
    chips, valid, taken = [], [], 0
    for index in rng.permutation(n_chunks):
        start = int(index) * chunk
        stop = min(start + chunk, store.n_units, start + n_units - taken)
        batch = store.read(start, stop)
        chips.append(batch.chips[:, 0])
        valid.append(batch.valid[:, 0])
        taken += stop - start
        if taken >= n_units:
            break
    return np.concatenate(chips), np.concatenate(valid)


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
