"""Streaming chips out of a tile store: a torch Dataset of normalised batches, and its loader.

Each item is a run of consecutive units read with one store read, so a batch size that is a
multiple of the store's ``units_per_chunk`` decodes whole chunks only. The Dataset keeps the
store's *path* and opens it lazily in whichever process reads first, so every DataLoader
worker gets its own handle and nothing unpicklable crosses a process boundary. Reading,
decoding and normalising run in the workers while the main process runs the model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from eocausal.pipeline.store import TileStore, open_store
from torch.utils.data import DataLoader, Dataset

from eocausal.errors import EncoderError

__all__ = ["StoreBatch", "StoreBatches", "normalize_chips", "store_loader"]

log = logging.getLogger(__name__)


def normalize_chips(
    chips: np.ndarray,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-band ``(x - mean) / std`` as float32; invalid or non-finite pixels become 0.

    Zero is the band mean after standardisation, so missing pixels add no signal. A band
    whose ``std`` is 0 is divided by 1 instead.

    Parameters
    ----------
    chips : ndarray of shape (N, C, H, W)
    mean, std : ndarray of shape (C,), optional
    valid : ndarray of shape (N, H, W) of bool, optional
    """
    chips = np.asarray(chips)
    n_bands = chips.shape[1]
    # In-place ufuncs: one pass per step and no boolean fancy indexing, since this runs on
    # every batch of the feature stage and competes with the model for the same cores.
    out = np.empty(chips.shape, dtype=np.float32)
    shift = np.float32(0) if mean is None else np.asarray(mean, np.float32).reshape(1, n_bands, 1, 1)
    np.subtract(chips, shift, out=out, dtype=np.float32)
    if std is not None:
        scale = np.asarray(std, dtype=np.float32).reshape(1, n_bands, 1, 1)
        np.divide(out, np.where(scale == 0, np.float32(1), scale), out=out)
    if not np.issubdtype(chips.dtype, np.integer):
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if valid is not None:
        np.copyto(out, np.float32(0), where=~np.asarray(valid, dtype=bool)[:, None])
    return out


@dataclass(frozen=True)
class StoreBatch:
    """One normalised batch: ids, pixels and masks, ready for an encoder.

    ``chips`` is (B, C, H, W) for one date or (B, T, C, H, W) for all dates; ``valid`` is
    the matching pixel mask without the band axis.
    """

    start: int
    unit_ids: np.ndarray
    chips: torch.Tensor
    valid: torch.Tensor

    def pin_memory(self) -> StoreBatch:
        """Page-locked copy, which the DataLoader asks for when ``pin_memory=True``."""
        return StoreBatch(self.start, self.unit_ids, self.chips.pin_memory(),
                          self.valid.pin_memory())


class StoreBatches(Dataset):
    """Consecutive, normalised batches of a tile store, read lazily per process.

    Parameters
    ----------
    store : TileStore or path
        A path is opened on first use in the reading process (each DataLoader worker opens
        its own). An open TileStore is used as is, for reading in this process.
    batch_size : int
        Units per item.
    mean, std : ndarray of shape (C,)
        Band statistics to normalise with.
    time_index : int or None, default=0
        The date to read, or None for all dates (sequence encoders).
    start, stop : int, optional
        Encode units ``[start, stop)`` only (one part of a parallel run); default all.
    """

    def __init__(
        self,
        store: TileStore | str | os.PathLike[str],
        *,
        batch_size: int,
        mean: np.ndarray,
        std: np.ndarray,
        time_index: int | None = 0,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EncoderError(f"batch_size must be a positive int. Got {batch_size!r} instead.")
        self._store = store if isinstance(store, TileStore) else None
        self.path = str(store.path if isinstance(store, TileStore) else store)
        n_units = (self._store or open_store(self.path)).n_units
        self.start = int(start)
        self.stop = n_units if stop is None else min(int(stop), n_units)
        self.batch_size = batch_size
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.time_index = time_index
        self._ids: np.ndarray | None = None

    def __len__(self) -> int:
        return max(0, -(-(self.stop - self.start) // self.batch_size))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # workers (spawn, dask) reopen from the path
        state["_ids"] = None
        return state

    def store(self) -> TileStore:
        """This process's handle, opened on first use."""
        if self._store is None:
            self._store = open_store(self.path)
        return self._store

    def unit_ids(self) -> np.ndarray:
        """Ids of units ``[start, stop)``, read once per process.

        The store keeps ``unit_id`` in one chunk, so reading it per batch (as
        ``TileStore.read`` does) would decode every id for every batch: quadratic in N.
        """
        if self._ids is None:
            ids = self.store().group["unit_id"][self.start : self.stop]
            self._ids = np.asarray(ids).astype(object).astype(str)
        return self._ids

    def __getitem__(self, index: int) -> StoreBatch:
        if not 0 <= index < len(self):
            raise IndexError(index)
        first = self.start + index * self.batch_size
        last = min(first + self.batch_size, self.stop)
        store = self.store()
        chips, valid = np.asarray(store.chips[first:last]), np.asarray(store.valid[first:last])
        ids = self.unit_ids()[first - self.start : last - self.start]
        if self.time_index is not None:
            x = normalize_chips(chips[:, self.time_index], self.mean, self.std,
                                valid[:, self.time_index])
            mask = valid[:, self.time_index]
        else:
            b, t = chips.shape[:2]
            flat = normalize_chips(chips.reshape(b * t, *chips.shape[2:]), self.mean, self.std,
                                   valid.reshape(b * t, *valid.shape[2:]))
            x = flat.reshape(chips.shape)
            mask = valid
        return StoreBatch(first, ids, torch.from_numpy(x),
                          torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)))


def _identity(item: StoreBatch) -> StoreBatch:
    return item


def store_loader(
    dataset: StoreBatches,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader over ``dataset`` items in order (each item is already a batch).

    Parameters
    ----------
    num_workers : int, default=0
        Worker processes that read and normalise ahead of the model; 0 reads in this
        process. Each worker opens the store itself (see :class:`StoreBatches`).
    pin_memory : bool, default=False
        Page-lock batches for faster copies to a GPU.
    prefetch_factor : int, default=2
        Batches each worker keeps ready.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise EncoderError(f"num_workers must be an int >= 0. Got {num_workers!r} instead.")
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # Workers must not inherit the parent's open handle: they reopen from the path.
        if dataset._store is not None:
            dataset = _detached(dataset)
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": False}
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=_identity, pin_memory=pin_memory, **extra)


def _detached(dataset: StoreBatches) -> StoreBatches:
    copy = StoreBatches.__new__(StoreBatches)
    copy.__dict__.update(dataset.__getstate__())
    return copy
