"""Which units get a chip, where each chip lies, and in which order the chunks take them.

Planning a million units must not hold a million of anything it can recompute. Windows
come from the chip centres a slice at a time (once to find the units inside the imagery
and the extent of the Hilbert curve, once for the curve's keys), so the plan itself is one
row index a kept unit (8 bytes, in chunk order) and the rows of the units outside every
raster. Ids, centres and windows in chunk order, and the store's fingerprint, are gathered
from the units slice by slice when they are written; the tasks recompute their own windows
from the centres in the store (:meth:`pipeline.target.TargetGrid.windows`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from eocausal.pipeline.partition import DateSource
from eocausal.pipeline.target import TargetGrid

__all__ = ["ChipPlan", "Gathered", "hilbert_distance", "plan_chips"]

SLICE_ROWS = 65_536  # per-unit work on slices: temporaries of a few MB, not N-sized copies
HILBERT_LEVELS = 16  # a 65,536 x 65,536 curve: finer than any chip spacing that matters

Rows = slice | np.ndarray
IdsOf = Callable[[Rows], np.ndarray]  # rows -> (k,) str ids
CentresOf = Callable[[Rows], np.ndarray]  # rows -> (k, 2) float64 centres on the grid's CRS


def slices(n: int, size: int = SLICE_ROWS) -> Iterator[slice]:
    """Consecutive slices of ``size`` rows covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class Gathered(Sequence):
    """``values_of(rows[i])`` as a sequence read by slices: a column in chunk order that is
    never materialised whole (``create_store`` writes it a slice at a time)."""

    def __init__(self, values_of: Callable[[Rows], np.ndarray], rows: np.ndarray) -> None:
        self._values_of = values_of
        self._rows = rows

    def __len__(self) -> int:
        return int(self._rows.size)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self._values_of(self._rows[index])
        return self._values_of(self._rows[index:index + 1])[0]


@dataclass(frozen=True)
class ChipPlan:
    """The kept units in chunk order, the units outside the imagery, and how to reach both."""

    n_units: int
    keep: np.ndarray  # (K,) rows of the units that get a chip, along the Hilbert curve
    outside: np.ndarray  # rows whose chip misses every raster, in file order
    id_width: int  # characters of the longest id (the fingerprint hashes fixed-width ids)
    grid: TargetGrid
    chip_size: int
    ids_of: IdsOf
    centres_of: CentresOf

    @property
    def n_kept(self) -> int:
        return int(self.keep.size)

    def kept_ids(self) -> Gathered:
        return Gathered(self.ids_of, self.keep)

    def kept_centres(self) -> Gathered:
        return Gathered(self.centres_of, self.keep)

    def windows(self, part: slice) -> np.ndarray:
        """Chip windows (k, 2) of the kept units ``part`` (positions in chunk order)."""
        return self.grid.windows(self.centres_of(self.keep[part]), self.chip_size)

    def fingerprint(self, **parts: object) -> str:
        """Hash of everything that decides the store's content: ``parts`` as JSON, then the
        kept windows and ids in chunk order as raw bytes.

        The ids are hashed as a fixed-width ``str`` array as wide as the longest id, slice
        by slice: the digest is that of the whole arrays, as stores made before planning
        ran in slices were fingerprinted, so they still resume.
        """
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        for part in slices(self.n_kept):
            digest.update(np.ascontiguousarray(self.windows(part), dtype="<i8").tobytes())
        dtype = np.dtype(f"<U{max(self.id_width, 1)}")
        digest.update(f"{dtype.str}:".encode())
        for part in slices(self.n_kept):
            digest.update(np.asarray(self.ids_of(self.keep[part]), dtype=dtype).tobytes())
        return digest.hexdigest()


def plan_chips(n_units: int, ids_of: IdsOf, centres_of: CentresOf, grid: TargetGrid,
               chip_size: int, dates: Sequence[Sequence[DateSource]]) -> ChipPlan:
    """Plan every unit's chip: inside the imagery or not, and its place along the curve.

    Two passes over slices of the units; each recomputes the slice's windows from its
    centres (a few microseconds a slice) rather than keeping N of them.
    """
    covered = np.zeros(n_units, dtype=bool)
    low = np.full(2, np.iinfo(np.int64).max)
    high = np.full(2, np.iinfo(np.int64).min)
    id_width = 0
    for part in slices(n_units):
        windows = grid.windows(centres_of(part), chip_size)
        hit = covers_imagery(windows, chip_size, dates)
        covered[part] = hit
        if hit.any():
            low = np.minimum(low, windows[hit].min(axis=0))
            high = np.maximum(high, windows[hit].max(axis=0))
        id_width = max(id_width, _width(ids_of(part)))
    outside = np.flatnonzero(~covered)
    n_kept = n_units - outside.size
    keys = np.full(n_units, np.iinfo(np.int64).max)  # outside units sort last
    if n_kept:
        frame = HilbertFrame.around(low, high)
        for part in slices(n_units):
            hit = covered[part]
            if hit.any():
                windows = grid.windows(centres_of(part), chip_size)[hit]
                keys[part][hit] = frame.keys(windows[:, 0], windows[:, 1])
    del covered
    keep = np.argsort(keys, kind="stable")  # ties keep file order, as before
    del keys
    keep = keep[:n_kept] if n_kept == n_units else keep[:n_kept].copy()
    return ChipPlan(n_units, keep, outside, id_width, grid, chip_size, ids_of, centres_of)


def _width(ids: np.ndarray) -> int:
    """Characters of the longest of ``ids`` (a numpy str array is as wide as its longest)."""
    ids = np.asarray(ids, dtype=str)
    return ids.dtype.itemsize // 4 if ids.size else 0


def covers_imagery(windows: np.ndarray, size: int,
                   dates: Sequence[Sequence[DateSource]]) -> np.ndarray:
    """Whether each chip window overlaps at least one raster of at least one date."""
    hit = np.zeros(len(windows), dtype=bool)
    for sources in dates:
        for source in sources:
            hit |= source.overlaps(windows, size)
    return hit


@dataclass(frozen=True)
class HilbertFrame:
    """The integer frame a set of cells is mapped into before walking the curve: cells are
    shifted to start at 0 and coarsened by powers of two until they fit ``levels`` bits."""

    x0: int
    y0: int
    shift: int
    levels: int = HILBERT_LEVELS

    @classmethod
    def around(cls, low: np.ndarray, high: np.ndarray, levels: int = HILBERT_LEVELS
               ) -> HilbertFrame:
        largest = max(int(high[0]) - int(low[0]), int(high[1]) - int(low[1]), 0)
        return cls(int(low[0]), int(low[1]), max(0, largest.bit_length() - levels), levels)

    def keys(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Curve positions of cells inside the frame, computed in slices."""
        out = np.empty(len(cols), dtype=np.int64)
        for part in slices(len(cols)):
            out[part] = _hilbert_keys((cols[part].astype(np.int64) - self.x0) >> self.shift,
                                      (rows[part].astype(np.int64) - self.y0) >> self.shift,
                                      self.levels)
        return out


def hilbert_distance(cols: np.ndarray, rows: np.ndarray, levels: int = HILBERT_LEVELS
                     ) -> np.ndarray:
    """Position of integer pixel cells along a Hilbert curve, for all cells at once.

    The classic ``xy2d`` loop, one pass per level over numpy arrays. geopandas'
    ``hilbert_distance`` needs a shapely point per unit: at a million units that cost ~10 s
    and ~300 MB, against well under a second and a few arrays here.
    """
    x = np.asarray(cols)
    y = np.asarray(rows)
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    frame = HilbertFrame.around(np.array([x.min(), y.min()]), np.array([x.max(), y.max()]),
                                levels)
    return frame.keys(x, y)


def _hilbert_keys(x: np.ndarray, y: np.ndarray, levels: int) -> np.ndarray:
    n = 1 << levels
    d = np.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        turn = ~ry
        flip = turn & rx
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        x, y = np.where(turn, y, x), np.where(turn, x, y)
        s >>= 1
    return d
