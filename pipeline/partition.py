"""One ingestion task: fill a whole chunk of the tile store with the chips of its units.

A task gets plain facts (paths, windows on the target grid, how to reach each raster), opens
its own rasters, mosaics every date from the files that cover each chip, writes its own
region of the store, and only then writes its done marker: a task killed half-way leaves
its marker unset, so a rerun redoes exactly the unfinished chunks.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import rasterio
from eocausal.pipeline.chips import read_chip
from eocausal.pipeline.store import open_store
from eocausal.pipeline.target import SourceAccess, TargetGrid, vrt_transform
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

__all__ = ["GDAL_ENV", "PartitionTask", "ingest_partition"]

log = logging.getLogger(__name__)

GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


@dataclass(frozen=True)
class DateSource:
    """A raster of one date as a task sees it: access plan, extent, scale and offset."""

    access: SourceAccess
    width: int  # dataset pixels (file for native reads, VRT for warped ones)
    height: int
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]


@dataclass(frozen=True)
class PartitionTask:
    """Everything one worker needs to fill chunk ``index`` (rows ``start .. start+B``)."""

    store_path: str
    index: int
    start: int
    windows: np.ndarray  # (B, 2) int: col_off, row_off of each chip on the target grid
    chip_size: int
    dates: tuple[tuple[DateSource, ...], ...]  # per date, its rasters in priority order
    indexes: tuple[int, ...]
    grid: TargetGrid
    apply_scale_offset: bool

    def __len__(self) -> int:
        return len(self.windows)


def _open(source: DateSource, grid: TargetGrid, stack: contextlib.ExitStack):
    dataset = stack.enter_context(rasterio.open(source.access.path))
    if source.access.native:
        return dataset
    return stack.enter_context(WarpedVRT(
        dataset, crs=grid.crs, transform=vrt_transform(source.access, grid),
        width=source.width, height=source.height,
        resampling=Resampling[source.access.resampling],
        add_alpha=dataset.nodata is None,  # so the VRT still knows where the file ends
        # A (near-)exact transformer makes every warped pixel independent of the VRT's extent
        # and of the window read, so a chip never depends on which task cut it. rasterio
        # refuses tolerance=0 together with an explicit transform, hence 1e-9 pixels.
        tolerance=1e-9,
    ))


def _touching(task: PartitionTask, source: DateSource) -> np.ndarray:
    """Rows of the task whose chip window overlaps the source's extent."""
    cols = task.windows[:, 0] - source.access.col_offset
    rows = task.windows[:, 1] - source.access.row_offset
    size = task.chip_size
    hit = (cols < source.width) & (cols + size > 0) & (rows < source.height) & (rows + size > 0)
    return np.flatnonzero(hit)


def _scaled(pixels: np.ndarray, valid: np.ndarray, source: DateSource,
            indexes: tuple[int, ...]) -> np.ndarray:
    scales = np.array([source.scales[i - 1] if source.scales else 1.0 for i in indexes])
    offsets = np.array([source.offsets[i - 1] if source.offsets else 0.0 for i in indexes])
    values = pixels * scales[:, None, None] + offsets[:, None, None]
    return np.where(valid[None], values, 0.0).astype(np.float32)


def _read_inside(task: PartitionTask, source: DateSource, dataset, rows: np.ndarray, t: int,
                 chips: np.ndarray, valid: np.ndarray) -> bool:
    """Fast path, the bare rasterio loop: windows fully inside a maskless native file.

    Returns False (and reads nothing) unless every chip of ``rows`` qualifies and none was
    filled before, in which case the general mosaic loop takes over.
    """
    if (not source.access.native or task.apply_scale_offset or source.nodata is not None
            or any(MaskFlags.all_valid not in f for f in dataset.mask_flag_enums)
            or valid[rows, t].any()):
        return False
    cols = task.windows[rows, 0] - source.access.col_offset
    offs = task.windows[rows, 1] - source.access.row_offset
    size = task.chip_size
    if (cols.min() < 0 or offs.min() < 0 or cols.max() + size > source.width
            or offs.max() + size > source.height):
        return False
    indexes = list(task.indexes)
    for i, col, row in zip(rows, cols, offs, strict=True):
        dataset.read(indexes, window=Window(int(col), int(row), size, size), out=chips[i, t])
    valid[rows, t] = True
    return True


def ingest_partition(task: PartitionTask) -> np.ndarray:
    """Read, mosaic and write every chip of one partition; return valid fractions (B, T)."""
    store = open_store(task.store_path)
    n, n_dates, size = len(task.windows), len(task.dates), task.chip_size
    chips = np.zeros((n, n_dates, len(task.indexes), size, size), dtype=store.chips.dtype)
    valid = np.zeros((n, n_dates, size, size), dtype=bool)
    indexes = list(task.indexes)
    with rasterio.Env(**GDAL_ENV):
        for t, sources in enumerate(task.dates):
            for source in sources:
                rows = _touching(task, source)
                if rows.size == 0:
                    continue
                with contextlib.ExitStack() as stack:
                    dataset = _open(source, task.grid, stack)
                    if _read_inside(task, source, dataset, rows, t, chips, valid):
                        continue
                    buffer = np.zeros((len(indexes), size, size), dtype=dataset.dtypes[0])
                    for i in rows:
                        if valid[i, t].all():
                            continue  # an earlier file of this date already filled the chip
                        window = Window(int(task.windows[i, 0]) - source.access.col_offset,
                                        int(task.windows[i, 1]) - source.access.row_offset,
                                        size, size)
                        pixels, ok = read_chip(dataset, window, indexes=indexes, out=buffer)
                        if task.apply_scale_offset:
                            pixels = _scaled(pixels, ok, source, task.indexes)
                        fill = ok & ~valid[i, t]
                        chips[i, t][:, fill] = pixels[:, fill]
                        valid[i, t] |= fill
    store.write_units(task.start, chips, valid)
    fractions = valid.mean(axis=(2, 3))
    store.write_partition_summary(task.index, task.start, fractions, chips, valid)
    return fractions
