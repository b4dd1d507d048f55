"""The feature stage: chips from the tile store -> one row of encoder features per unit.

:func:`encode_chips` and :func:`encode_sequences` work on arrays (notebooks, tests);
:func:`encode_store` streams a tile store through a torch DataLoader (workers read and
normalise whole chunks while the model runs) so memory stays flat with the number of units;
:func:`write_features` and :func:`read_features` keep the encoder's settings in the parquet
file itself, so a ``features.parquet`` always says how it was made. Parallel encoding of
large stores on dask workers is in :mod:`models.parts`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from eocausal.models.encoders.rcf import RCF
from eocausal.models.encoders.registry import build_encoder, factory_options, list_encoders
from eocausal.models.encoders.sequence import SequenceEncoder, date_mask
from eocausal.models.features.io import feature_columns, read_features, write_features
from eocausal.models.features.loader import StoreBatches, normalize_chips, store_loader
from eocausal.pipeline.store import TileStore, open_store
from torch import nn

from eocausal.errors import EncoderError, NoUsableUnitsError

__all__ = [
    "encode_chips",
    "encode_range",
    "encode_sequences",
    "encode_store",
    "feature_columns",
    "feature_metadata",
    "log_date_use",
    "normalize_chips",
    "prepare_encoder",
    "read_features",
    "resolve_device",
    "write_features",
]

log = logging.getLogger(__name__)

FIT_BUDGET_BYTES = 256 * 2**20  # float32 chips read to fit empirical rcf filters
FIT_MAX_UNITS = 1024


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch understands it.

    Raises
    ------
    EncoderError
        If a CUDA device is asked for where none is visible, or the name is not a device.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EncoderError(
            f"Unknown device {device!r}. Use 'auto', 'cpu' or 'cuda'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(
            f"Device {device!r} was asked for but no CUDA GPU is visible to torch. "
            "Use device 'auto' or 'cpu'."
        )
    return resolved


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
    _check_bands(encoder, n_bands, "the chips")
    _check_batch_size(batch_size)
    if isinstance(encoder, SequenceEncoder):
        raise EncoderError(
            "A sequence encoder needs chips of shape (N, T, C, H, W): use encode_sequences."
        )
    torch_device = resolve_device(device)
    encoder = encoder.to(torch_device).eval()
    out = np.empty((n, int(encoder.n_features)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            mask = None if valid is None else np.asarray(valid[start:stop])
            x = torch.from_numpy(normalize_chips(chips[start:stop], mean, std, mask))
            out[start:stop] = _forward(encoder, x, None, torch_device)
    return out


def encode_sequences(
    chips: np.ndarray,
    encoder: SequenceEncoder,
    *,
    valid: np.ndarray | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Encode image sequences in batches with a :class:`~models.sequence.SequenceEncoder`.

    Dates without a valid pixel (or below the encoder's ``min_valid_fraction``) are left
    out of the aggregation; see :mod:`models.sequence`.

    Parameters
    ----------
    chips : ndarray of shape (N, T, C, H, W)
    encoder : SequenceEncoder
    valid : ndarray of shape (N, T, H, W) of bool, optional
        Pixel masks; None treats every pixel and date as valid.
    mean, std : ndarray of shape (C,), optional
    batch_size : int, default=256
        Units (not dates) per forward pass.
    device : str, default="auto"

    Returns
    -------
    features : ndarray of shape (N, encoder.n_features), float32
    """
    chips = np.asarray(chips)
    if chips.ndim != 5:
        raise EncoderError(f"chips must have shape (N, T, C, H, W). Got shape {chips.shape}.")
    n, n_dates, n_bands = chips.shape[:3]
    if valid is not None and np.shape(valid) != (*chips.shape[:2], *chips.shape[3:]):
        raise EncoderError(
            f"valid must have shape {(*chips.shape[:2], *chips.shape[3:])}. Got {np.shape(valid)}."
        )
    _check_bands(encoder, n_bands, "the chips")
    _check_batch_size(batch_size)
    torch_device = resolve_device(device)
    encoder = encoder.to(torch_device).eval()
    out = np.empty((n, int(encoder.n_features)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            part = chips[start:stop].reshape(-1, *chips.shape[2:])
            mask = None if valid is None else np.asarray(valid[start:stop])
            flat_mask = None if mask is None else mask.reshape(-1, *chips.shape[3:])
            x = normalize_chips(part, mean, std, flat_mask).reshape(chips[start:stop].shape)
            if mask is None:
                mask = np.ones((stop - start, n_dates, *chips.shape[3:]), dtype=bool)
            out[start:stop] = _forward(encoder, torch.from_numpy(x), torch.from_numpy(mask),
                                       torch_device)
    return out


def _forward(
    encoder: nn.Module, x: torch.Tensor, valid: torch.Tensor | None, device: torch.device
) -> np.ndarray:
    """Run one normalised batch; sequence encoders get a date mask built from ``valid``."""
    x = x.to(device, non_blocking=True)
    if isinstance(encoder, SequenceEncoder):
        mask = date_mask(valid, encoder.min_valid_fraction).to(device)
        y = encoder(x, mask)
    else:
        y = encoder(x)
    expected = (x.shape[0], int(encoder.n_features))
    if tuple(y.shape) != expected:
        raise EncoderError(f"Encoder output has shape {tuple(y.shape)}, expected {expected}.")
    return y.float().cpu().numpy()


def _check_bands(encoder: nn.Module, n_bands: int, what: str) -> None:
    expected = getattr(encoder, "settings", {}).get("options", {}).get("in_channels")
    if expected is not None and expected != n_bands:
        raise EncoderError(
            f"The encoder was built for {expected} bands but {what} have {n_bands}. "
            f"Build it with in_channels={n_bands}."
        )


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EncoderError(f"batch_size must be a positive int. Got {batch_size!r} instead.")


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
    follows space and its first chunks cover only one corner of the area (as a ``sequence``
    base, patches come from every date of those units). A ``sequence`` encoder takes
    ``n_dates`` from the store unless given. Keep the returned module to encode other stores
    (a map grid) with the very same filters.
    """
    if not isinstance(store, TileStore):
        store = open_store(store)
    opts = _encoder_options(encoder_name, options, weights, seed)
    if encoder_name == "sequence" and opts.get("n_dates") is None:
        opts["n_dates"] = store.n_dates
    encoder = build_encoder(encoder_name, store.n_bands, **opts)
    base = encoder.base if isinstance(encoder, SequenceEncoder) else encoder
    if isinstance(base, RCF) and not base.fitted:
        chips, valid = _fit_sample(store, seed, all_dates=isinstance(encoder, SequenceEncoder))
        base.fit_patches(
            normalize_chips(chips, store.band_mean, store.band_std, valid), valid=valid
        )
    return encoder


def open_nonempty_store(store: TileStore | str | os.PathLike[str]) -> TileStore:
    """Open ``store`` (or take it as is) and refuse one with no units: nothing to encode."""
    if not isinstance(store, TileStore):
        store = open_store(store)
    if store.n_units == 0:
        raise NoUsableUnitsError(
            f"Tile store '{store.path}' has no units, so there is nothing to encode. Check "
            "the ingestion's skipped_units.csv and that the units overlap the imagery."
        )
    return store


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
    num_workers: int = 0,
) -> pd.DataFrame:
    """Encode every unit of a tile store, streaming batches, into a features frame.

    Chips are normalised with the store's band mean/std and invalid pixels set to 0. A
    ``sequence`` encoder sees every date of a multi-date store (masked dates left out); any
    other encoder sees the first date only, and a warning says so. For ``rcf`` with
    ``mode="empirical"`` the filters are fitted first (see :func:`prepare_encoder`).

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
        Units per read and per forward pass; a multiple of the store's ``units_per_chunk``
        (256 by default) reads whole chunks only.
    device : str, default="auto"
    seed : int or None, default=0
        Passed to the encoder when it takes a ``seed`` (random init, rcf filters).
    progress : callable(n_done, n_total), optional
        Called after every batch (the CLI draws a progress bar with it).
    mean, std : ndarray of shape (C,), optional
        Band statistics to normalise with; default the store's own. A map grid passes the
        trial store's, so grid chips are scaled exactly like the chips the model saw.
    num_workers : int, default=0
        DataLoader worker processes that read and normalise ahead of the model (0: read in
        this process). Results do not depend on it.

    Returns
    -------
    features : DataFrame
        ``unit_id`` then ``f0000 .. f{D-1}`` (float32), in store order. ``features.attrs
        ["eocausal"]`` holds the metadata to pass to :func:`write_features`.

    Raises
    ------
    NoUsableUnitsError
        If the store has no units.
    EncoderError
        If the encoder is unknown, its options or weights are wrong, or its bands differ
        from the store's.
    """
    store = open_nonempty_store(store)
    if isinstance(encoder, str):
        encoder = prepare_encoder(store, encoder, options=options, weights=weights, seed=seed)
    mean = store.band_mean if mean is None else np.asarray(mean, dtype=np.float64)
    std = store.band_std if std is None else np.asarray(std, dtype=np.float64)
    ids, features = encode_range(
        store, encoder, mean=mean, std=std, batch_size=batch_size, device=device,
        num_workers=num_workers, progress=progress,
    )
    frame = pd.DataFrame(features, columns=feature_columns(encoder.n_features))
    frame.insert(0, "unit_id", ids)
    frame.attrs["eocausal"] = feature_metadata(store, encoder, mean, std)
    return frame


def encode_range(
    store: TileStore,
    encoder: nn.Module,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    log_dates: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode store units ``[start, stop)`` through a DataLoader: the core of the stage.

    :func:`encode_store` runs it over the whole store; each part of
    :func:`models.parts.encode_store_parts` runs it over its own range (with
    ``log_dates=False``: the caller logs which dates are used once, not once per part).

    Returns
    -------
    unit_ids : ndarray of shape (n,), str
    features : ndarray of shape (n, encoder.n_features), float32
    """
    _check_bands(encoder, store.n_bands, f"the chips of tile store '{store.path}'")
    _check_batch_size(batch_size)
    sequence = isinstance(encoder, SequenceEncoder)
    if log_dates:
        log_date_use(store, encoder)
    dataset = StoreBatches(store, batch_size=batch_size, mean=mean, std=std,
                           time_index=None if sequence else 0, start=start, stop=stop)
    torch_device = resolve_device(device)
    encoder = encoder.to(torch_device).eval()
    loader = store_loader(dataset, num_workers=num_workers,
                          pin_memory=torch_device.type == "cuda")
    n_total = dataset.stop - dataset.start
    out = np.empty((n_total, int(encoder.n_features)), dtype=np.float32)
    ids: list[np.ndarray] = []
    done = 0
    with torch.inference_mode():
        for batch in loader:
            rows = len(batch.unit_ids)
            out[done : done + rows] = _forward(encoder, batch.chips, batch.valid, torch_device)
            ids.append(batch.unit_ids)
            done += rows
            if progress is not None:
                progress(done, n_total)
    unit_ids = np.concatenate(ids) if ids else np.array([], dtype=str)
    return unit_ids, out


def log_date_use(store: TileStore, encoder: nn.Module) -> None:
    """Warn when an image encoder meets a multi-date store: it sees the first date only."""
    if not isinstance(encoder, SequenceEncoder) and store.n_dates > 1:
        log.warning(
            "Tile store '%s' has %d dates; encoder '%s' sees the first date (%s) only. Use "
            "the 'sequence' encoder to encode every date.",
            store.path, store.n_dates, encoder.settings.get("name"), store.dates[0],
        )


def feature_metadata(
    store: TileStore, encoder: nn.Module, mean: np.ndarray, std: np.ndarray
) -> dict[str, Any]:
    """What ``features.parquet`` records: encoder settings, store, dates and band stats."""
    sequence = isinstance(encoder, SequenceEncoder)
    return {
        "encoder": encoder.settings,
        "store": str(store.path),
        "n_units": store.n_units,
        "time_index": None if sequence else 0,
        "date": None if sequence else (store.dates[0] if store.dates else None),
        "dates": list(store.dates) if sequence else list(store.dates[:1]),
        "n_dates_in_store": store.n_dates,
        "band_names": store.band_names,
        "band_mean": np.asarray(mean).tolist(),
        "band_std": np.asarray(std).tolist(),
    }


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


def _fit_sample(
    store: TileStore, seed: int | None, *, all_dates: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Chips and masks of whole chunks drawn at random, within a memory budget.

    First date only, or with ``all_dates`` every date as its own chip (N * T, C, H, W).
    """
    if store.n_units == 0:
        raise NoUsableUnitsError(
            f"Tile store '{store.path}' has no units, so empirical rcf filters cannot be "
            "sampled. Check the ingestion's skipped_units.csv."
        )
    per_unit = store.n_bands * store.chip_size**2 * 4 * (store.n_dates if all_dates else 1)
    n_units = max(1, min(FIT_MAX_UNITS, FIT_BUDGET_BYTES // per_unit, store.n_units))
    chunk = store.units_per_chunk
    n_chunks = -(-store.n_units // chunk)
    rng = np.random.default_rng(seed)
    chips, valid, taken = [], [], 0
    for index in rng.permutation(n_chunks):
        start = int(index) * chunk
        stop = min(start + chunk, store.n_units, start + n_units - taken)
        batch = store.read(start, stop)
        if all_dates:
            chips.append(batch.chips.reshape(-1, *batch.chips.shape[2:]))
            valid.append(batch.valid.reshape(-1, *batch.valid.shape[2:]))
        else:
            chips.append(batch.chips[:, 0])
            valid.append(batch.valid[:, 0])
        taken += stop - start
        if taken >= n_units:
            break
    return np.concatenate(chips), np.concatenate(valid)
